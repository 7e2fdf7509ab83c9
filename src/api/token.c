/* token.c - part tokens on top of libjwt. */
#include "api/token.h"

#include <errno.h>
#include <stdbool.h>
#include <jwt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *token_issue(const char *secret, const token_claims *claims)
{
    jwt_t *jwt = NULL;
    char *out = NULL;
    if (jwt_new(&jwt) != 0)
        return NULL;
    if (jwt_add_grant(jwt, "upload_id", claims->upload_id) == 0 &&
        jwt_add_grant_int(jwt, "part_number", (long)claims->part_number) == 0 &&
        jwt_add_grant_int(jwt, "expected_size", (long)claims->expected_size) == 0 &&
        jwt_add_grant_int(jwt, "exp", (long)claims->exp) == 0 &&
        jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)secret, (int)strlen(secret)) == 0)
        out = jwt_encode_str(jwt);
    jwt_free(jwt);
    return out;
}

/* Reads an integer claim. libjwt reads a claim of another type ("1", 1.5) as 0, so the
 * claim's JSON text is checked to be a plain integer first. */
static int int_claim(jwt_t *jwt, const char *name, int64_t *out)
{
    char *text = jwt_get_grants_json(jwt, name);
    bool integer = text && *text;
    for (const char *p = text; integer && *p; p++)
        integer = (*p >= '0' && *p <= '9') || (p == text && *p == '-');
    free(text);
    if (!integer)
        return -1;
    errno = 0;
    long v = jwt_get_grant_int(jwt, name);
    if (errno != 0)
        return -1;
    *out = v;
    return 0;
}

int token_verify(const char *secret, const char *token, token_claims *out, cu_error *err)
{
    /* A JWT is three base64url fields; refuse anything else before parsing it. */
    size_t len = strlen(token), dots = 0;
    if (len == 0 || len > 4096)
        return cu_fail(err, CU_EAUTH, "Invalid part token");
    for (size_t i = 0; i < len; i++) {
        char c = token[i];
        if (c == '.')
            dots++;
        else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                   c == '-' || c == '_'))
            return cu_fail(err, CU_EAUTH, "Invalid part token");
    }
    if (dots != 2)
        return cu_fail(err, CU_EAUTH, "Invalid part token");

    jwt_t *jwt = NULL;
    if (jwt_decode(&jwt, token, (const unsigned char *)secret, (int)strlen(secret)) != 0 || !jwt)
        return cu_fail(err, CU_EAUTH, "Invalid part token");
    int rc = 0;
    if (jwt_get_alg(jwt) != JWT_ALG_HS256) {
        rc = cu_fail(err, CU_EAUTH, "Invalid part token: only HS256 is accepted");
        goto out;
    }
    const char *upload_id = jwt_get_grant(jwt, "upload_id");
    if (!upload_id || strlen(upload_id) >= sizeof out->upload_id ||
        int_claim(jwt, "part_number", &out->part_number) ||
        int_claim(jwt, "expected_size", &out->expected_size) || int_claim(jwt, "exp", &out->exp)) {
        rc = cu_fail(err, CU_EAUTH, "Invalid part token: missing claims");
        goto out;
    }
    snprintf(out->upload_id, sizeof out->upload_id, "%s", upload_id);
out:
    jwt_free(jwt);
    return rc;
}

int token_check_claims(const token_claims *claims, const char *upload_id, int64_t part_number,
                       int64_t expected_size, int64_t now, cu_error *err)
{
    if (strcmp(claims->upload_id, upload_id) != 0)
        return cu_fail(err, CU_EAUTH, "Part token is for another upload");
    if (claims->part_number != part_number)
        return cu_fail(err, CU_EAUTH, "Part token is for part %lld, not part %lld",
                       (long long)claims->part_number, (long long)part_number);
    if (claims->expected_size != expected_size)
        return cu_fail(err, CU_EAUTH, "Part token is for a part of %lld bytes, not %lld",
                       (long long)claims->expected_size, (long long)expected_size);
    if (claims->exp <= now)
        return cu_fail(err, CU_EAUTH, "Part token expired");
    return 0;
}
