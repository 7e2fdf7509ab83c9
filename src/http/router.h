/* router.h - which handler answers a method and a path.
 *
 * Routes are (method, pattern, handler, body mode, limits). A pattern is a path whose
 * segments are literals or parameters: "/upload/:id/part/:n" matches "/upload/abc/part/7"
 * with id = "abc" and n = "7"; a last segment "*rest" takes the remainder of the path
 * (slashes included, possibly empty). A pattern ending in '/' matches only paths that end in
 * '/' ("/files/", not "/files"). HEAD is answered by a HEAD route or by the GET route of the
 * same path (the one with more literal segments, the first on a tie).
 * A path that some route matches with another method is 405 (with the methods that would
 * work, for the Allow header); a path no route matches is 404. The router only matches:
 * it owns no request and calls nothing, so it can be tested and fuzzed on its own. */
#ifndef CU_HTTP_ROUTER_H
#define CU_HTTP_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct http_request http_request;

typedef enum {
    HTTP_BODY_NONE,     /* no body expected; a small one is read and dropped */
    HTTP_BODY_JSON,     /* read whole (bounded), then the handler runs */
    HTTP_BODY_STREAM,   /* the handler runs on the headers and takes the body piece by piece */
    HTTP_BODY_MULTIPART /* as STREAM, with multipart/form-data parsed as it streams */
} http_body_mode;

/* Which credentials a route needs; the authentication filter reads it. */
enum {
    HTTP_AUTH_NONE = 0,        /* public, or the handler checks its own (part tokens) */
    HTTP_AUTH_API_KEY = 1 << 0 /* the API key (or a credential the auth filter takes for it) */
};

/* Largest body of a NONE or JSON route unless the route says otherwise. */
#define HTTP_SMALL_BODY_MAX (64 * 1024)

typedef struct {
    const char *method;  /* "GET", "PUT", ... */
    const char *pattern; /* "/upload/:id/part/:n" */
    http_body_mode body;
    int64_t body_max; /* largest Content-Length taken (413 before any body byte); 0: for NONE
                         and JSON HTTP_SMALL_BODY_MAX, for streams no limit here */
    unsigned auth;    /* HTTP_AUTH_* */
    const char *name; /* stable name for logs and metrics, e.g. "seed.part" */
    void (*handle)(void *ctx, http_request *req);
    void *ctx;
} http_route;

#define HTTP_MAX_PARAMS 8

typedef struct {
    const http_route *route; /* the route that answers, or NULL */
    int status;              /* 0 when route is set; else 404, or 405 (then allow is set) */
    char allow[96];          /* the methods the path takes, "GET, HEAD, OPTIONS", when known */
    int nparams;
    const char *names[HTTP_MAX_PARAMS];
    char *values[HTTP_MAX_PARAMS]; /* point into buf */
    char buf[1024];
} http_match;

typedef struct http_router http_router;

http_router *http_router_new(void);
void http_router_free(http_router *r);
/* Adds a route (the router keeps the pointer: the route must outlive it). Returns 0, or -1
 * when the pattern is malformed or out of memory. */
int http_router_add(http_router *r, const http_route *route);
/* Adds a module's n routes: copies src into dst (storage the module owns, which must outlive
 * the router), each with ctx as its handler's context, and adds them. Returns 0 or -1. */
int http_router_add_module(http_router *r, http_route *dst, const http_route *src, size_t n,
                           void *ctx);
/* Matches method and path. OPTIONS matches no route: status 0 with allow filled for a known
 * path (the server answers it), 404 otherwise. */
void http_router_match(const http_router *r, const char *method, const char *path, http_match *out);
/* The value of parameter name in a match, or NULL. */
const char *http_match_param(const http_match *m, const char *name);
/* Calls fn for every route, in the order added (e.g. to describe them). */
void http_router_each(const http_router *r, void (*fn)(void *ctx, const http_route *route),
                      void *ctx);

#endif
