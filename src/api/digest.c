/* digest.c - reading a part's declared SHA-256. */
#include "api/digest.h"

#include "base/util.h"

#include <string.h>

int digest_parse_part(const char *content_digest, const char *checksum_hex, unsigned char out[32],
                      bool *found, cu_error *err)
{
    *found = false;
    if (content_digest) {
        /* sha-256=:<base64>: possibly among other algorithms, comma-separated. */
        const char *p = strcasestr(content_digest, "sha-256=:");
        if (p) {
            p += strlen("sha-256=:");
            const char *end = strchr(p, ':');
            if (!end || util_base64_decode(p, (size_t)(end - p), out, 32) != 32)
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
