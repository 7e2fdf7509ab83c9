/* fuzz_download.c - what a download reads of the client's headers (src/api/download.c):
 * Range, If-Range, If-Match / If-None-Match, If-(Un)Modified-Since (HTTP dates), and the
 * Content-Disposition built from a client's file name.
 *
 * Input: a size (8 bytes), a time (5 bytes), then newline-separated values: Range, If-Range,
 * If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since, a file name. Invariants:
 * a range is always inside the file and non-empty; a range written canonically
 * ("bytes=a-b", "bytes=a-", "bytes=-n") gives exactly what RFC 9110 says; a parsed date
 * formats back to itself and every formatted date parses to its time; the file's own tag
 * matches itself strongly and weakly, a strong match implies a weak one; the preconditions
 * follow RFC 9110's order; a disposition is printable ASCII whose filename* decodes to the
 * name; a content type sent is the declared one or application/octet-stream. */
#include "fuzz_common.h"

#include "api/download.h"

static bool printable_ascii(const char *s)
{
    for (; *s; s++)
        if (*s < 0x20 || *s > 0x7e)
            return false;
    return true;
}

static void check_range(const char *header, int64_t size)
{
    download_range r = download_range_parse(header, size);
    if (r.kind == DOWNLOAD_RANGE_SINGLE)
        FUZZ_CHECK(r.offset >= 0 && r.length >= 1 && r.offset < size &&
                   r.length <= size - r.offset);
    if (!header)
        FUZZ_CHECK(r.kind == DOWNLOAD_RANGE_NONE);
}

/* The canonical single ranges, built from numbers, against an independent reading. */
static void check_canonical_range(uint64_t a, uint64_t b, unsigned form, int64_t size)
{
    int64_t first = (int64_t)(a % (uint64_t)(size + 3)), last = (int64_t)(b % (uint64_t)(size + 3));
    char header[80];
    download_range want = {.kind = DOWNLOAD_RANGE_UNSATISFIABLE};
    switch (form % 3) {
    case 0: /* a-b */
        snprintf(header, sizeof header, "bytes=%lld-%lld", (long long)first, (long long)last);
        if (last < first)
            want.kind = DOWNLOAD_RANGE_NONE;
        else if (first < size)
            want = (download_range){DOWNLOAD_RANGE_SINGLE, first,
                                    (last < size ? last : size - 1) - first + 1};
        break;
    case 1: /* a- */
        snprintf(header, sizeof header, "bytes=%lld-", (long long)first);
        if (first < size)
            want = (download_range){DOWNLOAD_RANGE_SINGLE, first, size - first};
        break;
    default: /* -n */
        snprintf(header, sizeof header, "bytes=-%lld", (long long)last);
        if (last > 0 && size == 0)
            want.kind = DOWNLOAD_RANGE_NONE;
        else if (last > 0)
            want = (download_range){DOWNLOAD_RANGE_SINGLE, size - (last < size ? last : size),
                                    last < size ? last : size};
        break;
    }
    download_range got = download_range_parse(header, size);
    FUZZ_CHECK(got.kind == want.kind);
    if (want.kind == DOWNLOAD_RANGE_SINGLE)
        FUZZ_CHECK(got.offset == want.offset && got.length == want.length);
}

static void check_dates(const char *text, int64_t t)
{
    int64_t when;
    char out[30];
    if (download_date_parse(text, &when) == 0 && when >= 0 && when < INT64_C(253402300800)) {
        download_date_format(when, out);
        int64_t again;
        FUZZ_CHECK(download_date_parse(out, &again) == 0 && again == when);
    }
    download_date_format(t, out);
    FUZZ_CHECK(strlen(out) == 29 && printable_ascii(out));
    FUZZ_CHECK(download_date_parse(out, &when) == 0 && when == t);
}

/* Percent-decodes s (as filename* carries it) into out; false when malformed. */
static bool pct_decode(const char *s, char *out, size_t cap)
{
    size_t n = 0;
    for (; *s && *s != ';'; s++) {
        unsigned v = (unsigned char)*s;
        if (*s == '%') {
            if (!s[1] || !s[2] || sscanf(s + 1, "%2x", &v) != 1)
                return false;
            s += 2;
        }
        if (n + 1 >= cap)
            return false;
        out[n++] = (char)v;
    }
    out[n] = '\0';
    return true;
}

