/* seed_init.h - the body of POST /upload/init, read and type-checked.
 *
 * Kept apart from the handler (seed.c) so that the bytes a client sends are parsed by a pure
 * function that the handler and the fuzzer (tests/fuzz/fuzz_init_json.c) both call. What the
 * values mean (the filename policy, size limits, the webhook URL, the digest) is checked
 * afterwards by the engine's upload_validate, which needs the storage backend. */
#ifndef CU_API_SEED_INIT_H
#define CU_API_SEED_INIT_H

#include "base/error.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    json_t *doc;          /* owns every string below */
    const char *filename; /* may contain NULs (refused later by filename_check) */
    size_t filename_len;
    int64_t total_size;
    const char *webhook_url;     /* NULL when absent or null; never contains a NUL */
    const char *checksum_sha256; /* NULL when absent or null */
    const char *content_type;    /* the file's declared media type; NULL when absent or null;
                                    never contains a NUL */
} seed_init_body;

/* Parses an init body of len bytes (not NUL-terminated). On success fills out, which must be
 * released with seed_init_body_clear; on failure returns CU_EINVAL with the
 * message the client gets (UTF-8, whatever the body held), and out holds nothing. */
int seed_init_parse(const char *body, size_t len, seed_init_body *out, cu_error *err);
void seed_init_body_clear(seed_init_body *b);

#endif
