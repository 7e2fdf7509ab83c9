/* test_http.c - the HTTP layer over real sockets: routes, filters, replies of every kind,
 * body modes, keep-alive, refusals that must reach the client, and the limits a client
 * controls (connections per address and in all, header time, idle time, body rate).
 *
 * Each test starts a server on a free loopback port with test routes; clients are libcurl
 * or raw sockets where the test needs control over every byte and every pause. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/log.h"
#include "base/util.h"
#include "http/server.h"
#include "http_client.h"
#include "unit_helpers.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- the test server ---- */

static _Atomic int last_done_status;
static _Atomic int64_t last_done_bytes_in;
static _Atomic int handler_runs;
static char temp_file[4096];

static void fill(unsigned char *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (unsigned char)((i * 7 + seed + (i >> 11)) % 251);
}

static void h_json(void *ctx, http_request *req)
{
    (void)ctx;
    atomic_fetch_add(&handler_runs, 1);
    const char *q = http_query(req, "x");
    http_add_header(req, "X-Test", "1");
    http_reply_json(req, 200,
                    json_pack("{s:s, s:s?, s:s, s:s?}", "hello", "world", "q", q, "peer",
                              http_peer(req), "principal", http_principal(req)));
}

static void h_many_headers(void *ctx, http_request *req)
{
    (void)ctx;
    for (int i = 0; i < 40; i++) {
        char name[32], value[32];
        snprintf(name, sizeof name, "X-H-%d", i);
        snprintf(value, sizeof value, "v%d", i);
        assert_int_equal(http_add_header(req, name, value), 0);
    }
    http_reply_text(req, 200, "text/plain", "ok", 2);
}

static void h_text(void *ctx, http_request *req)
{
    (void)ctx;
    http_reply_text(req, 200, "text/plain; charset=utf-8", "hi there", 8);
}

static void h_empty(void *ctx, http_request *req)
{
    (void)ctx;
    http_add_header(req, "X-Empty", "yes");
    http_reply_empty(req, 204);
}

typedef struct {
    int64_t len;
} gen_state;

static ssize_t gen_read(void *state, uint64_t pos, char *buf, size_t cap)
{
    gen_state *g = state;
    if ((int64_t)pos >= g->len)
        return 0;
    size_t n = (int64_t)cap < g->len - (int64_t)pos ? cap : (size_t)(g->len - (int64_t)pos);
    for (size_t i = 0; i < n; i++) {
        uint64_t at = pos + i;
        buf[i] = (char)((at * 7 + 3 + (at >> 11)) % 251);
    }
    return (ssize_t)n;
}

static void h_stream(void *ctx, http_request *req)
{
    (void)ctx;
    const char *len = http_query(req, "len");
    const char *known = http_query(req, "known");
    gen_state *g = malloc(sizeof *g);
    g->len = len ? atoll(len) : 0;
    http_reply_stream(req, 200, "application/octet-stream",
                      known && !strcmp(known, "1") ? g->len : -1, gen_read, g, free);
}

static void h_file(void *ctx, http_request *req)
{
    (void)ctx;
    int fd = open(temp_file, O_RDONLY);
    assert_true(fd >= 0);
    http_reply_fd(req, 206, "application/octet-stream", fd, 10, 1000);
}

static void h_echo_json(void *ctx, http_request *req)
{
    (void)ctx;
    size_t len;
    const char *body = http_body(req, &len);
    http_reply_json(req, 200, json_pack("{s:I, s:s}", "len", (json_int_t)len, "body", body));
}

/* PUT /sink: counts and hashes the body; X-Refuse refuses at the headers, X-Fail-At: n fails
 * once n bytes have arrived, X-Slow-Ms sleeps in every piece. */
typedef struct {
    int64_t bytes, fail_at;
    size_t max_piece;
    int slow_ms;
    EVP_MD_CTX *sha;
} sink;

static int sink_data(void *state, const char *buf, size_t len, cu_error *err)
{
    sink *s = state;
    if (s->slow_ms)
        usleep((useconds_t)s->slow_ms * 1000);
    s->bytes += (int64_t)len;
    if (len > s->max_piece)
        s->max_piece = len;
    EVP_DigestUpdate(s->sha, buf, len);
    if (s->fail_at && s->bytes >= s->fail_at)
        return cu_fail(err, CU_EINVAL, "Failed on purpose at %lld", (long long)s->bytes);
    return 0;
}

static void sink_end(void *state, http_request *req)
{
    sink *s = state;
    unsigned char md[32];
    char hex[65];
    EVP_DigestFinal_ex(s->sha, md, NULL);
    EVP_MD_CTX_free(s->sha);
    util_hex(md, 32, hex);
    http_reply_json(req, 200,
                    json_pack("{s:I, s:I, s:s}", "bytes", (json_int_t)s->bytes, "max_piece",
                              (json_int_t)s->max_piece, "sha256", hex));
    free(s);
}

static void sink_abort(void *state)
{
    sink *s = state;
    EVP_MD_CTX_free(s->sha);
    free(s);
}

static const http_stream_ops sink_ops = {.data = sink_data, .end = sink_end, .abort = sink_abort};

