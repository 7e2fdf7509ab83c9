/* fuzz_digest.c - a part's digest headers (src/api/digest.c): Content-Digest and
 * X-Checksum-SHA256.
 *
 * The first byte says which headers are sent (bit 0: Content-Digest, bit 1:
 * X-Checksum-SHA256); the rest is their values, separated by a newline (which no header
 * value holds). Invariants: a digest is found only when a header carries one; the bytes
 * found are those the header encodes (decoded here independently, with OpenSSL); when both
 * headers are sent and accepted they agree; a header that names sha-256 but is malformed
 * is refused; every refusal is CU_EINVAL with a message fit for a JSON reply. */
#include "fuzz_common.h"

#include "api/digest.h"

#include <openssl/evp.h>
#include <strings.h>

/* The 32 bytes of 64 hex digits (either case), or false. */
static bool hex_bytes(const char *hex, unsigned char out[32])
{
    if (strlen(hex) != 64)
        return false;
    for (int i = 0; i < 64; i++) {
        char c = hex[i];
        int v = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (v < 0)
            return false;
        if (i % 2 == 0)
            out[i / 2] = (unsigned char)(v << 4);
        else
            out[i / 2] |= (unsigned char)v;
    }
    return true;
}

/* The value of the sha-256 member of a Content-Digest dictionary (members split at commas,
 * optional spaces or tabs before a key, the key "sha-256" in any case), decoded: 1 with the
 * 32 bytes, 0 when there is no such member, -1 when its value is not :<base64 of 32
 * bytes>: (44 characters of the standard alphabet, the last one '='). */
static int content_digest_bytes(const char *value, unsigned char out[32])
{
    char *copy = strdup(value), *save = NULL;
    FUZZ_CHECK(copy != NULL);
    const char *p = NULL;
    /* strtok_r drops empty members; an empty member has no key, so nothing is lost. */
    for (char *m = strtok_r(copy, ",", &save); m && !p; m = strtok_r(NULL, ",", &save)) {
        while (*m == ' ' || *m == '\t')
            m++;
        if (strncasecmp(m, "sha-256=", 8) == 0)
            p = value + (m - copy) + 8;
    }
    free(copy);
    if (!p)
        return 0;
    if (*p != ':')
        return -1;
    p++;
    const char *end = strchr(p, ':');
    if (!end || end - p != 44 || p[43] != '=' || p[42] == '=')
        return -1;
    for (const char *q = p; q < p + 43; q++)
        if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", *q))
            return -1;
    unsigned char buf[33];
    FUZZ_CHECK(EVP_DecodeBlock(buf, (const unsigned char *)p, 44) == 33);
    memcpy(out, buf, 32);
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    unsigned flags = data[0];
    data++, size--;
    char *cd_text = fuzz_take_until(&data, &size, '\n');
    char *hex_text = fuzz_strndup(data, size);
    const char *cd = flags & 1 ? cd_text : NULL;
    const char *hex = flags & 2 ? hex_text : NULL;

    unsigned char out[32], from_cd[32], from_hex[32];
    bool found = true;
    cu_error err = {0};
    int rc = digest_parse_part(cd, hex, out, &found, &err);
    int cd_state = cd ? content_digest_bytes(cd, from_cd) : 0;
    bool hex_ok = hex && hex_bytes(hex, from_hex);
    bool expect_ok = cd_state >= 0 && (!hex || hex_ok) &&
                     !(cd_state == 1 && hex_ok && memcmp(from_cd, from_hex, 32) != 0);
    FUZZ_CHECK((rc == 0) == expect_ok);
    if (rc != 0) {
        FUZZ_CHECK(rc == CU_EINVAL && err.code == CU_EINVAL);
        FUZZ_CHECK(err.msg[0] != '\0' && fuzz_utf8_ok(err.msg));
    } else {
        FUZZ_CHECK(found == (cd_state == 1 || hex != NULL));
        if (cd_state == 1)
            FUZZ_CHECK(memcmp(out, from_cd, 32) == 0);
        if (hex)
            FUZZ_CHECK(memcmp(out, from_hex, 32) == 0);
    }
    free(hex_text);
    free(cd_text);
    return 0;
}
