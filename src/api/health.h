/* health.h - GET /health (the process answers: liveness, as the seed API has it) and
 * GET /health/ready (it can serve: its database can be read and written now), so a load
 * balancer can take a node whose database is locked or broken out of rotation. */
#ifndef CU_API_HEALTH_H
#define CU_API_HEALTH_H

#include "core/upload.h"
#include "http/server.h"

#define HEALTH_ROUTES 2

typedef struct {
    upload_service *uploads;
    http_route routes[HEALTH_ROUTES];
} health_api;

/* Adds the health routes to router; api must outlive the server. Returns 0 or -1. */
int health_api_register(health_api *api, http_router *router);

#endif
