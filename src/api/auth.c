/* auth.c - the authentication filter. */
#include "api/auth.h"

#include "base/util.h"

#include <string.h>
#include <strings.h>

const char *auth_bearer(const http_request *req)
{
    const char *auth = http_header(req, "Authorization");
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0)
        return NULL;
    return auth + 7;
}

const char *auth_scope_owner(const http_request *req)
{
    const char *principal = http_principal(req);
    return principal && strcmp(principal, "key") != 0 ? principal : NULL;
}

static bool auth_request(void *ctx, http_request *req)
{
    const auth_ctx *a = ctx;
    const http_route *route = http_route_of(req);
    if (!route || !(route->auth & HTTP_AUTH_API_KEY))
        return false;
    const char *key = http_header(req, "X-API-Key");
    if (!key)
        key = auth_bearer(req);
    if (!key) {
        http_reply_error(req, 401, "Missing API key (X-API-Key header)");
        return true;
    }
    if (!util_secret_equal(key, a->cfg->api_key)) {
        http_reply_error(req, 401, "Invalid API key");
        return true;
    }
    if (http_set_principal(req, "key") != 0) {
        http_reply_error(req, 500, "Out of memory");
        return true;
    }
    return false;
}

http_filter auth_filter(auth_ctx *ctx)
{
    return (http_filter){.name = "auth", .request = auth_request, .ctx = ctx};
}
