/* fuzz_common.h - what every libFuzzer target here shares: checks that hold in a release
 * build too (assert() would vanish under NDEBUG), and small helpers for splitting and
 * judging inputs. Everything is static inline, so each target keeps what it uses. */
#ifndef CU_FUZZ_COMMON_H
#define CU_FUZZ_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An invariant of the code under test: on breach, say which and abort, so that libFuzzer
 * keeps the input as a crash. */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* A NUL-terminated copy of len bytes (malloc'ed; aborts when out of memory, which a fuzz
 * run must not hide as a pass). */
static inline char *fuzz_strndup(const uint8_t *data, size_t len)
{
    char *s = malloc(len + 1);
    FUZZ_CHECK(s != NULL);
    if (len)
        memcpy(s, data, len);
    s[len] = '\0';
    return s;
}

/* True when s is well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF):
 * what a message must be to become a JSON string in a reply. */
static inline bool fuzz_utf8_ok(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        size_t n = c < 0x80                 ? 0
                   : c >= 0xc2 && c <= 0xdf ? 1
                   : c >= 0xe0 && c <= 0xef ? 2
                   : c >= 0xf0 && c <= 0xf4 ? 3
                                            : 99;
        if (n == 99)
            return false;
        unsigned cp = n == 0 ? c : c & (0x3f >> n);
        for (size_t i = 1; i <= n; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (p[i] & 0x3f);
        }
        if ((n == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (n == 3 && (cp < 0x10000 || cp > 0x10ffff)))
            return false;
        p += n + 1;
    }
    return true;
}

/* Takes the bytes up to the first sep (or all) off *data as a new NUL-terminated string. */
static inline char *fuzz_take_until(const uint8_t **data, size_t *size, uint8_t sep)
{
    const uint8_t *end = memchr(*data, sep, *size);
    size_t len = end ? (size_t)(end - *data) : *size;
    char *s = fuzz_strndup(*data, len);
    *data += end ? len + 1 : len;
    *size -= end ? len + 1 : len;
    return s;
}

/* Takes up to n bytes off *data as a little-endian integer (missing bytes are zero). */
static inline uint64_t fuzz_take_u64(const uint8_t **data, size_t *size, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n && i < 8; i++) {
        if (*size) {
            v |= (uint64_t) * *data << (8 * i);
            (*data)++;
            (*size)--;
        }
    }
    return v;
}

#endif
