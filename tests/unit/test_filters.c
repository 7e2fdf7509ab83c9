/* test_filters.c - the filters main.c registers (CORS, rate limit, authentication), in that
 * order, on a real server with test routes: preflights answered by the CORS filter, CORS
 * headers on every reply (the server's own refusals too), 429s that count the server's
 * refusals, the failed-authentication limit, credential verifiers, and the client address
 * behind trusted proxies. Clients are raw sockets bound to distinct loopback addresses
 * (127.0.0.2, 127.0.0.3, ...), each a client of its own to the limits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "api/auth.h"
#include "base/log.h"
#include "http/cors.h"
#include "http/ratelimit.h"
#include "http/server.h"
#include "http/trust.h"
#include "http_client.h"
#include "unit_helpers.h"

#include <stdatomic.h>

#define API_KEY "filters-test-key"
#define ORIGIN "https://app.example.com"

static _Atomic int handler_runs;

static void h_who(void *ctx, http_request *req)
{
    (void)ctx;
    atomic_fetch_add(&handler_runs, 1);
    const char *proto = http_forwarded_trusted(req) ? http_header(req, "X-Forwarded-Proto") : NULL;
    http_reply_json(req, 200,
                    json_pack("{s:s, s:s, s:b, s:s?}", "client", http_client_addr(req), "peer",
                              http_peer(req), "trusted", http_forwarded_trusted(req), "proto",
                              proto));
}

static void h_private(void *ctx, http_request *req)
{
    (void)ctx;
    atomic_fetch_add(&handler_runs, 1);
    http_reply_json(req, 200, json_pack("{s:s?}", "principal", http_principal(req)));
}

static const http_route routes[] = {
    {.method = "GET", .pattern = "/who", .handle = h_who},
    {.method = "POST", .pattern = "/echo", .body = HTTP_BODY_JSON, .handle = h_who},
    {.method = "GET", .pattern = "/private", .auth = HTTP_AUTH_API_KEY, .handle = h_private},
    {.method = "PUT", .pattern = "/private", .auth = HTTP_AUTH_API_KEY, .handle = h_private},
};

/* Two kinds of bearer token, as a module would define them. */
static auth_verdict verify_tok(void *ctx, const char *token, const http_request *req,
                               auth_result *out)
{
    (void)ctx, (void)req;
    if (strncmp(token, "tok-", 4) != 0)
        return AUTH_UNKNOWN;
    if (!strcmp(token, "tok-good")) {
        snprintf(out->principal, sizeof out->principal, "tok:good");
        return AUTH_ACCEPT;
    }
    if (!strcmp(token, "tok-key")) { /* a buggy verifier claiming the API key's principal */
        snprintf(out->principal, sizeof out->principal, "key");
        return AUTH_ACCEPT;
    }
    if (!strcmp(token, "tok-forbidden") && !strcmp(http_method(req), "PUT")) {
        out->status = 403;
        snprintf(out->message, sizeof out->message, "This token may not PUT");
        return AUTH_REFUSE;
    }
    if (!strcmp(token, "tok-forbidden")) {
        snprintf(out->principal, sizeof out->principal, "tok:forbidden");
        return AUTH_ACCEPT;
    }
    out->status = 401;
    snprintf(out->message, sizeof out->message, "Token expired");
    return AUTH_REFUSE;
}

static auth_verdict verify_other(void *ctx, const char *token, const http_request *req,
                                 auth_result *out)
{
    (void)ctx, (void)req;
    if (strcmp(token, "other-1") != 0)
        return AUTH_UNKNOWN;
    snprintf(out->principal, sizeof out->principal, "other:1");
    return AUTH_ACCEPT;
}

typedef struct {
    const char *cors;  /* CORS_ALLOWED_ORIGINS, or NULL */
    const char *trust; /* TRUST_PROXY, or NULL */
    http_ratelimit_options limits;
} setup_options;

typedef struct {
    cu_config cfg;
    http_cors *cors;
    http_trust *trust;
    http_ratelimit *limits;
    auth_ctx auth;
    http_filter filters[3];
    http_router *router;
    http_server *srv;
    int port;
} fixture;

