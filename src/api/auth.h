/* auth.h - the authentication filter: who a request comes from.
 *
 * Runs on every request whose route asks for credentials (http_route.auth) and answers
 * 401 itself when they are missing or wrong, before the handler and before any body byte
 * is read. The API key comes in X-API-Key or as Authorization: Bearer <key> and is
 * compared in constant time. A request it lets through carries its principal
 * (http_principal): "key" for the API key. Credentials the protocol modules define
 * themselves (the seed's part tokens) are checked by their handlers. */
#ifndef CU_API_AUTH_H
#define CU_API_AUTH_H

#include "base/config.h"
#include "http/server.h"

typedef struct {
    const cu_config *cfg;
} auth_ctx;

/* The filter to register with the HTTP server; ctx must outlive it. */
http_filter auth_filter(auth_ctx *ctx);

/* Whose uploads a request may see and change: NULL for the API key (every upload), else its
 * principal (a scoped credential sees only the uploads it created, which carry it as their
 * owner). Modules pass it as the engine's owner argument. */
const char *auth_scope_owner(const http_request *req);

/* The bearer token of an Authorization header ("Bearer <token>"), or NULL. */
const char *auth_bearer(const http_request *req);

#endif