static void h_sink(void *ctx, http_request *req)
{
    (void)ctx;
    atomic_fetch_add(&handler_runs, 1);
    if (http_header(req, "X-Refuse")) {
        http_reply_error(req, 401, "Refused from the headers");
        return;
    }
    sink *s = calloc(1, sizeof *s);
    s->sha = EVP_MD_CTX_new();
    EVP_DigestInit_ex(s->sha, EVP_sha256(), NULL);
    const char *v = http_header(req, "X-Fail-At");
    s->fail_at = v ? atoll(v) : 0;
    v = http_header(req, "X-Slow-Ms");
    s->slow_ms = v ? atoi(v) : 0;
    http_want_stream(req, &sink_ops, s);
}

/* POST /form: multipart fields, each with its bytes, hash and largest piece. */
typedef struct {
    json_t *fields;
    json_t *cur;
    EVP_MD_CTX *sha;
    int64_t bytes;
    size_t max_piece;
} form;

static void form_close_field(form *f)
{
    if (!f->cur)
        return;
    unsigned char md[32];
    char hex[65];
    EVP_DigestFinal_ex(f->sha, md, NULL);
    EVP_MD_CTX_free(f->sha);
    f->sha = NULL;
    util_hex(md, 32, hex);
    json_object_set_new(f->cur, "sha256", json_string(hex));
    json_object_set_new(f->cur, "bytes", json_integer(f->bytes));
    json_object_set_new(f->cur, "max_piece", json_integer((json_int_t)f->max_piece));
    json_array_append_new(f->fields, f->cur);
    f->cur = NULL;
}

static int form_field(void *state, const char *name, const char *filename, const char *ctype,
                      cu_error *err)
{
    (void)err;
    form *f = state;
    form_close_field(f);
    f->cur = json_pack("{s:s, s:s?, s:s?}", "name", name, "filename", filename, "type", ctype);
    f->sha = EVP_MD_CTX_new();
    EVP_DigestInit_ex(f->sha, EVP_sha256(), NULL);
    f->bytes = 0;
    f->max_piece = 0;
    return 0;
}

static int form_data(void *state, const char *buf, size_t len, cu_error *err)
{
    (void)err;
    form *f = state;
    EVP_DigestUpdate(f->sha, buf, len);
    f->bytes += (int64_t)len;
    if (len > f->max_piece)
        f->max_piece = len;
    return 0;
}

static void form_end(void *state, http_request *req)
{
    form *f = state;
    form_close_field(f);
    http_reply_json(req, 200, json_pack("{s:o}", "fields", f->fields));
    free(f);
}

static void form_abort(void *state)
{
    form *f = state;
    EVP_MD_CTX_free(f->sha);
    json_decref(f->cur);
    json_decref(f->fields);
    free(f);
}

static const http_multipart_ops form_ops = {
    .field = form_field, .data = form_data, .end = form_end, .abort = form_abort};

static void h_form(void *ctx, http_request *req)
{
    (void)ctx;
    form *f = calloc(1, sizeof *f);
    f->fields = json_array();
    if (http_want_multipart(req, &form_ops, f) != 0) {
        json_decref(f->fields);
        free(f);
    }
}

static const http_route test_routes[] = {
    {.method = "GET", .pattern = "/json", .handle = h_json},
    {.method = "GET", .pattern = "/many-headers", .handle = h_many_headers},
    {.method = "GET", .pattern = "/text", .handle = h_text},
    {.method = "GET", .pattern = "/empty", .handle = h_empty},
    {.method = "GET", .pattern = "/stream", .handle = h_stream},
    {.method = "GET", .pattern = "/file", .handle = h_file},
    {.method = "POST", .pattern = "/echo", .body = HTTP_BODY_JSON, .handle = h_echo_json},
    {.method = "PUT", .pattern = "/sink", .body = HTTP_BODY_STREAM, .handle = h_sink},
    {.method = "POST", .pattern = "/form", .body = HTTP_BODY_MULTIPART, .handle = h_form},
    {.method = "GET", .pattern = "/teapot", .handle = h_json},
};

/* What the filter saw of the last request: the server's refusal and whether a route was set. */
static _Atomic int seen_refusal = -1;
static _Atomic int seen_route = -1;

static bool tag_request(void *ctx, http_request *req)
{
    (void)ctx;
    atomic_store(&seen_refusal, http_refusal(req));
    atomic_store(&seen_route, http_route_of(req) != NULL);
    if (http_header(req, "X-Filter-Answers")) { /* answers instead of anything the server would */
        http_reply_error(req, 429, "Answered by a filter before the server");
        return true;
    }
    if (!strcmp(http_method(req), "OPTIONS") && http_header(req, "X-Filter-Options")) {
        http_add_header(req, "X-Allowed", http_allowed_methods(req));
        http_reply_empty(req, 200);
        return true;
    }
    if (!strcmp(http_path(req), "/teapot")) {
        http_reply_error(req, 418, "Answered by a filter");
        return true;
    }
    return false;
}

static void tag_reply(void *ctx, http_request *req, int status)
{
    (void)ctx, (void)status;
    http_add_header(req, "X-Filter", "tag");
}

