/* health.c - liveness and readiness. */
#include "api/health.h"

static void handle_health(void *ctx, http_request *req)
{
    health_api *api = ctx;
    http_reply_json(req, 200,
                    json_pack("{s:s, s:s, s:s}", "status", "ok", "version", CU_VERSION,
                              "storage_backend", upload_storage_name(api->uploads)));
}

static void handle_ready(void *ctx, http_request *req)
{
    health_api *api = ctx;
    cu_error err;
    if (upload_check_ready(api->uploads, &err) != 0) {
        http_reply_error(req, 503, "Not ready: %s", err.msg);
        return;
    }
    http_reply_json(req, 200, json_pack("{s:s, s:s}", "status", "ready", "database", "ok"));
}

static const http_route health_routes[HEALTH_ROUTES] = {
    {.method = "GET", .pattern = "/health", .name = "health", .handle = handle_health},
    {.method = "GET", .pattern = "/health/ready", .name = "health.ready", .handle = handle_ready},
};

int health_api_register(health_api *api, http_router *router)
{
    return http_router_add_module(router, api->routes, health_routes, HEALTH_ROUTES, api);
}