static void check_disposition(const char *name)
{
    size_t len = strlen(name);
    size_t cap = DOWNLOAD_DISPOSITION_CAP(len);
    char *out = malloc(cap);
    FUZZ_CHECK(out != NULL);
    download_disposition(name, out, cap);
    FUZZ_CHECK(strlen(out) < cap && printable_ascii(out));
    FUZZ_CHECK(!strncmp(out, "attachment; filename=\"", 22));
    const char *close = strchr(out + 22, '"');
    FUZZ_CHECK(close != NULL); /* the fallback holds no quote */
    /* After the fallback: nothing, or the encoded name. */
    const char *star = close[1] ? close + 1 : NULL;
    if (star)
        FUZZ_CHECK(!strncmp(star, "; filename*=UTF-8''", 19));
    bool plain = true;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '%')
            plain = false;
    }
    FUZZ_CHECK(plain == (star == NULL));
    if (plain)
        FUZZ_CHECK((size_t)(close - (out + 22)) == len && !memcmp(out + 22, name, len));
    else {
        char *back = malloc(len + 1);
        FUZZ_CHECK(back != NULL);
        FUZZ_CHECK(pct_decode(star + 19, back, len + 1) && !strcmp(back, name));
        free(back);
    }
    free(out);
}

static void check_conditions(const download_conditions *c, const char *if_range, int64_t t)
{
    char etag[35];
    download_etag("9b2d9d5c-7f4e-4c1a-8a63-2f1d3c4b5a69", t, t / 2, etag);
    FUZZ_CHECK(download_etag_listed(etag, etag, false) && download_etag_listed(etag, etag, true));
    FUZZ_CHECK(download_etag_listed("*", etag, false));
    const char *lists[] = {c->if_match, c->if_none_match, if_range};
    for (int i = 0; i < 3; i++)
        if (download_etag_listed(lists[i], etag, false))
            FUZZ_CHECK(download_etag_listed(lists[i], etag, true));
    download_verdict v = download_evaluate(c, etag, t);
    if (c->if_match && !download_etag_listed(c->if_match, etag, false))
        FUZZ_CHECK(v == DOWNLOAD_PRECONDITION_FAILED);
    else if (c->if_none_match && download_etag_listed(c->if_none_match, etag, true) &&
             (c->if_match || !c->if_unmodified_since))
        FUZZ_CHECK(v == DOWNLOAD_NOT_MODIFIED);
    if (!c->if_match && !c->if_unmodified_since && !c->if_none_match && !c->if_modified_since)
        FUZZ_CHECK(v == DOWNLOAD_PROCEED);
    if (download_if_range(if_range, etag, t) && if_range) {
        int64_t when;
        FUZZ_CHECK(download_etag_listed(if_range, etag, false) ||
                   (download_date_parse(if_range, &when) == 0 && when == t) ||
                   (if_range[0] == ' ' || if_range[0] == '\t'));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int64_t file_size = (int64_t)(fuzz_take_u64(&data, &size, 8) % (UINT64_C(1) << 62));
    int64_t t = (int64_t)(fuzz_take_u64(&data, &size, 5) % UINT64_C(253402300800));
    char *v[7];
    for (int i = 0; i < 7; i++)
        v[i] = fuzz_take_until(&data, &size, '\n');
    /* An empty value stands for a header the request did not send. */
    const char *h[7];
    for (int i = 0; i < 7; i++)
        h[i] = v[i][0] ? v[i] : NULL;
    check_range(h[0], file_size);
    check_range(h[0], 0);
    check_range(h[0], 1000);
    uint64_t nums = 0;
    for (size_t i = 0; i < strlen(v[0]) && i < 16; i++)
        nums = nums * 31 + (unsigned char)v[0][i];
    check_canonical_range(nums, nums >> 17, (unsigned)(nums >> 40), file_size % 100000);
    check_canonical_range((uint64_t)t, nums, (unsigned)t, file_size);
    check_dates(v[4], t);
    check_dates(v[5], t);
    check_dates(v[1], t);
    download_conditions c = {.if_match = h[2],
                             .if_none_match = h[3],
                             .if_modified_since = h[4],
                             .if_unmodified_since = h[5]};
    check_conditions(&c, h[1], t);
    check_disposition(v[6]);
    const char *type = download_content_type(h[6]);
    FUZZ_CHECK(type == h[6] || !strcmp(type, "application/octet-stream"));
    FUZZ_CHECK(printable_ascii(type));
    for (int i = 0; i < 7; i++)
        free(v[i]);
    return 0;
}