static void tag_done(void *ctx, const http_request *req, const http_request_stats *st)
{
    (void)ctx, (void)req;
    atomic_store(&last_done_status, st->status);
    atomic_store(&last_done_bytes_in, st->bytes_in);
}

static const http_filter test_filters[] = {
    {.name = "tag", .request = tag_request, .reply = tag_reply, .done = tag_done}};

typedef struct {
    http_router *router;
    http_server *srv;
    int port;
} fixture;

static fixture *start_with(http_server_options o)
{
    fixture *f = calloc(1, sizeof *f);
    f->router = http_router_new();
    for (size_t i = 0; i < sizeof test_routes / sizeof *test_routes; i++)
        assert_int_equal(http_router_add(f->router, &test_routes[i]), 0);
    o.host = "127.0.0.1";
    o.port = 0;
    o.router = f->router;
    o.filters = test_filters;
    o.nfilters = 1;
    if (!o.max_connections)
        o.max_connections = 64;
    cu_error err;
    f->srv = http_server_start(&o, &err);
    if (!f->srv)
        print_error("http_server_start: %s\n", err.msg);
    assert_non_null(f->srv);
    f->port = http_server_port(f->srv);
    return f;
}

static http_server_options default_options(void)
{
    return (http_server_options){.max_connections = 64,
                                 .max_connections_per_ip = 0,
                                 .header_timeout = 20,
                                 .keepalive_timeout = 60,
                                 .body_min_rate = 0,
                                 .body_rate_window = 30};
}

static int setup(void **state)
{
    *state = start_with(default_options());
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    http_server_stop(f->srv);
    http_router_free(f->router);
    free(f);
    return 0;
}

/* ---- tests ---- */