static fixture *start(setup_options o)
{
    fixture *f = calloc(1, sizeof *f);
    cu_error err;
    f->cfg.api_key = API_KEY;
    assert_cu_ok(http_cors_parse(o.cors, &f->cors, &err), err);
    assert_cu_ok(http_trust_parse(o.trust, &f->trust, &err), err);
    f->limits = http_ratelimit_new(&o.limits);
    assert_non_null(f->limits);
    f->auth = (auth_ctx){.cfg = &f->cfg, .limits = f->limits};
    auth_verifier tok = {.name = "tok", .verify = verify_tok};
    auth_verifier other = {.name = "other", .verify = verify_other};
    assert_int_equal(auth_add_verifier(&f->auth, &tok), 0);
    assert_int_equal(auth_add_verifier(&f->auth, &other), 0);
    f->filters[0] = http_cors_filter(f->cors);
    f->filters[1] = http_ratelimit_filter(f->limits);
    f->filters[2] = auth_filter(&f->auth);
    f->router = http_router_new();
    for (size_t i = 0; i < sizeof routes / sizeof *routes; i++)
        assert_int_equal(http_router_add(f->router, &routes[i]), 0);
    http_server_options so = {.host = "127.0.0.1",
                              .router = f->router,
                              .filters = f->filters,
                              .nfilters = 3,
                              .trust = f->trust,
                              .max_connections = 64,
                              .header_timeout = 20,
                              .keepalive_timeout = 60,
                              .body_rate_window = 30};
    f->srv = http_server_start(&so, &err);
    if (!f->srv)
        print_error("http_server_start: %s\n", err.msg);
    assert_non_null(f->srv);
    f->port = http_server_port(f->srv);
    return f;
}

static int stop(void **state)
{
    fixture *f = *state;
    http_server_stop(f->srv);
    http_router_free(f->router);
    http_ratelimit_free(f->limits);
    http_cors_free(f->cors);
    http_trust_free(f->trust);
    free(f);
    return 0;
}

/* No request limit, a generous failure limit, CORS for ORIGIN. */
static int setup_cors(void **state)
{
    *state = start((setup_options){
        .cors = ORIGIN, .limits = {.per_minute = 0, .burst = 1, .auth_failures_per_minute = 1000}});
    return 0;
}

static int setup_limited(void **state)
{
    *state = start((setup_options){
        .cors = ORIGIN, .limits = {.per_minute = 60, .burst = 5, .auth_failures_per_minute = 3}});
    return 0;
}

/* Failures limited (3 a minute), requests not. */
static int setup_auth(void **state)
{
    *state = start(
        (setup_options){.limits = {.per_minute = 0, .burst = 1, .auth_failures_per_minute = 3}});
    return 0;
}

static int setup_proxied(void **state)
{
    *state = start(
        (setup_options){.trust = "127.0.0.2, 10.0.0.0/8",
                        .limits = {.per_minute = 60, .burst = 2, .auth_failures_per_minute = 0}});
    return 0;
}

/* One request on a new connection from src; the reply in *r. */
static void exchange(const fixture *f, const char *src, const char *text, reply *r)
{
    int fd = conn_open(f->port, src);
    request(fd, text);
    if (!read_reply(fd, 5000, false, r))
        print_error("no reply to: %s\n", text);
    close(fd);
}

static json_t *body_json(const reply *r)
{
    json_t *doc = json_loads(r->body, 0, NULL);
    if (!doc)
        print_error("not JSON: %s\n", r->body);
    assert_non_null(doc);
    return doc;
}

static void assert_cors_reply(const reply *r, bool exposed)
{
    const char *acao = reply_header(r, "Access-Control-Allow-Origin");
    if (!acao)
        print_error("no Access-Control-Allow-Origin in:\n%s\n", r->headers);
    assert_non_null(acao);
    assert_string_equal(acao, ORIGIN);
    assert_string_equal(reply_header(r, "Vary"), "Origin");
    assert_null(reply_header(r, "Access-Control-Allow-Credentials"));
    const char *expose = reply_header(r, "Access-Control-Expose-Headers");
    if (!exposed) {
        assert_null(expose);
        return;
    }
    assert_non_null(expose);
    const char *want[] = {"Location",    "Upload-Offset", "Tus-Resumable", "ETag",
                          "Retry-After", "X-Request-Id",  "Content-Range", "Upload-Expires"};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        assert_non_null(strstr(expose, want[i]));
}

