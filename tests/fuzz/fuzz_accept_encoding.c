/* fuzz_accept_encoding.c - download_accepts_gzip (src/api/download.c), which reads a
 * client's Accept-Encoding to decide whether a compressed body may be sent.
 *
 * Input: the header's value. Invariants: gzip is taken only when the value names gzip or
 * "*"; an element "gzip;q=0" anywhere refuses it; elements are read one by one (the value
 * followed by ", gzip" takes gzip exactly when none of its elements refuses it); case does
 * not matter. */
#include "fuzz_common.h"

#include "api/download.h"

#include <ctype.h>
#include <strings.h>

static char *joined(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);
    char *s = malloc(alen + blen + 1);
    FUZZ_CHECK(s != NULL);
    memcpy(s, a, alen);
    memcpy(s + alen, b, blen + 1);
    return s;
}

static bool names_gzip_or_star(const char *s)
{
    if (strchr(s, '*'))
        return true;
    for (; *s; s++)
        if (!strncasecmp(s, "gzip", 4))
            return true;
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *value = fuzz_strndup(data, size > 4096 ? 4096 : size);
    size_t len = strlen(value); /* up to the first NUL, as a header would be */
    bool takes = download_accepts_gzip(value);
    if (takes)
        FUZZ_CHECK(names_gzip_or_star(value));

    char *refused = joined(value, len, ", gzip;q=0");
    FUZZ_CHECK(!download_accepts_gzip(refused));
    free(refused);

    /* With gzip added: taken unless one of the elements alone refuses it. */
    bool any_refuses = false;
    const char *p = value;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        char *one = joined(p, n, ",gzip");
        any_refuses |= !download_accepts_gzip(one);
        free(one);
        if (!end)
            break;
        p = end + 1;
    }
    char *added = joined(value, len, ",gzip");
    FUZZ_CHECK(download_accepts_gzip(added) == !any_refuses);
    free(added);

    for (size_t i = 0; i < len; i++)
        value[i] = (char)toupper((unsigned char)value[i]);
    FUZZ_CHECK(download_accepts_gzip(value) == takes);
    free(value);
    return 0;
}
