/* files_query.h - the query of GET /api/files (limit, cursor, prefix), read and checked.
 *
 * A pure function of the client's strings, fuzzed by tests/fuzz/fuzz_file_link.c. The
 * cursor is opaque to clients: it names the last file of a page by its place in the order of
 * completions (meta_upload.completed_seq), and the next page starts after it, so files
 * completed meanwhile never shift a page: they sort before the cursor. */
#ifndef CU_API_FILES_QUERY_H
#define CU_API_FILES_QUERY_H

#include "base/error.h"
#include "core/filename.h"
#include "meta/meta.h"

#define FILES_DEFAULT_LIMIT 100
#define FILES_MAX_LIMIT 1000
#define FILES_CURSOR_LEN 24 /* with its NUL */

typedef struct {
    meta_file_query q; /* points into the buffers below: keep the struct in scope */
    char prefix[FILENAME_MAX_TOTAL + 2];
} files_query;

/* Reads the query values (NULL when absent): limit 1 to FILES_MAX_LIMIT (default
 * FILES_DEFAULT_LIMIT), a cursor from an earlier page, and a directory prefix ("a/b", slashes
 * around it ignored: the files in a/b and below). owner is copied into the query as is.
 * Returns 0 or CU_EINVAL saying which value is wrong. */
int files_query_parse(const char *limit, const char *cursor, const char *prefix, const char *owner,
                      files_query *out, cu_error *err);

/* The cursor that continues a listing after file u, into out[FILES_CURSOR_LEN]. */
void files_query_cursor(const meta_upload *u, char out[FILES_CURSOR_LEN]);

#endif
