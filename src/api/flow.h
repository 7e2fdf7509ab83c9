/* flow.h - flow.js and resumable.js at /api/files/upload/chunked.
 *
 *   GET  /api/files/upload/chunked?flowChunkNumber=...   200: that chunk is stored; 204: not
 *   POST /api/files/upload/chunked  multipart/form-data: the chunk's fields, then the chunk
 *        in the part named `file` (or, with the libraries' `method: 'octet'`, the chunk as
 *        the body and its fields in the query string)
 *
 * Either library, unchanged, with the API key in its `headers` option; every field may also
 * carry the `resumable` prefix. The identifier names the upload (per owner), whichever chunk
 * comes first creates it, and the chunk that stores the last missing one completes the file
 * (docs/API.md). */
#ifndef CU_API_FLOW_H
#define CU_API_FLOW_H

#include "base/config.h"
#include "core/upload.h"
#include "http/server.h"

#define FLOW_ROUTES 2

typedef struct {
    const cu_config *cfg;
    upload_service *uploads;
    http_route routes[FLOW_ROUTES];
} flow_api;

/* Adds the routes to router; api must outlive the server. Returns 0 or -1. */
int flow_api_register(flow_api *api, http_router *router);

#endif
