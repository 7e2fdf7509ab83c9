/* auth.c - the authentication filter. */
#include "api/auth.h"

#include "base/log.h"
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

int auth_add_verifier(auth_ctx *ctx, const auth_verifier *v)
{
    if (ctx->nverifiers == AUTH_MAX_VERIFIERS)
        return CU_ELIMIT;
    ctx->verifiers[ctx->nverifiers++] = *v;
    return 0;
}

/* Refuses wrong credentials: 401, reported to the rate limiter. */
static void refuse(const auth_ctx *a, http_request *req, int status, const char *msg)
{
    if (status == 401)
        http_ratelimit_auth_failed(a->limits, req);
    http_reply_error(req, status, "%s", msg);
}

/* Whether a verifier accepts a bearer token that is not the API key (res->principal says
 * whose it is); when none does, replies with the refusal and returns false. */
static bool verify_token(const auth_ctx *a, http_request *req, const char *token, auth_result *res)
{
    for (size_t i = 0; i < a->nverifiers; i++) {
        const auth_verifier *v = &a->verifiers[i];
        memset(res, 0, sizeof *res);
        auth_verdict verdict = v->verify(v->ctx, token, req, res);
        if (verdict == AUTH_UNKNOWN)
            continue;
        if (verdict == AUTH_ACCEPT) {
            /* "key" is the API key's alone, and "" is nobody: a verifier saying either is a bug,
             * not a reason to let the request through. */
            if (memchr(res->principal, '\0', sizeof res->principal) && res->principal[0] &&
                strcmp(res->principal, "key") != 0)
                return true;
            log_error("credential verifier %s accepted a token with the principal \"%.20s\"",
                      v->name, res->principal);
            http_reply_error(req, 500, "Credential verifier %s failed", v->name);
            return false;
        }
        res->message[sizeof res->message - 1] = '\0';
        refuse(a, req, res->status == 403 ? 403 : 401,
               res->message[0] ? res->message : "Invalid credentials");
        return false;
    }
    refuse(a, req, 401, "Invalid API key");
    return false;
}

static bool auth_request(void *ctx, http_request *req)
{
    const auth_ctx *a = ctx;
    const http_route *route = http_route_of(req);
    if (!route || !(route->auth & HTTP_AUTH_API_KEY))
        return false;
    const char *key = http_header(req, "X-API-Key");
    bool bearer = !key;
    if (!key)
        key = auth_bearer(req);
    if (!key) {
        http_reply_error(req, 401, "Missing API key (X-API-Key header)");
        return true;
    }
    const char *principal = "key";
    auth_result res;
    if (!util_secret_equal(key, a->cfg->api_key)) {
        if (!bearer || !verify_token(a, req, key, &res)) {
            if (!bearer)
                refuse(a, req, 401, "Invalid API key");
            return true;
        }
        principal = res.principal;
    }
    if (http_set_principal(req, principal) != 0) {
        http_reply_error(req, 500, "Out of memory");
        return true;
    }
    return false;
}

http_filter auth_filter(auth_ctx *ctx)
{
    return (http_filter){.name = "auth", .request = auth_request, .ctx = ctx};
}
