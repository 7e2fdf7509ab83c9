/* digest.h - a part's declared SHA-256, from its request headers.
 *
 * Two headers may carry it: Content-Digest (RFC 9530, "sha-256=:<base64>:", possibly among
 * other algorithms) and X-Checksum-SHA256 (64 hex digits). A pure function of the two header
 * values, so that the handler and the fuzzer (tests/fuzz/fuzz_digest.c) run the same code. */
#ifndef CU_API_DIGEST_H
#define CU_API_DIGEST_H

#include "base/error.h"

#include <stdbool.h>

/* Reads the digest from the values of Content-Digest and X-Checksum-SHA256 (either may be
 * NULL: not sent). When both carry one they must agree. Returns 0 with *found telling whether
 * a digest was given (then it is in out), or CU_EINVAL when one is malformed or they
 * disagree. */
int digest_parse_part(const char *content_digest, const char *checksum_hex, unsigned char out[32],
                      bool *found, cu_error *err);

#endif
