/* token.h - per-part upload tokens.
 *
 * A part token is an HS256 JWT with the claims upload_id, part_number, expected_size and
 * exp, signed with JWT_SECRET. The server also keeps each issued token's SHA-256, so that
 * only tokens it issued are accepted even if the secret once leaked. */
#ifndef CU_API_TOKEN_H
#define CU_API_TOKEN_H

#include "base/error.h"

#include <stdint.h>

typedef struct {
    char upload_id[40];
    int64_t part_number;
    int64_t expected_size;
    int64_t exp;
} token_claims;

/* Returns a new token (free() it) for the claims, or NULL when out of memory. */
char *token_issue(const char *secret, const token_claims *claims);

/* Verifies the signature (HS256 only) and reads the claims into out. Returns 0 or CU_EAUTH
 * with the reason in err. What the claims allow is checked by token_check_claims. */
int token_verify(const char *secret, const char *token, token_claims *out, cu_error *err);

/* Checks that verified claims authorize exactly this upload, part and size at time now. */
int token_check_claims(const token_claims *claims, const char *upload_id, int64_t part_number,
                       int64_t expected_size, int64_t now, cu_error *err);

#endif
