/* files.h - the files API: finished files listed, downloaded, linked and deleted, and the
 * single-request upload.
 *
 *   GET    /api/files                 completed files, newest first, by cursor and directory
 *   GET    /api/files/{id}            the file (HEAD too): ranges, conditionals, sendfile on local
 *                                     disk, a ranged GET on S3 (or a 302 to a presigned URL with
 *                                     S3_DOWNLOAD_REDIRECT), libsmbclient reads on SMB
 *   DELETE /api/files/{id}            the record says deleted at once, the bytes leave storage
 *   POST   /api/files/{id}/link       a signed URL that downloads without the API key
 *   GET    /api/files/{id}/download   that URL (HEAD too): its signature instead of the key
 *   POST   /api/files/upload          one request, multipart/form-data or a raw body, streamed
 *
 * Everything goes through the engine (upload_file_*, upload_files_list, and create + write +
 * complete for the upload) with the request's scope as the owner, so a scoped credential sees
 * only the files it made. The byte-level rules (Range, preconditions, dates, Content-
 * Disposition) are pure functions in download.h, the links' in file_link.h, the listing's
 * query in files_query.h. */
#ifndef CU_API_FILES_H
#define CU_API_FILES_H

#include "api/file_link.h"
#include "base/config.h"
#include "core/upload.h"
#include "http/server.h"

#define FILES_ROUTES 6

/* How long a presigned S3 URL a download redirects to stays valid. */
#define FILES_PRESIGN_SECONDS 300

typedef struct {
    const cu_config *cfg;
    upload_service *uploads;
    unsigned char link_key[FILE_LINK_KEY_LEN]; /* set by files_api_register */
    http_route routes[FILES_ROUTES];
} files_api;

/* Adds the routes to router; api must outlive the server. Returns 0 or -1. */
int files_api_register(files_api *api, http_router *router);

/* POST /api/files/upload (files_upload.c). */
void files_upload_handle(void *ctx, http_request *req);

#endif
