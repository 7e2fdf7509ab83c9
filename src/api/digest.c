/* digest.c - reading a part's declared SHA-256. */
#include "api/digest.h"

#include "base/util.h"

#include <string.h>
#include <strings.h>

/* The value of a Content-Digest's sha-256 member (the text after "sha-256="), or NULL. Keys
 * are compared without regard to case; "id-sha-256" or "xsha-256" is another algorithm. */
static const char *sha256_member(const char *dict)
{
    static const char key[] = "sha-256=";
    for (const char *p = dict; p;) {
        p += strspn(p, " \t");
        if (!strncasecmp(p, key, sizeof key - 1))
            return p + sizeof key - 1;
        p = strchr(p, ',');
        if (p)
            p++;
    }
    return NULL;
}

int digest_parse_part(const char *content_digest, const char *checksum_hex, unsigned char out[32],
                      bool *found, cu_error *err)
{
    *found = false;
    if (content_digest) {
        /* A dictionary (RFC 8941): members "key=value" separated by commas; the sha-256
         * member's value is :<base64>:, possibly followed by parameters. */
        const char *p = sha256_member(content_digest);
        if (p) {
            const char *end = *p == ':' ? strchr(p + 1, ':') : NULL;
            if (!end || util_base64_decode(p + 1, (size_t)(end - p - 1), out, 32) != 32)
                return cu_fail(err, CU_EINVAL,
                               "Content-Digest: sha-256 must be :<base64 of 32 bytes>:");
            *found = true;
        }
    }
    if (checksum_hex) {
        unsigned char other[32];
        if (util_unhex_sha256(checksum_hex, other) != 0)
            return cu_fail(err, CU_EINVAL, "X-Checksum-SHA256 must be 64 hex digits");
        if (*found && memcmp(other, out, sizeof other) != 0)
            return cu_fail(err, CU_EINVAL, "Content-Digest and X-Checksum-SHA256 disagree");
        memcpy(out, other, sizeof other);
        *found = true;
    }
    return 0;
}