static void test_preflight_answered_by_filter(void **state)
{
    fixture *f = *state;
    int runs = atomic_load(&handler_runs);
    int fd = conn_open(f->port, NULL);
    reply r;
    /* A preflight of an authenticated route: the CORS filter answers before the credential
     * check (a preflight never carries credentials), and the connection stays open. */
    request(fd, "OPTIONS /private HTTP/1.1\r\nHost: t\r\nOrigin: " ORIGIN
                "\r\nAccess-Control-Request-Method: PUT\r\n"
                "Access-Control-Request-Headers: authorization,tus-resumable\r\n\r\n");
    assert_true(read_reply(fd, 5000, false, &r));
    assert_int_equal(r.status, 204);
    assert_cors_reply(&r, false);
    assert_string_equal(reply_header(&r, "Access-Control-Allow-Methods"),
                        "GET, HEAD, PUT, OPTIONS");
    const char *allow = reply_header(&r, "Access-Control-Allow-Headers");
    assert_non_null(allow);
    const char *want[] = {"Authorization",         "X-API-Key",     "Content-Digest",
                          "Tus-Resumable",         "Upload-Length", "Upload-Offset",
                          "Upload-Concat",         "Range",         "If-None-Match",
                          "X-HTTP-Method-Override"};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        assert_non_null(strstr(allow, want[i]));
    assert_string_equal(reply_header(&r, "Access-Control-Max-Age"), HTTP_CORS_MAX_AGE);
    assert_false(r.closed);
    reply_free(&r);
    /* The same connection goes on. */
    request(fd, "GET /who HTTP/1.1\r\nHost: t\r\nOrigin: " ORIGIN "\r\n\r\n");
    assert_true(read_reply(fd, 5000, false, &r));
    assert_int_equal(r.status, 200);
    assert_cors_reply(&r, true);
    reply_free(&r);
    close(fd);
    assert_int_equal(atomic_load(&handler_runs), runs + 1);

    /* From an origin not allowed: 403 with the JSON error, and nothing that allows. */
    exchange(f, NULL,
             "OPTIONS /private HTTP/1.1\r\nHost: t\r\nOrigin: https://evil.example\r\n"
             "Access-Control-Request-Method: PUT\r\n\r\n",
             &r);
    assert_json_error(&r, 403);
    assert_null(reply_header(&r, "Access-Control-Allow-Origin"));
    assert_null(reply_header(&r, "Access-Control-Allow-Methods"));
    assert_null(reply_header(&r, "Access-Control-Allow-Headers"));
    assert_string_equal(reply_header(&r, "Vary"), "Origin");
    reply_free(&r);

    /* Not a preflight (no Access-Control-Request-Method): the server's own 204 with Allow,
     * decorated. */
    exchange(f, NULL, "OPTIONS /private HTTP/1.1\r\nHost: t\r\nOrigin: " ORIGIN "\r\n\r\n", &r);
    assert_int_equal(r.status, 204);
    assert_string_equal(reply_header(&r, "Allow"), "GET, HEAD, PUT, OPTIONS");
    assert_null(reply_header(&r, "Access-Control-Allow-Methods"));
    assert_cors_reply(&r, true);
    reply_free(&r);

    /* A preflight of a path that does not exist: its 404, decorated. */
    exchange(f, NULL,
             "OPTIONS /nope HTTP/1.1\r\nHost: t\r\nOrigin: " ORIGIN
             "\r\nAccess-Control-Request-Method: GET\r\n\r\n",
             &r);
    assert_json_error(&r, 404);
    assert_cors_reply(&r, false);
    reply_free(&r);
}

