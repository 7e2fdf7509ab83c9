/* openapi_assets.h - the files compiled into the server for the API description and its
 * docs page: docs/openapi.json, web/docs/ (the page and its script) and Swagger UI's script
 * and style sheet (swagger-ui-dist from the npm registry, pinned in web/package.json and
 * installed by the build). cmake/embed.cmake generates the table, each file gzip-compressed. */
#ifndef CU_API_OPENAPI_ASSETS_H
#define CU_API_OPENAPI_ASSETS_H

#include <stddef.h>

typedef struct {
    const char *name;        /* "swagger-ui-bundle.js", "openapi.json", "index.html" */
    const unsigned char *gz; /* the file, compressed (a gzip member) */
    size_t gz_len;
    size_t len; /* the file's own size */
} openapi_asset;

extern const openapi_asset openapi_assets[];
extern const size_t openapi_asset_count;

#endif