static void test_json_keepalive_and_request_ids(void **state)
{
    fixture *f = *state;
    int fd = conn_open(f->port, NULL);
    reply r;
    for (int i = 0; i < 3; i++) { /* one connection for all: replies keep it alive */
        request(fd, "GET /json?x=5 HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_true(read_reply(fd, 5000, false, &r));
        assert_int_equal(r.status, 200);
        assert_false(r.closed);
        assert_null(reply_header(&r, "Connection"));
        assert_string_equal(reply_header(&r, "X-Test"), "1");
        assert_string_equal(reply_header(&r, "X-Filter"), "tag");
        assert_int_equal(strlen(reply_header(&r, "X-Request-Id")), 16);
        json_t *doc = json_loads(r.body, 0, NULL);
        assert_string_equal(json_string_value(json_object_get(doc, "q")), "5");
        assert_string_equal(json_string_value(json_object_get(doc, "peer")), "127.0.0.1");
        json_decref(doc);
        reply_free(&r);
    }
    /* A sane request id from the client is kept; an insane one is replaced. */
    request(fd, "GET /json HTTP/1.1\r\nHost: t\r\nX-Request-Id: trace-42.a_b\r\n\r\n");
    assert_true(read_reply(fd, 5000, false, &r));
    assert_string_equal(reply_header(&r, "X-Request-Id"), "trace-42.a_b");
    reply_free(&r);
    request(fd, "GET /json HTTP/1.1\r\nHost: t\r\nX-Request-Id: a b\r\n\r\n");
    assert_true(read_reply(fd, 5000, false, &r));
    assert_string_not_equal(reply_header(&r, "X-Request-Id"), "a b");
    reply_free(&r);
    close(fd);
}

static void test_head_is_get_without_body(void **state)
{
    fixture *f = *state;
    int fd = conn_open(f->port, NULL);
    reply r;
    request(fd, "HEAD /json HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(read_reply(fd, 5000, true, &r));
    assert_int_equal(r.status, 200);
    assert_true(atoi(reply_header(&r, "Content-Length")) > 10);
    reply_free(&r);
    request(fd, "HEAD /stream?len=100000&known=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(read_reply(fd, 5000, true, &r));
    assert_string_equal(reply_header(&r, "Content-Length"), "100000");
    reply_free(&r);
    /* Nothing of either body came: the next reply on the connection parses cleanly. */
    request(fd, "GET /text HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(read_reply(fd, 5000, false, &r));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hi there");
    reply_free(&r);
    close(fd);
}

static void test_not_found_method_and_options(void **state)
{
    fixture *f = *state;
    int fd = conn_open(f->port, NULL);
    reply r;
    request(fd, "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(read_reply(fd, 5000, false, &r));
    assert_json_error(&r, 404);
    assert_string_equal(reply_header(&r, "X-Filter"), "tag"); /* filters see errors too */
    reply_free(&r);
    request(fd, "DELETE /json HTTP/1.1\r\nHost: t\r\n\r\n"); /* never a fall-through */
    assert_true(read_reply(fd, 5000, false, &r));
    assert_json_error(&r, 405);
    assert_string_equal(reply_header(&r, "Allow"), "GET, HEAD, OPTIONS");
    reply_free(&r);
    request(fd, "OPTIONS /sink HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(read_reply(fd, 5000, false, &r));
    assert_int_equal(r.status, 204);
    assert_string_equal(reply_header(&r, "Allow"), "PUT, OPTIONS");
    reply_free(&r);
    request(fd, "OPTIONS /nope HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(read_reply(fd, 5000, false, &r));
    assert_json_error(&r, 404);
    reply_free(&r);
    close(fd);
}

/* A refusal quoting the client's bytes is still JSON: the path of a 404 is decoded from
 * %FF to a byte that is not UTF-8, which jansson would not pack (the reply was a 500). */
static void test_refusal_quoting_non_utf8(void **state)
{
    fixture *f = *state;
    int fd = conn_open(f->port, NULL);
    reply r;
    request(fd, "GET /%FF%C3x HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(read_reply(fd, 5000, false, &r));
    assert_json_error(&r, 404);
    json_t *doc = json_loads(r.body, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(doc, "error")), "Not found: /??x");
    json_decref(doc);
    reply_free(&r);
    close(fd);
}

static void test_filter_answers_and_done_hook(void **state)
{
    fixture *f = *state;
    int fd = conn_open(f->port, NULL);
    reply r;
    int before = atomic_load(&handler_runs);
    request(fd, "GET /teapot HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(read_reply(fd, 5000, false, &r));
    assert_json_error(&r, 418);
    assert_int_equal(atomic_load(&handler_runs), before); /* the handler never ran */
    reply_free(&r);
    request(fd, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 7\r\n\r\n{\"a\":1}");
    assert_true(read_reply(fd, 5000, false, &r));
    assert_int_equal(r.status, 200);
    reply_free(&r);
    close(fd);
    /* The done hook runs after the reply: wait for it a little. */
    for (int i = 0; i < 100 && atomic_load(&last_done_bytes_in) != 7; i++)
        usleep(10000);
    assert_int_equal(atomic_load(&last_done_status), 200);
    assert_int_equal(atomic_load(&last_done_bytes_in), 7);
}

/* Every request reaches the filters, also the ones the server refuses by itself: they see the
 * refusal (and no route), may answer first, and the reply hook decorates either answer. */
static void test_filters_see_every_request(void **state)
{
    fixture *f = *state;
    struct {
        const char *text;
        int refusal, route;
    } cases[] = {
        {"GET /json HTTP/1.1\r\nHost: t\r\n\r\n", 0, 1},
        {"OPTIONS /json HTTP/1.1\r\nHost: t\r\n\r\n", 0, 0},
        {"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n", 404, 0},
        {"DELETE /json HTTP/1.1\r\nHost: t\r\n\r\n", 405, 0},
        {"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n", 413, 0},
        {"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n", 400,
         0},
    };
    reply r;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        /* The server's answer, seen by the filter... */
        int fd = conn_open(f->port, NULL);
        request(fd, cases[i].text);
        assert_true(read_reply(fd, 5000, false, &r));
        assert_int_equal(atomic_load(&seen_refusal), cases[i].refusal);
        assert_int_equal(atomic_load(&seen_route), cases[i].route);
        if (cases[i].refusal)
            assert_json_error(&r, cases[i].refusal);
        assert_string_equal(reply_header(&r, "X-Filter"), "tag");
        reply_free(&r);
        close(fd);
        /* ...or the filter's, in its place. */
        char text[256];
        const char *eol = strstr(cases[i].text, "\r\n");
        snprintf(text, sizeof text, "%.*s\r\nX-Filter-Answers: 1%s", (int)(eol - cases[i].text),
                 cases[i].text, eol);
        fd = conn_open(f->port, NULL);
        request(fd, text);
        assert_true(read_reply(fd, 5000, false, &r));
        assert_json_error(&r, 429);
        assert_string_equal(reply_header(&r, "X-Filter"), "tag");
        assert_null(reply_header(&r, "Allow")); /* nothing of the 405 it replaced */
        reply_free(&r);
        close(fd);
    }
    /* An OPTIONS request answered by the filter, with the path's methods. */
    int fd = conn_open(f->port, NULL);
    request(fd, "OPTIONS /sink HTTP/1.1\r\nHost: t\r\nX-Filter-Options: 1\r\n\r\n");
    assert_true(read_reply(fd, 5000, false, &r));
    assert_int_equal(r.status, 200);
    assert_string_equal(reply_header(&r, "X-Allowed"), "PUT, OPTIONS");
    assert_null(reply_header(&r, "Allow"));
    assert_false(r.closed);
    reply_free(&r);
    request(fd, "GET /text HTTP/1.1\r\nHost: t\r\n\r\n"); /* the connection goes on */
    assert_true(read_reply(fd, 5000, false, &r));
    assert_int_equal(r.status, 200);
    reply_free(&r);
    close(fd);
}

static void test_reply_kinds(void **state)
{
    fixture *f = *state;
    int fd = conn_open(f->port, NULL);
    reply r;
    request(fd, "GET /many-headers HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(read_reply(fd, 5000, false, &r));
    for (int i = 0; i < 40; i++) { /* the header list grows as far as needed */
        char name[32], value[32];
        snprintf(name, sizeof name, "X-H-%d", i);
        snprintf(value, sizeof value, "v%d", i);
        assert_string_equal(reply_header(&r, name), value);
    }
    reply_free(&r);
    request(fd, "GET /text HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(read_reply(fd, 5000, false, &r));
    assert_string_equal(reply_header(&r, "Content-Type"), "text/plain; charset=utf-8");
    assert_string_equal(r.body, "hi there");
    reply_free(&r);
    request(fd, "GET /empty HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(read_reply(fd, 5000, false, &r));
    assert_int_equal(r.status, 204);
    assert_string_equal(reply_header(&r, "X-Empty"), "yes");
    reply_free(&r);

    /* Streamed bodies, of known and unknown length, larger than any buffer. */
    const int64_t lens[] = {5 * 1024 * 1024, 3 * 1024 * 1024 + 17, 0};
    for (int known = 0; known <= 1; known++) {
        for (size_t i = 0; i < 3; i++) {
            char line[128];
            snprintf(line, sizeof line, "GET /stream?len=%lld&known=%d HTTP/1.1\r\nHost: t\r\n\r\n",
                     (long long)lens[i], known);
            request(fd, line);
            assert_true(read_reply(fd, 20000, false, &r));
            assert_int_equal(r.status, 200);
            if (!known && lens[i])
                assert_string_equal(reply_header(&r, "Transfer-Encoding"), "chunked");
            assert_int_equal(r.body_len, lens[i]);
            unsigned char *want = malloc((size_t)lens[i] + 1);
            fill(want, (size_t)lens[i], 3);
            assert_memory_equal(r.body, want, (size_t)lens[i]);
            free(want);
            reply_free(&r);
        }
    }
    /* A range of a file from its descriptor. */
    request(fd, "GET /file HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(read_reply(fd, 5000, false, &r));
    assert_int_equal(r.status, 206);
    assert_int_equal(r.body_len, 1000);
    unsigned char want[1010];
    fill(want, sizeof want, 9);
    assert_memory_equal(r.body, want + 10, 1000);
    reply_free(&r);
    close(fd);
}

static void test_json_body_bounded_before_continue(void **state)
{
    fixture *f = *state;
    reply r;
    int fd = conn_open(f->port, NULL);
    request(fd, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n{\"k\":\"v\"}  ");
    assert_true(read_reply(fd, 5000, false, &r));
    assert_int_equal(r.status, 200);
    json_t *doc = json_loads(r.body, 0, NULL);
    assert_int_equal(json_integer_value(json_object_get(doc, "len")), 11);
    json_decref(doc);
    reply_free(&r);
    close(fd);

    /* Over the limit with Expect: the 413 comes instead of 100 Continue, before any byte. */
    fd = conn_open(f->port, NULL);
    request(fd, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n"
                "Expect: 100-continue\r\n\r\n");
    assert_true(read_reply(fd, 5000, false, &r));
    assert_json_error(&r, 413);
    reply_free(&r);
    close(fd);

    /* Over the limit without Expect, the client sending its body regardless: the 413 arrives. */
    fd = conn_open(f->port, NULL);
    size_t big = 2 * 1024 * 1024;
    char *body = calloc(1, big);
    request(fd, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2097152\r\n\r\n");
    assert_true(send_all(fd, body, big));
    assert_true(read_reply(fd, 10000, false, &r));
    assert_json_error(&r, 413);
    assert_string_equal(reply_header(&r, "Connection"), "close");
    reply_free(&r);
    close(fd);

    /* Chunked, so the size shows only as it arrives: refused once over, answered at the end. */
    fd = conn_open(f->port, NULL);
    request(fd, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    char chunk[16 * 1024 + 16];
    int n = snprintf(chunk, sizeof chunk, "%x\r\n", 16 * 1024);
    memset(chunk + n, 'x', 16 * 1024);
    memcpy(chunk + n + 16 * 1024, "\r\n", 2);
    for (int i = 0; i < 8; i++)
        send_all(fd, chunk, (size_t)n + 16 * 1024 + 2);
    request(fd, "0\r\n\r\n");
    assert_true(read_reply(fd, 10000, false, &r));
    assert_json_error(&r, 413);
    reply_free(&r);
    close(fd);
    free(body);
}

static void test_stream_body_in_bounded_pieces(void **state)
{
    fixture *f = *state;
    size_t len = 10 * 1024 * 1024 + 3;
    unsigned char *data = malloc(len);
    fill(data, len, 5);
    unsigned char md[32];
    char hex[65];
    SHA256(data, len, md);
    util_hex(md, 32, hex);
    int fd = conn_open(f->port, NULL);
    char head[256];
    snprintf(head, sizeof head, "PUT /sink HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n",
             len);
    request(fd, head);
    /* Pieces of odd sizes, as a network delivers them. */
    for (size_t off = 0; off < len;) {
        size_t n = 1 + (off * 7919) % 300000;
        if (n > len - off)
            n = len - off;
        assert_true(send_all(fd, data + off, n));
        off += n;
    }
    reply r;
    assert_true(read_reply(fd, 20000, false, &r));
    assert_int_equal(r.status, 200);
    json_t *doc = json_loads(r.body, 0, NULL);
    assert_int_equal(json_integer_value(json_object_get(doc, "bytes")), (json_int_t)len);
    assert_string_equal(json_string_value(json_object_get(doc, "sha256")), hex);
    /* Memory per connection does not grow with the body: pieces stay within the pool. */
    assert_true(json_integer_value(json_object_get(doc, "max_piece")) <= 128 * 1024);
    json_decref(doc);
    reply_free(&r);
    close(fd);
    free(data);
}

static void test_refusal_reaches_a_client_still_sending(void **state)
{
    fixture *f = *state;
    size_t len = 20 * 1024 * 1024;
    char *body = calloc(1, len);
    for (int round = 0; round < 10; round++) {
        int fd = conn_open(f->port, NULL);
        char head[256];
        snprintf(head, sizeof head,
                 "PUT /sink HTTP/1.1\r\nHost: t\r\nX-Refuse: 1\r\nContent-Length: %zu\r\n\r\n",
                 len);
        request(fd, head);
        /* A client that reads nothing until it has sent everything (no Expect), as most HTTP
         * libraries do: it fails unless the server keeps reading until the body is over. */
        bool sent = send_all(fd, body, len);
        if (!sent)
            print_error("round %d: the connection broke while the body was sent\n", round);
        assert_true(sent);
        reply r;
        bool got = read_reply(fd, 15000, false, &r);
        if (!got)
            print_error("round %d: no reply\n", round);
        assert_true(got);
        assert_json_error(&r, 401);
        reply_free(&r);
        close(fd);
    }
    free(body);
}

static void test_failure_mid_body_answered_after_it(void **state)
{
    fixture *f = *state;
    size_t len = 4 * 1024 * 1024;
    char *body = calloc(1, len);
    int fd = conn_open(f->port, NULL);
    char head[256];
    snprintf(head, sizeof head,
             "PUT /sink HTTP/1.1\r\nHost: t\r\nX-Fail-At: 1000000\r\nContent-Length: %zu\r\n\r\n",
             len);
    request(fd, head);
    assert_true(send_all(fd, body, len));
    reply r;
    assert_true(read_reply(fd, 10000, false, &r));
    assert_json_error(&r, 400);
    assert_non_null(strstr(r.body, "on purpose"));
    assert_false(r.closed);
    reply_free(&r);
    /* The body was read to its end, so the connection carries on. */
    request(fd, "GET /text HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(read_reply(fd, 5000, false, &r));
    assert_int_equal(r.status, 200);
    reply_free(&r);
    close(fd);
    free(body);
}

static void test_multipart_streams_fields(void **state)
{
    fixture *f = *state;
    size_t len = 5 * 1024 * 1024 + 11;
    unsigned char *data = malloc(len);
    fill(data, len, 7);
    unsigned char md[32];
    char hex[65];
    SHA256(data, len, md);
    util_hex(md, 32, hex);

    CURL *c = curl_easy_init();
    curl_mime *mime = curl_mime_init(c);
    curl_mimepart *part = curl_mime_addpart(mime);
    curl_mime_name(part, "path");
    curl_mime_data(part, "videos/2024", CURL_ZERO_TERMINATED);
    part = curl_mime_addpart(mime);
    curl_mime_name(part, "file");
    curl_mime_filename(part, "movie.bin");
    curl_mime_type(part, "application/octet-stream");
    curl_mime_data(part, (const char *)data, len);
    char url[128], *out = NULL;
    size_t out_len = 0;
    FILE *out_file = open_memstream(&out, &out_len);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/form", f->port);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_MIMEPOST, mime);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out_file);
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    fclose(out_file);
    assert_int_equal(status, 200);
    json_t *doc = json_loads(out, 0, NULL);
    json_t *fields = json_object_get(doc, "fields");
    assert_int_equal(json_array_size(fields), 2);
    json_t *p0 = json_array_get(fields, 0), *p1 = json_array_get(fields, 1);
    assert_string_equal(json_string_value(json_object_get(p0, "name")), "path");
    assert_int_equal(json_integer_value(json_object_get(p0, "bytes")), 11);
    assert_string_equal(json_string_value(json_object_get(p1, "name")), "file");
    assert_string_equal(json_string_value(json_object_get(p1, "filename")), "movie.bin");
    assert_string_equal(json_string_value(json_object_get(p1, "type")), "application/octet-stream");
    assert_int_equal(json_integer_value(json_object_get(p1, "bytes")), (json_int_t)len);
    assert_string_equal(json_string_value(json_object_get(p1, "sha256")), hex);
    assert_true(json_integer_value(json_object_get(p1, "max_piece")) <= 128 * 1024);
    json_decref(doc);
    free(out);
    curl_mime_free(mime);
    curl_easy_cleanup(c);
    free(data);

    /* Not multipart at all: 415, as JSON. */
    int fd = conn_open(f->port, NULL);
    request(fd, "POST /form HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n"
                "Content-Length: 3\r\n\r\nabc");
    reply r;
    assert_true(read_reply(fd, 5000, false, &r));
    assert_json_error(&r, 415);
    reply_free(&r);
    close(fd);
}

static void test_ambiguous_framing_refused(void **state)
{
    fixture *f = *state;
    const char *requests[] = {
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nContent-Length: 9\r\n\r\n{}",
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 7\r\nTransfer-Encoding: chunked\r\n\r\n"
        "2\r\n{}\r\n0\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 7\r\n\r\n"
        "2\r\n{}\r\n0\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        "2\r\n{}\r\n0\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
        "Transfer-Encoding: gzip\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
        "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: identity\r\n\r\n{}",
        "GET /nope HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nContent-Length: 1\r\n\r\nx",
    };
    for (size_t i = 0; i < sizeof requests / sizeof *requests; i++) {
        int fd = conn_open(f->port, NULL);
        request(fd, requests[i]);
        reply r;
        assert_true(read_reply(fd, 5000, false, &r));
        assert_json_error(&r, 400);
        assert_non_null(strstr(r.body, "framing"));
        assert_string_equal(reply_header(&r, "Connection"), "close");
        reply_free(&r);
        close(fd);
    }
    /* The same length twice is one length. */
    int fd = conn_open(f->port, NULL);
    request(fd,
            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}");
    reply r;
    assert_true(read_reply(fd, 5000, false, &r));
    assert_int_equal(r.status, 200);
    reply_free(&r);
    close(fd);
}

/* ---- limits ---- */

/* Whether the server closed fd (without a reply) within timeout_ms. */
static bool closed_within(int fd, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) <= 0)
        return false;
    char c;
    ssize_t n = recv(fd, &c, 1, 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

static void wait_connections(fixture *f, int n)
{
    for (int i = 0; i < 200 && http_server_connections(f->srv) < n; i++)
        usleep(10000);
    assert_true(http_server_connections(f->srv) >= n);
}

static void test_connections_per_address(void **state)
{
    fixture *f = *state;
    teardown(state);
    http_server_options o = default_options();
    o.max_connections_per_ip = 3;
    f = start_with(o);
    *state = f;
    int held[3];
    for (int i = 0; i < 3; i++)
        held[i] = conn_open(f->port, NULL);
    wait_connections(f, 3);
    /* A fourth from the same address is refused at once; nothing is sent back. */
    int extra = conn_open(f->port, NULL);
    assert_true(closed_within(extra, 3000));
    close(extra);
    /* Another client is unaffected. */
    int other = conn_open(f->port, "127.0.0.2");
    request(other, "GET /json HTTP/1.1\r\nHost: t\r\n\r\n");
    reply r;
    assert_true(read_reply(other, 5000, false, &r));
    assert_int_equal(r.status, 200);
    reply_free(&r);
    close(other);
    for (int i = 0; i < 3; i++)
        close(held[i]);
}

static void test_too_many_connections_get_503(void **state)
{
    fixture *f = *state;
    teardown(state);
    http_server_options o = default_options();
    o.max_connections = 2;
    f = start_with(o);
    *state = f;
    int held[2] = {conn_open(f->port, NULL), conn_open(f->port, NULL)};
    wait_connections(f, 2);
    int extra = conn_open(f->port, NULL);
    request(extra, "GET /json HTTP/1.1\r\nHost: t\r\n\r\n");
    reply r;
    assert_true(read_reply(extra, 5000, false, &r));
    assert_json_error(&r, 503);
    assert_non_null(reply_header(&r, "Retry-After"));
    reply_free(&r);
    close(extra);
    /* Once a connection is free again, a new one is served. */
    close(held[0]);
    for (int i = 0; i < 200 && http_server_connections(f->srv) > 1; i++)
        usleep(10000);
    int next = conn_open(f->port, NULL);
    request(next, "GET /json HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(read_reply(next, 5000, false, &r));
    assert_int_equal(r.status, 200);
    reply_free(&r);
    close(next);
    close(held[1]);
}

/* X-HTTP-Method-Override turns a POST into the method it names before routing: the route,
 * the body mode and the handler are that method's. Only when the server enables it, only on
 * POST, and only for a method it knows. */
static void test_method_override(void **state)
{
    fixture *f = *state;
    int fd = conn_open(f->port, NULL);
    reply r;
    request(fd, "POST /json HTTP/1.1\r\nHost: t\r\nX-HTTP-Method-Override: GET\r\n\r\n");
    assert_true(read_reply(fd, 5000, false, &r));
    assert_json_error(&r, 405); /* off by default: the header means nothing */
    reply_free(&r);
    close(fd);
    teardown(state);
    http_server_options o = default_options();
    o.method_override = true;
    f = start_with(o);
    *state = f;
    fd = conn_open(f->port, NULL);
    request(fd, "POST /json HTTP/1.1\r\nHost: t\r\nX-HTTP-Method-Override: GET\r\n\r\n");
    assert_true(read_reply(fd, 5000, false, &r));
    assert_int_equal(r.status, 200);
    assert_string_equal(reply_header(&r, "X-Test"), "1");
    reply_free(&r);
    /* A streamed body goes to the overriding method's handler. */
    request(fd, "POST /sink HTTP/1.1\r\nHost: t\r\nX-HTTP-Method-Override: PUT\r\n"
                "Content-Length: 5\r\n\r\nhello");
    assert_true(read_reply(fd, 5000, false, &r));
    assert_int_equal(r.status, 200);
    json_t *doc = json_loads(r.body, 0, NULL);
    assert_int_equal(json_integer_value(json_object_get(doc, "bytes")), 5);
    json_decref(doc);
    reply_free(&r);
    /* Another method than POST keeps its own. */
    request(fd, "GET /json HTTP/1.1\r\nHost: t\r\nX-HTTP-Method-Override: DELETE\r\n\r\n");
    assert_true(read_reply(fd, 5000, false, &r));
    assert_int_equal(r.status, 200);
    reply_free(&r);
    request(fd, "POST /json HTTP/1.1\r\nHost: t\r\nX-HTTP-Method-Override: get\r\n\r\n");
    assert_true(read_reply(fd, 5000, false, &r));
    assert_json_error(&r, 400);
    reply_free(&r);
    close(fd);
}

static void test_header_deadline_and_idle_limit(void **state)
{
    fixture *f = *state;
    teardown(state);
    http_server_options o = default_options();
    o.header_timeout = 1;
    o.keepalive_timeout = 1.5;
    f = start_with(o);
    *state = f;
    /* Headers trickling in: 408 once the block is late, then the connection ends. */
    int slow = conn_open(f->port, NULL);
    double t0 = util_monotonic();
    request(slow, "GET /json HTTP/1.1\r\n");
    usleep(300000);
    request(slow, "Host: t\r\n");
    reply r;
    assert_true(read_reply(slow, 5000, false, &r));
    assert_json_error(&r, 408);
    reply_free(&r);
    double took = util_monotonic() - t0;
    assert_true(took >= 0.9 && took < 4);
    assert_true(closed_within(slow, 3000));
    close(slow);
    /* An idle connection (a request served, then nothing) is closed quietly. */
    int idle = conn_open(f->port, NULL);
    request(idle, "GET /text HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(read_reply(idle, 5000, false, &r));
    reply_free(&r);
    t0 = util_monotonic();
    assert_true(closed_within(idle, 5000));
    took = util_monotonic() - t0;
    assert_true(took >= 1.2 && took < 4);
    close(idle);
    /* A slow header block of one client never delays another. */
    slow = conn_open(f->port, NULL);
    request(slow, "GET /json HTTP/1.1\r\n");
    int quick = conn_open(f->port, NULL);
    t0 = util_monotonic();
    request(quick, "GET /json HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(read_reply(quick, 5000, false, &r));
    assert_int_equal(r.status, 200);
    assert_true(util_monotonic() - t0 < 0.5);
    reply_free(&r);
    close(quick);
    close(slow);
}

static void test_body_minimum_rate(void **state)
{
    fixture *f = *state;
    teardown(state);
    http_server_options o = default_options();
    o.body_min_rate = 1000;
    o.body_rate_window = 1;
    f = start_with(o);
    *state = f;
    /* 10 bytes every 200 ms: 50 B/s against a minimum of 1000. */
    int fd = conn_open(f->port, NULL);
    request(fd, "PUT /sink HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n");
    double t0 = util_monotonic();
    reply r;
    bool got = false;
    for (int i = 0; i < 40 && !got; i++) {
        send_all(fd, "0123456789", 10);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 200) > 0)
            got = read_reply(fd, 2000, false, &r);
    }
    assert_true(got);
    assert_json_error(&r, 408);
    assert_true(util_monotonic() - t0 < 5);
    reply_free(&r);
    close(fd);

    /* A slow server is not a slow client: pieces that take the handler 1.2 s each are fine. */
    fd = conn_open(f->port, NULL);
    char *body = calloc(1, 300000);
    request(fd,
            "PUT /sink HTTP/1.1\r\nHost: t\r\nX-Slow-Ms: 1200\r\nContent-Length: 300000\r\n\r\n");
    assert_true(send_all(fd, body, 300000));
    assert_true(read_reply(fd, 30000, false, &r));
    assert_int_equal(r.status, 200);
    reply_free(&r);
    close(fd);
    free(body);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    log_set_level(LOG_ERROR + 1);
    const char *level = getenv("TEST_LOG_LEVEL");
    if (level)
        log_set_level(log_level_parse(level));
    curl_global_init(CURL_GLOBAL_DEFAULT);
    char *dir = tmpdir_make();
    snprintf(temp_file, sizeof temp_file, "%s/file.bin", dir);
    unsigned char data[1010];
    fill(data, sizeof data, 9);
    file_write(temp_file, data, sizeof data);
    const struct CMUnitTest tests[] = {
        T(test_json_keepalive_and_request_ids),
        T(test_head_is_get_without_body),
        T(test_not_found_method_and_options),
        T(test_refusal_quoting_non_utf8),
        T(test_filter_answers_and_done_hook),
        T(test_filters_see_every_request),
        T(test_reply_kinds),
        T(test_json_body_bounded_before_continue),
        T(test_stream_body_in_bounded_pieces),
        T(test_refusal_reaches_a_client_still_sending),
        T(test_failure_mid_body_answered_after_it),
        T(test_multipart_streams_fields),
        T(test_ambiguous_framing_refused),
        T(test_connections_per_address),
        T(test_too_many_connections_get_503),
        T(test_method_override),
        T(test_header_deadline_and_idle_limit),
        T(test_body_minimum_rate),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    tmpdir_remove(dir);
    curl_global_cleanup();
    return failed;
}
