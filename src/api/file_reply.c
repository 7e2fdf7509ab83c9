/* file_reply.c - what every protocol answers about a finished file. */
#include "api/file_reply.h"

#include "base/util.h"
#include "core/filename.h"

const char *file_reply_name(const meta_upload *u)
{
    size_t dir_len;
    return filename_split(u->filename, &dir_len);
}

json_t *file_reply_complete(const meta_upload *u, const char *storage_backend)
{
    char completed[21];
    util_rfc3339(u->completed_at, completed);
    return json_pack("{s:s, s:s, s:I, s:s, s:s, s:s, s:s}", "file_id", u->id, "filename",
                     file_reply_name(u), "total_size", (json_int_t)u->total_size, "status",
                     upload_state_name(u->state), "final_path", u->final_path ? u->final_path : "",
                     "storage_backend", storage_backend, "completed_at", completed);
}
