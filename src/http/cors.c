/* cors.c - the CORS filter. */
#include "http/cors.h"

#include "base/util.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct http_cors {
    bool any;
    char **origins; /* lowercase, without a trailing "/" */
    size_t n;
};

void http_cors_free(http_cors *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++)
        free(c->origins[i]);
    free(c->origins);
    free(c);
}

/* Whether text[0..len) is an origin as a browser serializes one: "http" or "https", "://",
 * a host of letters, digits, '-', '.', or an IPv6 literal in brackets, and ":port". */
static bool origin_syntax_ok(const char *text, size_t len)
{
    size_t scheme = !strncasecmp(text, "https://", 8)  ? 8
                    : !strncasecmp(text, "http://", 7) ? 7
                                                       : 0;
    if (!scheme || len <= scheme)
        return false;
    const char *p = text + scheme, *end = text + len;
    if (*p == '[') {
        const char *host = ++p;
        while (p < end && (isxdigit((unsigned char)*p) || *p == ':' || *p == '.'))
            p++;
        if (p == host || p == end || *p != ']')
            return false;
        p++;
    } else {
        const char *host = p;
        while (p < end && (isalnum((unsigned char)*p) || *p == '-' || *p == '.'))
            p++;
        if (p == host)
            return false;
    }
    if (p < end && *p == ':') {
        const char *port = ++p;
        while (p < end && isdigit((unsigned char)*p))
            p++;
        if (p == port || p - port > 5)
            return false;
    }
    return p == end;
}

int http_cors_parse(const char *text, http_cors **out, cu_error *err)
{
    *out = NULL;
    http_cors *c = calloc(1, sizeof *c);
    char *copy = strdup(text ? text : "");
    int rc = c && copy ? 0 : cu_fail_oom(err);
    char *cursor = rc ? NULL : copy;
    for (char *tok; (tok = util_list_next(&cursor)) != NULL;) {
        size_t len = strlen(tok);
        if (!strcmp(tok, "*")) {
            c->any = true;
            continue;
        }
        if (tok[len - 1] == '/')
            tok[--len] = '\0';
        if (!origin_syntax_ok(tok, len)) {
            rc = cu_fail(err, CU_EINVAL,
                         "\"%s\" is not an origin (scheme://host[:port], e.g. "
                         "https://app.example.com) nor *",
                         tok);
            break;
        }
        char **grown = realloc(c->origins, (c->n + 1) * sizeof *grown);
        if (!grown) {
            rc = cu_fail_oom(err);
            break;
        }
        c->origins = grown;
        for (char *p = tok; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        if (!(c->origins[c->n] = strdup(tok))) {
            rc = cu_fail_oom(err);
            break;
        }
        c->n++;
    }
    free(copy);
    if (rc != 0 || (!c->any && c->n == 0)) {
        http_cors_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

bool http_cors_allows(const http_cors *c, const char *origin)
{
    if (!c || !origin || !origin_syntax_ok(origin, strlen(origin)))
        return false;
    if (c->any)
        return true;
    for (size_t i = 0; i < c->n; i++)
        if (!strcasecmp(c->origins[i], origin))
            return true;
    return false;
}

static bool is_preflight(const http_request *req)
{
    return !strcmp(http_method(req), "OPTIONS") && http_header(req, "Origin") &&
           http_header(req, "Access-Control-Request-Method");
}

static bool cors_request(void *ctx, http_request *req)
{
    const http_cors *c = ctx;
    /* A preflight on a known path: the route is NULL (OPTIONS is no route's method) and the
     * path has methods; one the server refuses by itself (framing, 404) gets that refusal. */
    if (!c || !is_preflight(req) || http_refusal(req) || !*http_allowed_methods(req))
        return false;
    const char *origin = http_header(req, "Origin");
    if (!http_cors_allows(c, origin)) {
        http_reply_error(req, 403, "Origin %s is not allowed (CORS_ALLOWED_ORIGINS)", origin);
        return true;
    }
    if (http_add_header(req, "Access-Control-Allow-Methods", http_allowed_methods(req)) == 0 &&
        http_add_header(req, "Access-Control-Allow-Headers", HTTP_CORS_ALLOW_HEADERS) == 0)
        http_add_header(req, "Access-Control-Max-Age", HTTP_CORS_MAX_AGE);
    http_reply_empty(req, 204); /* a header that failed turns it into a 500 */
    return true;
}

static void cors_reply(void *ctx, http_request *req, int status)
{
    (void)status;
    const http_cors *c = ctx;
    if (!c)
        return;
    http_add_header(req, "Vary", "Origin");
    const char *origin = http_header(req, "Origin");
    if (!http_cors_allows(c, origin))
        return;
    http_add_header(req, "Access-Control-Allow-Origin", origin);
    if (!is_preflight(req))
        http_add_header(req, "Access-Control-Expose-Headers", HTTP_CORS_EXPOSE_HEADERS);
}

http_filter http_cors_filter(http_cors *c)
{
    return (http_filter){.name = "cors", .request = cors_request, .reply = cors_reply, .ctx = c};
}
