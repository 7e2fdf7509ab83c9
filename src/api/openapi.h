/* openapi.h - the API's description of itself: GET /api/openapi.json (OpenAPI 3.1) and the
 * docs page at /api/docs (Swagger UI), both compiled into the server.
 *
 * The document is docs/openapi.json in the repository, served with the tus paths moved to
 * TUS_BASE_PATH and info.version set to the server's; the page and its assets are web/docs/
 * and Swagger UI's files (swagger-ui-dist from the npm registry, fetched by the build), so the
 * page renders without a request leaving the server (its Content-Security-Policy allows only
 * 'self'). Everything is sent gzip-compressed to clients that take it, with a strong ETag.
 *
 * The document must describe exactly the routes the server has. openapi_register, called
 * after every other module registered its routes, compares them and logs a warning for each
 * difference (a route not described, an operation described that no route answers, a route
 * whose credentials differ from its description's); the tests hold it to none. */
#ifndef CU_API_OPENAPI_H
#define CU_API_OPENAPI_H

#include "base/config.h"
#include "http/router.h"

#include <jansson.h>
#include <stddef.h>

typedef struct openapi_docs openapi_docs;

/* Loads the document, adds the routes /api/openapi.json, /api/docs, /api/docs/ and
 * /api/docs/:asset to router and checks the document against every route router has
 * (register every other module first). Returns NULL when out of memory, when the routes
 * cannot be added, or when the compiled-in document is not what the build put there. */
openapi_docs *openapi_register(const cu_config *cfg, http_router *router);
/* Frees what openapi_register built (after the server stopped); NULL is ignored. */
void openapi_free(openapi_docs *docs);
/* The number of differences openapi_register found (0 when the document is exact). */
int openapi_problems(const openapi_docs *docs);

/* ---- the parts, for tests ---- */

/* Makes the compiled-in document what is served: its paths "/files" and "/files/..." (tus at
 * its default base path) moved under tus_base_path ("/uploads/tus/"), info.version set to
 * version, and the top-level "x-unrouted-paths" (operations described ahead of the routes
 * that will answer them) taken out into *unrouted (a new reference, or NULL when there are
 * none). Returns 0, or -1 when doc is not an OpenAPI document with paths or out of memory. */
int openapi_prepare(json_t *doc, const char *tus_base_path, const char *version,
                    json_t **unrouted);

/* A route pattern as an OpenAPI path template: "/upload/:id/part/:n" is
 * "/upload/{id}/part/{n}", a last "*rest" is "{rest}". Returns 0, or -1 when out is too small. */
int openapi_path_template(const char *pattern, char *out, size_t cap);

/* Compares doc's paths with router's routes. Every route must be an operation of its path
 * template (a GET route also answers HEAD, and every known path answers OPTIONS, so such
 * operations need no route of their own); every operation must be answered by a route; an
 * operation of a route that takes the API key (HTTP_AUTH_API_KEY) lists the ApiKey security
 * scheme, one of a route that does not never lists it. unrouted (may be NULL) holds
 * operations described ahead of their routes: a route answering one is a difference too
 * (move it into paths). Calls problem(ctx, text) for each difference, and returns their count. */
int openapi_check(const json_t *doc, const json_t *unrouted, const http_router *router,
                  void (*problem)(void *ctx, const char *text), void *ctx);

#endif
