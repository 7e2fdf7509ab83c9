/* auth.h - the authentication filter: who a request comes from.
 *
 * Runs on every request whose route asks for credentials (http_route.auth) and answers
 * 401 itself when they are missing or wrong, before the handler and before any body byte
 * is read. The API key comes in X-API-Key or as Authorization: Bearer <key> and is
 * compared in constant time. A request it lets through carries its principal
 * (http_principal): "key" for the API key.
 *
 * Other kinds of bearer credential (scoped tokens) are verifiers that modules register: a
 * bearer token that is not the API key is offered to each verifier in turn, and the first
 * that knows it decides (its principal, or its refusal); one that none knows is refused as
 * an invalid API key. Each refusal of wrong credentials with 401 (not a missing credential,
 * not a 403 for a valid one used out of its scope) is reported to the rate limiter, whose
 * failure bucket then holds back the client (http/ratelimit.h). Credentials the protocol
 * modules check in their handlers (the seed's part tokens) are not seen here. */
#ifndef CU_API_AUTH_H
#define CU_API_AUTH_H

#include "base/config.h"
#include "http/ratelimit.h"
#include "http/server.h"

/* Most verifiers one filter takes. */
#define AUTH_MAX_VERIFIERS 8

typedef enum {
    AUTH_UNKNOWN, /* not a token of this kind: the next verifier is asked */
    AUTH_ACCEPT,  /* principal filled */
    AUTH_REFUSE   /* status (401 wrong or expired, 403 not allowed here) and message filled */
} auth_verdict;

typedef struct {
    char principal[128]; /* AUTH_ACCEPT: who (stored as the request's principal and as the
                            owner of what it creates); never "key" */
    int status;          /* AUTH_REFUSE: 401 or 403 */
    char message[256];   /* AUTH_REFUSE: the error's text */
} auth_result;

/* A kind of bearer credential: verify looks at token (and the request: its route, method,
 * path) and says whose it is, or why not. Runs on the connection's thread, concurrently
 * with itself; must not reply. */
typedef struct {
    const char *name;
    auth_verdict (*verify)(void *ctx, const char *token, const http_request *req, auth_result *out);
    void *ctx;
} auth_verifier;

typedef struct {
    const cu_config *cfg;
    http_ratelimit *limits; /* where failures are reported; may be NULL */
    auth_verifier verifiers[AUTH_MAX_VERIFIERS];
    size_t nverifiers;
} auth_ctx;

/* Registers a verifier (copied) before the server starts. Returns 0, or CU_ELIMIT when
 * AUTH_MAX_VERIFIERS are registered already. */
int auth_add_verifier(auth_ctx *ctx, const auth_verifier *v);

/* The filter to register with the HTTP server; ctx must outlive it. */
http_filter auth_filter(auth_ctx *ctx);

/* Whose uploads a request may see and change: NULL for the API key (every upload), else its
 * principal (a scoped credential sees only the uploads it created, which carry it as their
 * owner). Modules pass it as the engine's owner argument. */
const char *auth_scope_owner(const http_request *req);

/* The bearer token of an Authorization header ("Bearer <token>"), or NULL. */
const char *auth_bearer(const http_request *req);

#endif
