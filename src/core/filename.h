/* filename.h - the policy for names clients choose.
 *
 * A filename may carry a relative directory ("videos/2024/movie.mp4"). It is checked
 * once, at init, so that every later use (staging, final key, S3 key, SMB path) can join
 * it under the storage root without ever leaving it. */
#ifndef CU_FILENAME_H
#define CU_FILENAME_H

#include "base/error.h"

#include <stdbool.h>
#include <stddef.h>

#define FILENAME_MAX_TOTAL 1024
#define FILENAME_MAX_COMPONENT 255
/* The stored name is "<uuid>_<name>": 37 bytes of prefix must still fit in 255. */
#define FILENAME_MAX_BASENAME (FILENAME_MAX_COMPONENT - 37)

/* Checks name (len bytes, may contain NULs, which are refused). Returns 0 or CU_EINVAL with
 * the reason in err. */
int filename_check(const char *name, size_t len, cu_error *err);

/* Checks a name (already through filename_check) against a storage backend's own rules:
 * no character of forbidden (may be NULL), and, unless trailing_dot_space, no component
 * ending in '.' or ' '. Returns 0 or CU_EINVAL naming the backend. */
int filename_check_for_storage(const char *name, const char *forbidden, bool trailing_dot_space,
                               const char *backend, cu_error *err);

/* Splits a checked name: *dir_len is the length of the directory part (0 when none, without
 * the trailing slash) and the return value points at the base name inside name. */
const char *filename_split(const char *name, size_t *dir_len);

#endif
