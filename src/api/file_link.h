/* file_link.h - signed download links: a URL that fetches one file until a time, without
 * the API key, so that a browser or curl never holds the key.
 *
 * A link is /api/files/<id>/download?expires=<seconds since the epoch>&signature=<sig>, sig
 * the base64url HMAC-SHA256 of "<id>\n<expires>" under a key derived from JWT_SECRET with a
 * label of its own (so no other signature made with that secret, such as a part token, is
 * ever a valid link, and links cannot be turned into anything else). Nothing is stored: a
 * link is valid wherever the secret is, and stops at its expiry (or when the file is
 * deleted). Pure functions, fuzzed by tests/fuzz/fuzz_file_link.c. */
#ifndef CU_API_FILE_LINK_H
#define CU_API_FILE_LINK_H

#include "base/error.h"

#include <stddef.h>
#include <stdint.h>

#define FILE_LINK_KEY_LEN 32
#define FILE_LINK_SIG_LEN 43 /* base64url of 32 bytes, unpadded */

#define FILE_LINK_DEFAULT_SECONDS 3600
#define FILE_LINK_MAX_SECONDS (7 * 86400)

/* The link key for secret (JWT_SECRET). */
void file_link_key(const char *secret, unsigned char key[FILE_LINK_KEY_LEN]);

/* The signature of a link to file id valid until expires, into out[FILE_LINK_SIG_LEN + 1]. */
void file_link_sign(const unsigned char key[FILE_LINK_KEY_LEN], const char *id, int64_t expires,
                    char out[FILE_LINK_SIG_LEN + 1]);

/* Checks a link's query values (as received, NULL when absent) for file id at time now:
 * 0, or CU_EFORBIDDEN when they are missing, malformed, tampered with or expired (the message
 * says which, without helping a forger). The signature is compared in constant time. */
int file_link_verify(const unsigned char key[FILE_LINK_KEY_LEN], const char *id,
                     const char *expires, const char *signature, int64_t now, cu_error *err);

/* Reads the body of POST /api/files/{id}/link ({"expires_in": seconds}, or empty for the
 * default) into *expires_in: 1 to FILE_LINK_MAX_SECONDS. CU_EINVAL otherwise. */
int file_link_parse_request(const char *body, size_t len, int64_t *expires_in, cu_error *err);

#endif
