/* seed.h - the seed API: /upload/init, /upload/{id}/part/{n}, /upload/{id}/status,
 * /upload/{id}/complete, DELETE /upload/{id} - field for field as the original
 * chunked-uploader answers them (docs/API.md). */
#ifndef CU_API_SEED_H
#define CU_API_SEED_H

#include "base/config.h"
#include "core/upload.h"
#include "http/server.h"

#define SEED_ROUTES 5

typedef struct {
    const cu_config *cfg;
    upload_service *uploads;
    http_route routes[SEED_ROUTES];
} seed_api;

/* Adds the seed's routes to router; api must outlive the server. Returns 0 or -1. */
int seed_api_register(seed_api *api, http_router *router);

/* The reply to POST /upload/{id}/complete for a complete upload u: every protocol that
 * finishes a file in one request (a single-request upload) answers with the same fields. */
json_t *seed_complete_reply(const meta_upload *u, const char *storage_backend);

#endif
