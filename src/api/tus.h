/* tus.h - tus 1.0.0 at TUS_BASE_PATH (default /files/), on the engine's stream uploads.
 *
 * The core protocol (HEAD, PATCH) and the extensions creation, creation-with-upload,
 * creation-defer-length, termination, concatenation, checksum (sha1, md5, sha256) and
 * expiration; OPTIONS advertises those the storage backend can do. A tus upload is an
 * engine upload like any other: its id is the file_id the seed's /upload/{id}/status and the
 * files API take, it completes (webhook, record) when its last byte arrives, and a
 * concatenation is assembled by storage. Errors are the project's JSON {"error", "status"}
 * with the statuses the tus specification gives (tus clients read only the status).
 * docs/API.md, "tus", says it all for clients. */
#ifndef CU_API_TUS_H
#define CU_API_TUS_H

#include "base/config.h"
#include "core/upload.h"
#include "http/server.h"

#define TUS_ROUTES 5
#define TUS_PATH_MAX 160

typedef struct {
    const cu_config *cfg;
    upload_service *uploads;
    /* Filled by tus_api_register. */
    char collection[TUS_PATH_MAX];      /* TUS_BASE_PATH: "/files/" */
    char collection_bare[TUS_PATH_MAX]; /* without its trailing slash: "/files" */
    char item[TUS_PATH_MAX + 8];        /* "/files/:id" */
    char extensions[160];               /* Tus-Extension */
    http_route routes[TUS_ROUTES];
} tus_api;

/* Adds the tus routes to router; api (cfg and uploads set) must outlive the server. Returns 0
 * or -1. */
int tus_api_register(tus_api *api, http_router *router);

/* The filter for requests under the base path: every reply carries Tus-Resumable, OPTIONS
 * gets the discovery headers (Tus-Version, Tus-Extension, Tus-Max-Size,
 * Tus-Checksum-Algorithm) and needs no credentials, and a request whose Tus-Resumable is not
 * 1.0.0 is answered 412 with Tus-Version before anything else. Register it before the
 * authentication filter; api must be registered first. */
http_filter tus_filter(tus_api *api);

#endif
