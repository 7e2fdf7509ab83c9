/* fuzz_tus_checksum.c - tus's Upload-Checksum header and the byte counts of Upload-Offset and
 * Upload-Length (src/api/tus_header.c).
 *
 * The input, up to a NUL, is one header value, given to both parsers. Upload-Checksum is read
 * again here independently: an algorithm name up to the first space (sha1, md5 or sha256 in
 * any case), then the rest as standard base64 (OpenSSL decodes it; padding optional) of
 * exactly that algorithm's digest length. A byte count is 1 or more decimal digits whose
 * value fits in int64 (compared with strtoll). Invariants: each parser accepts exactly that
 * and yields the same algorithm and bytes (the rest of the 64-byte digest zeroed) or the same
 * number; refusals are CU_EINVAL (-1 for a count) with a message fit for a JSON reply. */
#include "fuzz_common.h"

#include "api/tus_header.h"

#include <errno.h>
#include <openssl/evp.h>
#include <strings.h>

/* Standard base64 of exactly want bytes (padded or not), or false. */
static bool ref_b64(const char *s, unsigned char *out, size_t want)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t len = strlen(s), pad = 0;
    while (pad < len && s[len - 1 - pad] == '=')
        pad++;
    size_t chars = len - pad;
    if (pad > 2 || (pad && len % 4) || chars % 4 == 1 || strspn(s, alphabet) != chars)
        return false;
    if (chars > 64)
        return false;
    char padded[72];
    size_t full = (chars + 3) / 4 * 4;
    memcpy(padded, s, chars);
    memset(padded + chars, '=', full - chars);
    unsigned char buf[72];
    int n = full ? EVP_DecodeBlock(buf, (const unsigned char *)padded, (int)full) : 0;
    FUZZ_CHECK(n >= 0);
    n -= (int)(full - chars);
    if ((size_t)n != want)
        return false;
    memcpy(out, buf, want);
    return true;
}

static void check_checksum(const char *header)
{
    static const struct {
        const char *name;
        upload_digest_alg alg;
        size_t size;
    } algs[] = {{"sha1", UPLOAD_DIGEST_SHA1, 20},
                {"md5", UPLOAD_DIGEST_MD5, 16},
                {"sha256", UPLOAD_DIGEST_SHA256, 32}};
    const char *space = strchr(header, ' ');
    size_t name_len = space ? (size_t)(space - header) : strlen(header);
    int which = -1;
    for (int i = 0; i < 3; i++)
        if (strlen(algs[i].name) == name_len && !strncasecmp(header, algs[i].name, name_len))
            which = i;
    unsigned char want[64] = {0};
    bool ok = which >= 0 && space && ref_b64(space + 1, want, algs[which].size);

    upload_digest_alg alg = UPLOAD_DIGEST_NONE;
    unsigned char got[64];
    memset(got, 0xa5, sizeof got);
    cu_error err = {0};
    int rc = tus_checksum_parse(header, &alg, got, &err);
    FUZZ_CHECK((rc == 0) == ok);
    if (rc) {
        FUZZ_CHECK(rc == CU_EINVAL && err.code == CU_EINVAL);
        FUZZ_CHECK(err.msg[0] && fuzz_utf8_ok(err.msg));
        FUZZ_CHECK(alg == UPLOAD_DIGEST_NONE);
    } else {
        FUZZ_CHECK(alg == algs[which].alg);
        FUZZ_CHECK(!memcmp(got, want, sizeof want));
    }
}

static void check_size(const char *text)
{
    bool digits = text[0] != '\0' && strspn(text, "0123456789") == strlen(text);
    errno = 0;
    long long v = digits ? strtoll(text, NULL, 10) : 0;
    bool ok = digits && errno != ERANGE;
    int64_t got = -7;
    int rc = tus_parse_size(text, &got);
    FUZZ_CHECK((rc == 0) == ok);
    if (rc == 0)
        FUZZ_CHECK(got == v && got >= 0);
    else
        FUZZ_CHECK(rc == -1 && got == -7);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *header = fuzz_strndup(data, size);
    check_checksum(header);
    check_size(header);
    FUZZ_CHECK(tus_parse_size(NULL, &(int64_t){0}) == -1);
    free(header);
    return 0;
}
