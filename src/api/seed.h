/* seed.h - the seed API: /upload/init, /upload/{id}/part/{n}, /upload/{id}/status,
 * /upload/{id}/complete, DELETE /upload/{id}, /health - field for field as the original
 * chunked-uploader answers them (docs/API.md). */
#ifndef CU_API_SEED_H
#define CU_API_SEED_H

#include "base/config.h"
#include "core/upload.h"
#include "http/server.h"

typedef struct {
    const cu_config *cfg;
    upload_service *uploads;
} seed_api;

/* The handler to register with the HTTP server; ctx must outlive the server. */
http_handler seed_api_handler(seed_api *api);

#endif