static void test_cors_headers_on_every_reply(void **state)
{
    fixture *f = *state;
    reply r;
    struct {
        const char *text;
        int status;
    } cases[] = {
        {"GET /nope HTTP/1.1\r\nHost: t\r\nOrigin: " ORIGIN "\r\n\r\n", 404},
        {"DELETE /who HTTP/1.1\r\nHost: t\r\nOrigin: " ORIGIN "\r\n\r\n", 405},
        {"POST /echo HTTP/1.1\r\nHost: t\r\nOrigin: " ORIGIN "\r\nContent-Length: 100000\r\n\r\n",
         413},
        {"POST /echo HTTP/1.1\r\nHost: t\r\nOrigin: " ORIGIN
         "\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
         400},
        {"GET /private HTTP/1.1\r\nHost: t\r\nOrigin: " ORIGIN "\r\n\r\n", 401},
        {"GET /private HTTP/1.1\r\nHost: t\r\nOrigin: " ORIGIN "\r\nX-API-Key: wrong\r\n\r\n", 401},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        exchange(f, NULL, cases[i].text, &r);
        assert_json_error(&r, cases[i].status);
        assert_cors_reply(&r, true);
        reply_free(&r);
    }
    exchange(f, NULL,
             "GET /private HTTP/1.1\r\nHost: t\r\nOrigin: " ORIGIN "\r\nX-API-Key: " API_KEY
             "\r\n\r\n",
             &r);
    assert_int_equal(r.status, 200);
    assert_cors_reply(&r, true);
    reply_free(&r);
    /* Another origin, or none: no CORS headers (a browser then lets the page read nothing),
     * but Vary all the same, for caches. */
    exchange(f, NULL, "GET /who HTTP/1.1\r\nHost: t\r\nOrigin: https://evil.example\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_null(reply_header(&r, "Access-Control-Allow-Origin"));
    assert_string_equal(reply_header(&r, "Vary"), "Origin");
    reply_free(&r);
    exchange(f, NULL, "GET /who HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    assert_null(reply_header(&r, "Access-Control-Allow-Origin"));
    reply_free(&r);
}

static void test_cors_off(void **state)
{
    (void)state;
    fixture *f = start((setup_options){.limits = {.per_minute = 0, .burst = 1}});
    reply r;
    exchange(f, NULL,
             "OPTIONS /private HTTP/1.1\r\nHost: t\r\nOrigin: " ORIGIN
             "\r\nAccess-Control-Request-Method: PUT\r\n\r\n",
             &r);
    assert_int_equal(r.status, 204); /* the server's OPTIONS answer, nothing of CORS */
    assert_string_equal(reply_header(&r, "Allow"), "GET, HEAD, PUT, OPTIONS");
    assert_null(reply_header(&r, "Access-Control-Allow-Origin"));
    assert_null(reply_header(&r, "Access-Control-Allow-Methods"));
    assert_null(reply_header(&r, "Vary"));
    reply_free(&r);
    exchange(f, NULL, "GET /nope HTTP/1.1\r\nHost: t\r\nOrigin: " ORIGIN "\r\n\r\n", &r);
    assert_json_error(&r, 404);
    assert_null(reply_header(&r, "Access-Control-Allow-Origin"));
    reply_free(&r);
    void *s = f;
    stop(&s);
}

static void test_rate_limit_counts_refusals(void **state)
{
    fixture *f = *state;
    reply r;
    int fd = conn_open(f->port, "127.0.0.2");
    /* A scanner's 404s and 405s take tokens like any request... */
    for (int i = 0; i < 5; i++) {
        request(fd, i % 2 ? "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n"
                          : "DELETE /who HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_true(read_reply(fd, 5000, false, &r));
        assert_json_error(&r, i % 2 ? 404 : 405);
        reply_free(&r);
    }
    /* ...so the burst is gone: 429, with Retry-After, the JSON error and CORS headers. */
    request(fd, "GET /who HTTP/1.1\r\nHost: t\r\nOrigin: " ORIGIN "\r\n\r\n");
    assert_true(read_reply(fd, 5000, false, &r));
    assert_json_error(&r, 429);
    assert_string_equal(reply_header(&r, "Retry-After"), "1");
    assert_cors_reply(&r, true);
    assert_non_null(strstr(r.body, "127.0.0.2"));
    reply_free(&r);
    /* A refused request keeps the connection (a client may wait and retry on it). */
    request(fd, "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(read_reply(fd, 5000, false, &r));
    assert_json_error(&r, 429);
    reply_free(&r);
    close(fd);
    /* Another client is not affected. */
    exchange(f, "127.0.0.3", "GET /who HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    /* A request with a body refused by the limit still gets its answer before the body. */
    exchange(f, "127.0.0.2",
             "PUT /private HTTP/1.1\r\nHost: t\r\nX-API-Key: " API_KEY
             "\r\nContent-Length: 5\r\n\r\nhello",
             &r);
    assert_json_error(&r, 429);
    reply_free(&r);
    /* One second later, one token. */
    usleep(1100 * 1000);
    exchange(f, "127.0.0.2", "GET /who HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    exchange(f, "127.0.0.2", "GET /who HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    assert_json_error(&r, 429);
    reply_free(&r);
}

static void test_auth_failures_limited(void **state)
{
    fixture *f = *state;
    reply r;
    const char *wrong = "GET /private HTTP/1.1\r\nHost: t\r\nX-API-Key: wrong\r\n\r\n";
    const char *right = "GET /private HTTP/1.1\r\nHost: t\r\nX-API-Key: " API_KEY "\r\n\r\n";
    for (int i = 0; i < 3; i++) {
        exchange(f, "127.0.0.4", wrong, &r);
        assert_json_error(&r, 401);
        reply_free(&r);
    }
    /* Three failures: the right key from that address is refused too, until one refills
     * (20 s at 3 a minute). */
    int runs = atomic_load(&handler_runs);
    exchange(f, "127.0.0.4", right, &r);
    assert_json_error(&r, 429);
    const char *retry = reply_header(&r, "Retry-After");
    assert_non_null(retry);
    assert_in_range(atoi(retry), 19, 20);
    assert_non_null(strstr(r.body, "failed authentications"));
    reply_free(&r);
    assert_int_equal(atomic_load(&handler_runs), runs); /* nothing reached the handler */
    /* Routes that need no credentials still answer it; other addresses are not affected. */
    exchange(f, "127.0.0.4", "GET /who HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    exchange(f, "127.0.0.5", right, &r);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    /* A missing key is no guess: it does not count. */
    for (int i = 0; i < 4; i++) {
        exchange(f, "127.0.0.6", "GET /private HTTP/1.1\r\nHost: t\r\n\r\n", &r);
        assert_json_error(&r, 401);
        reply_free(&r);
    }
    exchange(f, "127.0.0.6", right, &r);
    assert_int_equal(r.status, 200);
    reply_free(&r);
}

static void test_verifiers(void **state)
{
    fixture *f = *state;
    reply r;
    struct {
        const char *auth;
        int status;
        const char *principal_or_message;
    } cases[] = {
        {"Authorization: Bearer " API_KEY, 200, "key"},
        {"Authorization: bearer tok-good", 200, "tok:good"},
        {"Authorization: Bearer other-1", 200, "other:1"}, /* the second verifier's */
        {"Authorization: Bearer tok-forbidden", 200, "tok:forbidden"},
        {"Authorization: Bearer tok-expired", 401, "Token expired"},
        {"Authorization: Bearer nobody-knows-me", 401, "Invalid API key"},
        {"Authorization: Bearer tok-key", 500, "verifier tok"},
        {"X-API-Key: tok-good", 401, "Invalid API key"}, /* X-API-Key is the API key's alone */
        {"X-API-Key: " API_KEY, 200, "key"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char text[256];
        snprintf(text, sizeof text, "GET /private HTTP/1.1\r\nHost: t\r\n%s\r\n\r\n",
                 cases[i].auth);
        char src[32]; /* each from its own address: failures here are not what is tested */
        snprintf(src, sizeof src, "127.0.1.%zu", i + 1);
        exchange(f, src, text, &r);
        if (cases[i].status == 200) {
            assert_int_equal(r.status, 200);
            json_t *doc = body_json(&r);
            assert_string_equal(json_string_value(json_object_get(doc, "principal")),
                                cases[i].principal_or_message);
            json_decref(doc);
        } else {
            assert_json_error(&r, cases[i].status);
            assert_non_null(strstr(r.body, cases[i].principal_or_message));
        }
        reply_free(&r);
    }
    /* A verifier's 403 (a valid token out of its scope) is not a failed guess. */
    for (int i = 0; i < 5; i++) {
        exchange(f, "127.0.0.8",
                 "PUT /private HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer tok-forbidden\r\n\r\n",
                 &r);
        assert_json_error(&r, 403);
        assert_non_null(strstr(r.body, "may not PUT"));
        reply_free(&r);
    }
    exchange(f, "127.0.0.8",
             "GET /private HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer tok-good\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    /* A verifier's 401 is: three of them and the address waits. */
    for (int i = 0; i < 3; i++) {
        exchange(f, "127.0.0.9",
                 "GET /private HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer tok-old\r\n\r\n", &r);
        assert_json_error(&r, 401);
        reply_free(&r);
    }
    exchange(f, "127.0.0.9",
             "GET /private HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer tok-good\r\n\r\n", &r);
    assert_json_error(&r, 429);
    reply_free(&r);
}

/* GET /who from src with extra header lines; the reply's JSON. */
static json_t *who(const fixture *f, const char *src, const char *headers, int *status)
{
    char text[1024];
    snprintf(text, sizeof text, "GET /who HTTP/1.1\r\nHost: t\r\n%s\r\n", headers);
    reply r;
    exchange(f, src, text, &r);
    *status = r.status;
    json_t *doc = body_json(&r);
    reply_free(&r);
    return doc;
}

static void test_trusted_proxies(void **state)
{
    fixture *f = *state;
    int status;
    /* From an untrusted peer a forged X-Forwarded-For (and CF-Connecting-IP, X-Forwarded-
     * Proto) is ignored. */
    json_t *doc = who(f, "127.0.0.3",
                      "X-Forwarded-For: 198.51.100.1\r\nCF-Connecting-IP: 198.51.100.2\r\n"
                      "X-Forwarded-Proto: https\r\n",
                      &status);
    assert_int_equal(status, 200);
    assert_string_equal(json_string_value(json_object_get(doc, "client")), "127.0.0.3");
    assert_false(json_is_true(json_object_get(doc, "trusted")));
    assert_true(json_is_null(json_object_get(doc, "proto")));
    json_decref(doc);
    /* From the trusted one: the rightmost untrusted hop, and its X-Forwarded-Proto. */
    doc = who(f, "127.0.0.2",
              "X-Forwarded-For: 6.6.6.6, 198.51.100.1, 10.1.2.3\r\nX-Forwarded-Proto: https\r\n",
              &status);
    assert_string_equal(json_string_value(json_object_get(doc, "client")), "198.51.100.1");
    assert_string_equal(json_string_value(json_object_get(doc, "peer")), "127.0.0.2");
    assert_true(json_is_true(json_object_get(doc, "trusted")));
    assert_string_equal(json_string_value(json_object_get(doc, "proto")), "https");
    json_decref(doc);
    /* Several X-Forwarded-For headers are one list. */
    doc = who(f, "127.0.0.2",
              "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 2001:db8::5, 10.0.0.1\r\n", &status);
    assert_string_equal(json_string_value(json_object_get(doc, "client")), "2001:db8::5");
    json_decref(doc);

    /* The limit is the forwarded client's: two per client from behind the proxy... */
    for (int i = 0; i < 2; i++) {
        doc = who(f, "127.0.0.2", "X-Forwarded-For: 198.51.100.7\r\n", &status);
        assert_int_equal(status, 200);
        json_decref(doc);
    }
    reply r;
    exchange(f, "127.0.0.2",
             "GET /who HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 198.51.100.7\r\n\r\n", &r);
    assert_json_error(&r, 429);
    assert_non_null(strstr(r.body, "198.51.100.7"));
    reply_free(&r);
    doc = who(f, "127.0.0.2", "X-Forwarded-For: 198.51.100.8\r\n", &status);
    assert_int_equal(status, 200);
    json_decref(doc);
    /* ...and an untrusted client cannot escape its own by naming others. */
    for (int i = 0; i < 2; i++) {
        char h[64];
        snprintf(h, sizeof h, "X-Forwarded-For: 198.51.100.%d\r\n", 20 + i);
        doc = who(f, "127.0.0.10", h, &status);
        assert_int_equal(status, 200);
        json_decref(doc);
    }
    exchange(f, "127.0.0.10",
             "GET /who HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 198.51.100.30\r\n\r\n", &r);
    assert_json_error(&r, 429);
    assert_non_null(strstr(r.body, "127.0.0.10"));
    reply_free(&r);
}

#define WITH(fn, setup) cmocka_unit_test_setup_teardown(fn, setup, stop)

int main(void)
{
    log_set_level(LOG_ERROR + 1);
    const char *level = getenv("TEST_LOG_LEVEL");
    if (level)
        log_set_level(log_level_parse(level));
    const struct CMUnitTest tests[] = {
        WITH(test_preflight_answered_by_filter, setup_cors),
        WITH(test_cors_headers_on_every_reply, setup_cors),
        cmocka_unit_test(test_cors_off),
        WITH(test_rate_limit_counts_refusals, setup_limited),
        WITH(test_auth_failures_limited, setup_limited),
        WITH(test_verifiers, setup_auth),
        WITH(test_trusted_proxies, setup_proxied),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
