/* cors.h - the CORS filter (CORS_ALLOWED_ORIGINS), so that pages on other origins can use
 * the API from a browser.
 *
 * Not configured: no CORS headers at all (a browser then lets no other origin read a reply).
 * Configured with a list of origins, or `*` for any:
 *   - a preflight (OPTIONS with Origin and Access-Control-Request-Method) on a known path
 *     is answered 204 with Access-Control-Allow-Methods (the path's methods),
 *     -Allow-Headers (HTTP_CORS_ALLOW_HEADERS) and -Max-Age; from an origin not allowed it is
 *     403 with the JSON error and no allow headers;
 *   - every reply (errors and refusals the server decides by itself included, since the
 *     filter's reply hook sees them all) to an allowed origin carries
 *     Access-Control-Allow-Origin (the origin echoed) and, except preflights,
 *     Access-Control-Expose-Headers (HTTP_CORS_EXPOSE_HEADERS); every reply carries
 *     Vary: Origin, so that a cache never serves one origin's answer to another.
 * Credentials (cookies, TLS client certificates) are not allowed: the API authenticates with
 * headers a page sets itself (X-API-Key, Authorization), which CORS governs through
 * Allow-Headers, so Access-Control-Allow-Credentials is never sent and no browser attaches
 * ambient credentials to a cross-origin request here. */
#ifndef CU_HTTP_CORS_H
#define CU_HTTP_CORS_H

#include "base/error.h"
#include "http/server.h"

#include <stdbool.h>

#define HTTP_CORS_ALLOW_HEADERS                                                                    \
    "Authorization, Content-Type, X-API-Key, Content-Digest, X-Checksum-SHA256, X-Request-Id, "    \
    "Tus-Resumable, Upload-Length, Upload-Offset, Upload-Metadata, Upload-Defer-Length, "          \
    "Upload-Concat, Upload-Checksum, X-HTTP-Method-Override, Range, If-None-Match, If-Range"
#define HTTP_CORS_EXPOSE_HEADERS                                                                   \
    "Location, Upload-Offset, Upload-Length, Upload-Metadata, Upload-Defer-Length, "               \
    "Upload-Expires, Upload-Concat, Tus-Version, Tus-Resumable, Tus-Extension, Tus-Max-Size, "     \
    "Tus-Checksum-Algorithm, ETag, Content-Range, Content-Disposition, Content-Length, "           \
    "Accept-Ranges, Retry-After, X-Request-Id"
/* How long a browser may keep a preflight's answer (Chromium keeps at most 2 h, Firefox 24 h). */
#define HTTP_CORS_MAX_AGE "86400"

typedef struct http_cors http_cors;

/* Parses CORS_ALLOWED_ORIGINS: `*`, or a comma-separated list of origins
 * ("https://app.example.com", "http://localhost:5173"; scheme http or https, a host, an
 * optional port, nothing after but an optional "/"), compared without case. NULL or blank
 * text: CORS off (*out NULL, which the filter takes). Returns 0 or CU_EINVAL naming the bad
 * entry (or CU_ENOMEM). */
int http_cors_parse(const char *text, http_cors **out, cu_error *err);
void http_cors_free(http_cors *c);
/* Whether a request's Origin header value is allowed (never for a malformed one). */
bool http_cors_allows(const http_cors *c, const char *origin);

/* The filter (c may be NULL: it then does nothing); c must outlive it. */
http_filter http_cors_filter(http_cors *c);

#endif
