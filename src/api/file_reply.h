/* file_reply.h - what every protocol answers about a finished file.
 *
 * The seed's `complete` reply (file_id, filename, total_size, status, final_path,
 * storage_backend, completed_at) is the one description of a file that a protocol's
 * clients get back when an upload completes, whichever protocol made it. */
#ifndef CU_API_FILE_REPLY_H
#define CU_API_FILE_REPLY_H

#include "meta/meta.h"

#include <jansson.h>

/* The name a client sees: the upload's filename without its directory. */
const char *file_reply_name(const meta_upload *u);
/* The seed's complete reply for u (a new reference, NULL when out of memory). */
json_t *file_reply_complete(const meta_upload *u, const char *storage_backend);

#endif
