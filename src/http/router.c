/* router.c - matching a method and a path to a route.
 *
 * A linear scan: a server has a few dozen routes, and comparing segments in place costs
 * less than building a tree would save. When several routes of the method match, the one
 * with the most literal segments wins ("/upload/init" over "/upload/:id"). */
#include "http/router.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct http_router {
    const http_route **routes;
    size_t n, cap;
};

http_router *http_router_new(void)
{
    return calloc(1, sizeof(http_router));
}

void http_router_free(http_router *r)
{
    if (!r)
        return;
    free(r->routes);
    free(r);
}

/* A pattern starts with '/', has no empty segment but perhaps the last (a trailing slash:
 * "/files/" is the tus collection, another path than "/files"), and "*name" only as its last
 * one. */
static bool pattern_ok(const char *p)
{
    if (!p || p[0] != '/')
        return false;
    for (const char *seg = p + 1;;) {
        const char *end = strchr(seg, '/');
        size_t len = end ? (size_t)(end - seg) : strlen(seg);
        if (len == 0 && end)
            return false;
        if ((seg[0] == ':' || seg[0] == '*') && len < 2)
            return false;
        if (seg[0] == '*' && end)
            return false;
        if (!end)
            return true;
        seg = end + 1;
    }
}

int http_router_add(http_router *r, const http_route *route)
{
    if (!pattern_ok(route->pattern) || !route->method || !route->handle)
        return -1;
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 32;
        const http_route **grown = realloc(r->routes, cap * sizeof *grown);
        if (!grown)
            return -1;
        r->routes = grown;
        r->cap = cap;
    }
    r->routes[r->n++] = route;
    return 0;
}

int http_router_add_module(http_router *r, http_route *dst, const http_route *src, size_t n,
                           void *ctx)
{
    for (size_t i = 0; i < n; i++) {
        dst[i] = src[i];
        dst[i].ctx = ctx;
        if (http_router_add(r, &dst[i]) != 0)
            return -1;
    }
    return 0;
}

/* Matches path against pattern; on success fills names/values (copied into out->buf) and
 * returns the number of literal segments, else -1. */
static int match_pattern(const char *pattern, const char *path, http_match *out)
{
    int literals = 0, nparams = 0;
    size_t used = 0;
    const char *p = pattern, *s = path;
    if (*s != '/')
        return -1;
    for (;;) {
        p++, s++; /* past the '/' */
        const char *pend = strchr(p, '/');
        size_t plen = pend ? (size_t)(pend - p) : strlen(p);
        const char *send = strchr(s, '/');
        size_t slen = send ? (size_t)(send - s) : strlen(s);
        if (*p == '*') { /* the rest of the path, whatever it is */
            slen = strlen(s);
            send = NULL;
        }
        if (*p == ':' || *p == '*') {
            if (*p == ':' && slen == 0)
                return -1;
            if (nparams == HTTP_MAX_PARAMS || used + slen + 1 > sizeof out->buf)
                return -1;
            out->names[nparams] = p + 1; /* points into the pattern: "id/..." */
            out->values[nparams] = out->buf + used;
            memcpy(out->buf + used, s, slen);
            out->buf[used + slen] = '\0';
            used += slen + 1;
            nparams++;
        } else {
            if (plen != slen || memcmp(p, s, plen) != 0)
                return -1;
            literals++;
        }
        if (!pend || !send) {
            if (pend || send)
                return -1;
            out->nparams = nparams;
            return literals;
        }
        p = pend;
        s = send;
    }
}

const char *http_match_param(const http_match *m, const char *name)
{
    size_t len = strlen(name);
    for (int i = 0; i < m->nparams; i++) {
        const char *n = m->names[i];
        if (!strncmp(n, name, len) && (n[len] == '\0' || n[len] == '/'))
            return m->values[i];
    }
    return NULL;
}

/* Adds method to a comma-separated list unless it is there already. */
static void allow_add(char *allow, size_t cap, const char *method)
{
    size_t mlen = strlen(method);
    for (const char *p = allow; (p = strstr(p, method)) != NULL; p += mlen)
        if ((p == allow || (p - allow >= 2 && p[-2] == ',')) && (p[mlen] == '\0' || p[mlen] == ','))
            return;
    size_t len = strlen(allow);
    snprintf(allow + len, cap - len, "%s%s", len ? ", " : "", method);
}

void http_router_match(const http_router *r, const char *method, const char *path, http_match *out)
{
    memset(out, 0, sizeof *out);
    bool head = !strcmp(method, "HEAD");
    int best = -1;
    http_match scratch;
    for (size_t i = 0; i < r->n; i++) {
        const http_route *route = r->routes[i];
        memset(&scratch, 0, sizeof scratch);
        int literals = match_pattern(route->pattern, path, &scratch);
        if (literals < 0)
            continue;
        allow_add(out->allow, sizeof out->allow, route->method);
        if (!strcmp(route->method, "GET"))
            allow_add(out->allow, sizeof out->allow, "HEAD");
        bool method_ok = !strcmp(route->method, method) || (head && !strcmp(route->method, "GET"));
        if (method_ok && literals > best) {
            best = literals;
            char allow[sizeof out->allow];
            memcpy(allow, out->allow, sizeof allow);
            *out = scratch;
            /* values point into scratch.buf: move them to out->buf */
            for (int k = 0; k < out->nparams; k++)
                out->values[k] = out->buf + (scratch.values[k] - scratch.buf);
            memcpy(out->allow, allow, sizeof allow);
            out->route = route;
        }
    }
    if (out->allow[0])
        allow_add(out->allow, sizeof out->allow, "OPTIONS");
    if (!strcmp(method, "OPTIONS")) {
        out->route = NULL;
        out->nparams = 0;
        out->status = out->allow[0] ? 0 : 404;
        return;
    }
    if (!out->route)
        out->status = out->allow[0] ? 405 : 404;
    assert(!out->route || out->status == 0);
}

void http_router_each(const http_router *r, void (*fn)(void *ctx, const http_route *route),
                      void *ctx)
{
    for (size_t i = 0; i < r->n; i++)
        fn(ctx, r->routes[i]);
}
