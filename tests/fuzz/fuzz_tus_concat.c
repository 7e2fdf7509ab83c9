/* fuzz_tus_concat.c - tus's Upload-Concat header (src/api/tus_header.c).
 *
 * The first byte picks the base path (TUS_BASE_PATH: "/files/", "/api/tus/v1/" or "/u/"); the
 * rest, up to a NUL, is the header's value. It is read again here independently: "partial";
 * or "final;" and space-separated URLs, each "http://" or "https://" (any case) and a host
 * before the path, or a path; the path without '?' or '#', ending in the base path and a
 * UUID (8-4-4-4-12 hex digits, checked digit by digit here). Invariants: the parser accepts
 * exactly that, with 1 to TUS_CONCAT_MAX URLs naming different uploads; the ids are the
 * URLs' UUIDs in order, lowercased; every refusal is CU_EINVAL with a message fit for a JSON
 * reply, and leaves nothing to free. */
#include "fuzz_common.h"

#include "api/tus_header.h"

#include <ctype.h>
#include <strings.h>

static const char *const bases[] = {"/files/", "/api/tus/v1/", "/u/"};

static char ref_ids[TUS_CONCAT_MAX + 1][CU_UUID_LEN + 1];

static bool ref_uuid(const char *s, char out[CU_UUID_LEN + 1])
{
    for (int i = 0; i < CU_UUID_LEN; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
            return false;
        out[i] = (char)tolower((unsigned char)s[i]);
    }
    out[CU_UUID_LEN] = '\0';
    return true;
}

/* The id of one URL, or false. */
static bool ref_url(const char *url, size_t len, const char *base, char id[CU_UUID_LEN + 1])
{
    char *copy = fuzz_strndup((const uint8_t *)url, len);
    const char *path = copy;
    bool ok = true;
    for (size_t s = 7; s <= 8; s++) {
        const char *scheme = s == 7 ? "http://" : "https://";
        if (len >= s && !strncasecmp(copy, scheme, s)) {
            const char *slash = strchr(copy + s, '/');
            ok = slash && slash > copy + s;
            path = slash;
        }
    }
    size_t blen = strlen(base);
    if (ok) {
        size_t plen = strlen(path);
        ok = path[0] == '/' && !strpbrk(path, "?#") && plen >= blen + CU_UUID_LEN &&
             !strncmp(path + plen - CU_UUID_LEN - blen, base, blen) &&
             ref_uuid(path + plen - CU_UUID_LEN, id);
    }
    free(copy);
    return ok;
}

/* The partial uploads of a final header (or 0 for "partial", -2 for none), -1 to refuse. */
static int ref_parse(const char *h, const char *base)
{
    if (!strcmp(h, "partial"))
        return 0;
    if (strncmp(h, "final;", 6) != 0)
        return -1;
    int n = 0;
    for (const char *p = h + 6; *p;) {
        const char *space = strchr(p, ' ');
        size_t len = space ? (size_t)(space - p) : strlen(p);
        if (len) {
            if (n == TUS_CONCAT_MAX || !ref_url(p, len, base, ref_ids[n]))
                return -1;
            for (int i = 0; i < n; i++)
                if (!strcmp(ref_ids[i], ref_ids[n]))
                    return -1;
            n++;
        }
        p += len + (space != NULL);
    }
    return n ? n : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const char *base = bases[data[0] % 3];
    char *header = fuzz_strndup(data + 1, size - 1);
    tus_concat c = {TUS_CONCAT_FINAL, 7, (void *)1};
    cu_error err = {0};
    int rc = tus_concat_parse(header, base, &c, &err);
    int want = ref_parse(header, base);
    FUZZ_CHECK((rc == 0) == (want >= 0));
    if (rc) {
        FUZZ_CHECK(rc == CU_EINVAL && err.code == CU_EINVAL);
        FUZZ_CHECK(err.msg[0] && fuzz_utf8_ok(err.msg));
        FUZZ_CHECK(c.kind == TUS_CONCAT_NONE && c.n == 0 && c.ids == NULL);
    } else if (want == 0) {
        FUZZ_CHECK(c.kind == TUS_CONCAT_PARTIAL && c.n == 0);
    } else {
        FUZZ_CHECK(c.kind == TUS_CONCAT_FINAL && c.n == want);
        for (int i = 0; i < c.n; i++)
            FUZZ_CHECK(!strcmp(c.ids[i], ref_ids[i]));
    }
    tus_concat_clear(&c);
    FUZZ_CHECK(tus_concat_parse(NULL, base, &c, &err) == 0 && c.kind == TUS_CONCAT_NONE);
    free(header);
    return 0;
}
