/* file_link.c - signing and checking download links. */
#include "api/file_link.h"

#include "base/util.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

/* Distinct from every other use of JWT_SECRET (HS256 part tokens sign with it directly). */
static const char link_label[] = "chunked-uploader/file-link/v1";

void file_link_key(const char *secret, unsigned char key[FILE_LINK_KEY_LEN])
{
    unsigned int len = FILE_LINK_KEY_LEN;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)link_label,
         sizeof link_label - 1, key, &len);
}

void file_link_sign(const unsigned char key[FILE_LINK_KEY_LEN], const char *id, int64_t expires,
                    char out[FILE_LINK_SIG_LEN + 1])
{
    char msg[128];
    int n = snprintf(msg, sizeof msg, "%s\n%lld", id, (long long)expires);
    if (n < 0 || n >= (int)sizeof msg)
        n = (int)sizeof msg - 1; /* ids are UUIDs: never */
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    HMAC(EVP_sha256(), key, FILE_LINK_KEY_LEN, (const unsigned char *)msg, (size_t)n, mac, &len);
    char b64[64];
    EVP_EncodeBlock((unsigned char *)b64, mac, 32); /* 44 characters, one '=' */
    for (int i = 0; i < FILE_LINK_SIG_LEN; i++)
        out[i] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : b64[i];
    out[FILE_LINK_SIG_LEN] = '\0';
}

int file_link_verify(const unsigned char key[FILE_LINK_KEY_LEN], const char *id,
                     const char *expires, const char *signature, int64_t now, cu_error *err)
{
    if (!expires || !signature)
        return cu_fail(err, CU_EFORBIDDEN,
                       "This link needs its expires and signature parameters (POST "
                       "/api/files/{id}/link makes one)");
    size_t elen = strlen(expires);
    bool digits = elen > 0 && elen <= 12;
    for (size_t i = 0; digits && i < elen; i++)
        digits = expires[i] >= '0' && expires[i] <= '9';
    int64_t when = 0;
    if (!digits || util_parse_i64(expires, &when) != 0 || strlen(signature) != FILE_LINK_SIG_LEN)
        return cu_fail(err, CU_EFORBIDDEN, "Malformed link");
    char want[FILE_LINK_SIG_LEN + 1];
    file_link_sign(key, id, when, want);
    /* Checked before the expiry, so that a forger learns nothing from which answer comes. */
    if (!util_secret_equal(signature, want))
        return cu_fail(err, CU_EFORBIDDEN, "Invalid link signature");
    if (when <= now)
        return cu_fail(err, CU_EFORBIDDEN, "This link expired");
    return 0;
}

int file_link_parse_request(const char *body, size_t len, int64_t *expires_in, cu_error *err)
{
    *expires_in = FILE_LINK_DEFAULT_SECONDS;
    size_t i = 0;
    while (i < len && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r' || body[i] == '\n'))
        i++;
    if (i == len)
        return 0; /* no body: the default */
    json_error_t jerr;
    json_t *doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        util_utf8_scrub(jerr.text);
        return cu_fail(err, CU_EINVAL, "Malformed JSON: %s", jerr.text);
    }
    int rc = 0;
    json_t *v = json_is_object(doc) ? json_object_get(doc, "expires_in") : NULL;
    if (!json_is_object(doc))
        rc = cu_fail(err, CU_EINVAL, "Request body must be a JSON object");
    else if (v && !json_is_null(v) && !json_is_integer(v))
        rc = cu_fail(err, CU_EINVAL, "expires_in must be a whole number of seconds");
    else if (json_is_integer(v) &&
             (json_integer_value(v) < 1 || json_integer_value(v) > FILE_LINK_MAX_SECONDS))
        rc = cu_fail(err, CU_EINVAL, "expires_in must be between 1 and %d seconds (7 days)",
                     FILE_LINK_MAX_SECONDS);
    else if (json_is_integer(v))
        *expires_in = json_integer_value(v);
    json_decref(doc);
    return rc;
}
