/* server.c - libmicrohttpd glue: connections, the request's life, bodies and replies.
 *
 * libmicrohttpd (thread per connection) parses HTTP and owns the sockets. What it does not
 * do, this file does:
 *  - replies to requests without a body are queued in the callback that ends the request,
 *    not the one that delivers the headers: libmicrohttpd treats a reply queued with the
 *    headers as an early refusal and closes the connection after it, which cost every
 *    GET a new connection and thread (measured: 5,900 against 70,000 requests/s for
 *    /health with wrk -c64 on loopback);
 *  - a refusal decided from the headers of a request with a body is sent at once and the
 *    connection then drained for a while before it closes (a lingering close, as nginx
 *    does): closing a socket with unread data makes the kernel send a reset that can
 *    destroy the reply before the client reads it;
 *  - a watchdog thread holds each connection to the limits a client controls (header
 *    time, idle time, body rate) by looking at its phase and, for the header block, at the
 *    kernel's count of received bytes (TCP_INFO), since libmicrohttpd reports nothing
 *    before a header block is complete. A connection over a limit gets a JSON error
 *    written by the watchdog, which is safe because libmicrohttpd writes nothing while it
 *    waits for headers or body bytes, and is then shut down; the connection's own thread
 *    then sees the end of the stream and cleans up as for a client that left.
 * The per-connection memory pool is small (CONN_MEMORY): an idle connection costs that
 * plus its thread's touched stack; a body streams through it in pieces, and the storage
 * writer gathers them into large writes with a buffer that exists only while a body
 * streams. */
#include "http/server.h"

#include "base/log.h"
#include "base/util.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <linux/tcp.h> /* struct tcp_info with tcpi_bytes_received */
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* libmicrohttpd's memory pool per connection: it holds the header block (so it also bounds
 * the largest header block, about 100 KB here; libmicrohttpd answers a larger one 431
 * itself) and the read buffer bodies pass through. libmicrohttpd clears the whole pool
 * after every request, so it is also what an idle keep-alive connection costs: 256 KiB
 * before, half now. Request rates did not move between 64 and 256 KiB (wrk, /health), and
 * bodies stream as fast, since writers gather pieces into large writes themselves. */
#define CONN_MEMORY (128 * 1024)
/* Connections beyond max_connections that are still accepted, to be told 503. */
#define OVERFLOW_CONNECTIONS 64
/* A body of unknown length being dropped after a refusal: past this, close instead. */
#define DISCARD_UNKNOWN_MAX (8 * 1024 * 1024)
/* Lingering close: how long to keep reading what a refused client still sends. */
#define LINGER_TOTAL_MS 10000
#define LINGER_IDLE_MS 2000
/* The watchdog's tick. */
#define WATCHDOG_MS 250
#define MULTIPART_BUFFER (64 * 1024)

typedef enum {
    PHASE_IDLE,  /* between requests: waiting for (the rest of) a header block */
    PHASE_BUSY,  /* a request is being handled or answered: no deadline on the client */
    PHASE_BODY,  /* waiting for body bytes from the client */
    PHASE_LINGER /* draining after a refusal: the connection's thread bounds it */
} conn_phase;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

typedef struct conn_state {
    struct conn_state *prev, *next; /* in the server's list, under srv->lock */
    struct http_server *srv;
    int fd;
    char peer[INET6_ADDRSTRLEN];
    netaddr peer_addr;                     /* family 0 when unknown; IPv4-mapped as IPv4 */
    char peer_canonical[NETADDR_TEXT_LEN]; /* its text: the client unless a proxy says more */
    bool peer_trusted;                     /* a trusted proxy (TRUST_PROXY): decided once */
    bool overflow; /* accepted beyond max_connections: its first request gets 503 */
    /* Written by the connection's thread, read by the watchdog. */
    _Atomic int phase;
    _Atomic int64_t phase_since;       /* ns, monotonic */
    _Atomic uint64_t idle_baseline;    /* bytes received when the connection went idle */
    _Atomic int64_t body_bytes;        /* body bytes received in this request */
    _Atomic int64_t busy_ns;           /* time spent inside body callbacks in this request */
    _Atomic int64_t in_callback_since; /* ns, 0 when not inside a body callback */
    _Atomic unsigned body_epoch;       /* incremented whenever a body phase starts */
    _Atomic int cut_status;            /* set by the watchdog when it closed the connection */
    /* The watchdog's own bookkeeping. */
    int64_t header_seen;
    unsigned window_epoch;
    int64_t window_start, window_bytes, window_busy;
    char cut_msg[160];
} conn_state;

struct http_server {
    struct MHD_Daemon *daemon;
    http_server_options opts;
    int port;
    pthread_mutex_t lock; /* the connection list and count */
    conn_state *conns;
    int nconns;
    pthread_t watchdog;
    pthread_cond_t wake;
    bool stopping;
    bool watchdog_started;
    _Atomic uint64_t next_id;
    char id_prefix[9];
};

typedef struct {
    char *name, *value;
} reply_header;

typedef struct {
    http_body_reader reader;
    void *state;
    void (*free_state)(void *);
    _Atomic int64_t sent;
} stream_reply;

struct http_request {
    http_server *srv;
    struct MHD_Connection *conn;
    conn_state *cs;
    const char *method;
    const char *path;
    int64_t started;
    char id[48];
    http_match match;
    int refusal;             /* what the server answers by itself (0: none), see http_refusal */
    const char *refusal_why; /* a 400 refusal's message */
    netaddr client;
    char client_text[NETADDR_TEXT_LEN];
    bool forwarded_trusted;
    bool head;
    bool has_body;
    int64_t content_length;
    bool in_headers; /* inside the callback that delivered the headers */
    bool body_done;
    http_body_mode mode;
    int64_t body_max;
    char *body;
    size_t body_len;
    const http_stream_ops *stream;
    void *stream_state;
    bool stream_open;
    const http_multipart_ops *mp;
    void *mp_state;
    struct MHD_PostProcessor *pp;
    bool failed; /* the body is being dropped; fail_err is the answer */
    cu_error fail_err;
    int64_t discarded;
    struct MHD_Response *pending; /* built, queued when the request ends */
    int pending_status;
    bool replied;
    int status;
    bool close_after;
    bool linger;
    int64_t bytes_in, bytes_out;
    stream_reply *stream_reply;
    char *error_msg;
    reply_header *headers;
    int nheaders, headers_cap;
    bool header_oom;
    char *principal;
};

/* ---- small accessors ---- */

int http_status_for(int code)
{
    return cu_error_status(code);
}

const char *http_method(const http_request *req)
{
    return req->method;
}

const char *http_path(const http_request *req)
{
    return req->path;
}

const http_route *http_route_of(const http_request *req)
{
    return req->refusal ? NULL : req->match.route;
}

int http_refusal(const http_request *req)
{
    return req->refusal;
}

const char *http_allowed_methods(const http_request *req)
{
    return req->match.allow;
}

const char *http_param(const http_request *req, const char *name)
{
    return http_match_param(&req->match, name);
}

const char *http_header(const http_request *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *http_query(const http_request *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

int64_t http_content_length(const http_request *req)
{
    return req->content_length;
}

const char *http_peer(const http_request *req)
{
    return req->cs ? req->cs->peer : "";
}

const char *http_client_addr(const http_request *req)
{
    return req->client_text;
}

const netaddr *http_client_netaddr(const http_request *req)
{
    return &req->client;
}

bool http_forwarded_trusted(const http_request *req)
{
    return req->forwarded_trusted;
}

/* Whether a Host-like value is a name, an IPv4 or a bracketed IPv6 address and a port:
 * nothing that could end a URL's authority or start its path, query or another header. */
static bool host_is_plain(const char *host)
{
    size_t len = host ? strlen(host) : 0;
    if (len == 0 || len > 255)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = host[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == '_' || c == ':' || c == '[' || c == ']'))
            return false;
    }
    return true;
}

int http_origin(const http_request *req, char *out, size_t cap)
{
    const char *host = http_header(req, MHD_HTTP_HEADER_HOST);
    const char *scheme = "http";
    if (req->forwarded_trusted) {
        /* A proxy may list several hops ("https, http"): the first is the client's. */
        const char *proto = http_header(req, "X-Forwarded-Proto");
        if (proto && !strncasecmp(proto, "https", 5) && (proto[5] == '\0' || proto[5] == ','))
            scheme = "https";
        const char *fhost = http_header(req, "X-Forwarded-Host");
        if (fhost && host_is_plain(fhost))
            host = fhost;
    }
    if (!host_is_plain(host))
        return CU_EINVAL;
    int n = snprintf(out, cap, "%s://%s", scheme, host);
    return n > 0 && (size_t)n < cap ? 0 : CU_EINVAL;
}

const char *http_request_id(const http_request *req)
{
    return req->id;
}

bool http_is_head(const http_request *req)
{
    return req->head;
}

const char *http_principal(const http_request *req)
{
    return req->principal;
}

int http_set_principal(http_request *req, const char *principal)
{
    char *copy = strdup(principal);
    if (!copy)
        return CU_ENOMEM;
    free(req->principal);
    req->principal = copy;
    return 0;
}

const char *http_body(const http_request *req, size_t *len)
{
    if (len)
        *len = req->body_len;
    return req->body ? req->body : "";
}

/* "METHOD path" of req for a log line: both are the client's bytes, escaped. */
static const char *request_for_log(const http_request *req, char *out, size_t cap)
{
    char method[64], path[512];
    log_escape(req->method, method, sizeof method);
    log_escape(req->path, path, sizeof path);
    snprintf(out, cap, "%s %s", method, path);
    return out;
}

static void log_oom_header(const http_request *req, const char *name)
{
    char what[600];
    log_error("%s: out of memory adding reply header %s", request_for_log(req, what, sizeof what),
              name);
}

/* ---- replies ---- */

int http_add_header(http_request *req, const char *name, const char *value)
{
    if (req->nheaders == req->headers_cap) {
        int cap = req->headers_cap ? req->headers_cap * 2 : 8;
        reply_header *grown = realloc(req->headers, (size_t)cap * sizeof *grown);
        if (!grown)
            goto oom;
        req->headers = grown;
        req->headers_cap = cap;
    }
    char *n = strdup(name), *v = strdup(value);
    if (!n || !v) {
        free(n);
        free(v);
        goto oom;
    }
    req->headers[req->nheaders++] = (reply_header){n, v};
    return 0;
oom:
    log_oom_header(req, name);
    req->header_oom = true;
    return CU_ENOMEM;
}

/* A reply that needs no memory, for when building the real one failed. */
static struct MHD_Response *oom_response(void)
{
    static const char text[] = "{\"error\":\"Out of memory\",\"status\":500}";
    struct MHD_Response *r =
        MHD_create_response_from_buffer(sizeof text - 1, (void *)text, MHD_RESPMEM_PERSISTENT);
    if (r)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    return r;
}

static void queue(http_request *req, struct MHD_Response *resp, int status)
{
    if (MHD_queue_response(req->conn, (unsigned)status, resp) != MHD_YES) {
        char what[600];
        log_error("%s: the reply could not be queued", request_for_log(req, what, sizeof what));
    }
    MHD_destroy_response(resp);
}

/* Sends (or holds until the request ends) resp as the reply. Takes resp. */
static void reply_send(http_request *req, int status, struct MHD_Response *resp,
                       const char *content_type, int64_t body_len)
{
    if (req->replied) {
        char what[600];
        log_error("%s: a second reply (%d) was dropped", request_for_log(req, what, sizeof what),
                  status);
        if (resp)
            MHD_destroy_response(resp);
        return;
    }
    req->replied = true;
    for (size_t i = 0; i < req->srv->opts.nfilters; i++) {
        const http_filter *f = &req->srv->opts.filters[i];
        if (f->reply)
            f->reply(f->ctx, req, status);
    }
    bool ok = resp != NULL && !req->header_oom;
    if (ok && content_type)
        ok = MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type) == MHD_YES;
    for (int i = 0; ok && i < req->nheaders; i++)
        ok = MHD_add_response_header(resp, req->headers[i].name, req->headers[i].value) == MHD_YES;
    if (!ok) {
        char what[600];
        log_error("%s: the reply could not be built (%d)", request_for_log(req, what, sizeof what),
                  status);
        if (resp)
            MHD_destroy_response(resp);
        resp = oom_response();
        status = 500;
        body_len = 0;
        if (!resp)
            return; /* libmicrohttpd answers 500 itself when no reply comes */
    }
    MHD_add_response_header(resp, "X-Request-Id", req->id);
    if (req->close_after)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    req->status = status;
    req->bytes_out = body_len;
    if (req->in_headers && req->has_body) {
        /* Refused before its body: answer now, libmicrohttpd skips the body and closes, and
         * the connection lingers so that the answer is read. */
        req->linger = true;
        queue(req, resp, status);
    } else if (req->in_headers) {
        req->pending = resp; /* queued when the request ends, keeping the connection */
        req->pending_status = status;
    } else {
        queue(req, resp, status);
    }
}

void http_reply_text(http_request *req, int status, const char *content_type, const char *text,
                     size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)text, MHD_RESPMEM_MUST_COPY);
    reply_send(req, status, r, content_type, (int64_t)len);
}

void http_reply_empty(http_request *req, int status)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    reply_send(req, status, r, NULL, 0);
}

static void reply_json_text(http_request *req, int status, char *text)
{
    if (!text) {
        reply_send(req, 500, oom_response(), NULL, 0);
        return;
    }
    size_t len = strlen(text);
    struct MHD_Response *r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!r)
        free(text);
    else
        MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    reply_send(req, status, r, "application/json", (int64_t)len);
}

void http_reply_json(http_request *req, int status, json_t *obj)
{
    char *text = obj ? json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(10)) : NULL;
    json_decref(obj);
    reply_json_text(req, status, text);
}

void http_reply_error(http_request *req, int status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* Messages quote the client (its path, a parameter, a parser's view of its body) and
     * jansson packs only UTF-8: without this, such a refusal became a 500. */
    util_utf8_scrub(msg);
    if (!req->error_msg)
        req->error_msg = strdup(msg); /* for the access log line: the one log of a refusal */
    bool has_retry = false;
    for (int i = 0; i < req->nheaders; i++)
        has_retry |= strcasecmp(req->headers[i].name, "Retry-After") == 0;
    if (status == 503 && !has_retry)
        http_add_header(req, "Retry-After", "2"); /* busy for a moment: try again soon */
    json_t *obj = json_pack("{s:s, s:i}", "error", msg, "status", status);
    char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    reply_json_text(req, status, text);
}

void http_reply_cu_error(http_request *req, const cu_error *err)
{
    http_reply_error(req, http_status_for(err->code), "%s", err->msg);
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    stream_reply *s = cls;
    ssize_t n = s->reader(s->state, pos, buf, max);
    if (n < 0)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    if (n == 0)
        return MHD_CONTENT_READER_END_OF_STREAM;
    atomic_fetch_add(&s->sent, n);
    return n;
}

static void stream_free(void *cls)
{
    stream_reply *s = cls;
    if (s->free_state)
        s->free_state(s->state);
    free(s);
}

void http_reply_stream(http_request *req, int status, const char *content_type, int64_t length,
                       http_body_reader reader, void *state, void (*free_state)(void *))
{
    stream_reply *s = calloc(1, sizeof *s);
    if (!s) {
        if (free_state)
            free_state(state);
        reply_send(req, 500, oom_response(), NULL, 0);
        return;
    }
    s->reader = reader;
    s->state = state;
    s->free_state = free_state;
    struct MHD_Response *r = MHD_create_response_from_callback(
        length < 0 ? MHD_SIZE_UNKNOWN : (uint64_t)length, 64 * 1024, stream_read, s, stream_free);
    if (!r) {
        stream_free(s);
        reply_send(req, 500, oom_response(), NULL, 0);
        return;
    }
    req->stream_reply = length < 0 ? s : NULL;
    reply_send(req, status, r, content_type, length < 0 ? 0 : length);
}

void http_reply_fd(http_request *req, int status, const char *content_type, int fd, int64_t offset,
                   int64_t length)
{
    assert(fd >= 0 && offset >= 0 && length >= 0);
    struct MHD_Response *r =
        MHD_create_response_from_fd_at_offset64((uint64_t)length, fd, (uint64_t)offset);
    if (!r)
        close(fd);
    reply_send(req, status, r, content_type, length);
}

/* ---- bodies ---- */

void http_want_stream(http_request *req, const http_stream_ops *ops, void *state)
{
    assert(req->in_headers && !req->replied);
    req->mode = HTTP_BODY_STREAM;
    req->stream = ops;
    req->stream_state = state;
    req->stream_open = true;
}

static enum MHD_Result on_multipart(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *filename, const char *content_type,
                                    const char *transfer_encoding, const char *data, uint64_t off,
                                    size_t size)
{
    (void)kind, (void)transfer_encoding;
    http_request *req = cls;
    if (req->failed)
        return MHD_NO;
    int rc = 0;
    if (off == 0)
        rc = req->mp->field(req->mp_state, key ? key : "", filename, content_type, &req->fail_err);
    if (rc == 0 && size > 0)
        rc = req->mp->data(req->mp_state, data, size, &req->fail_err);
    if (rc) {
        req->failed = true;
        return MHD_NO;
    }
    return MHD_YES;
}

int http_want_multipart(http_request *req, const http_multipart_ops *ops, void *state)
{
    assert(req->in_headers && !req->replied);
    const char *ct = http_header(req, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (!ct || strncasecmp(ct, "multipart/form-data", 19) != 0) {
        http_reply_error(req, 415, "This takes multipart/form-data, not %s",
                         ct ? ct : "a body without a Content-Type");
        return CU_EMEDIATYPE;
    }
    req->mp = ops;
    req->mp_state = state;
    req->pp = MHD_create_post_processor(req->conn, MULTIPART_BUFFER, on_multipart, req);
    if (!req->pp) {
        http_reply_error(req, 400, "Malformed multipart/form-data (no boundary?)");
        return CU_EINVAL;
    }
    req->mode = HTTP_BODY_MULTIPART;
    req->stream_open = true;
    return 0;
}

/* Stops taking the body: what is left of it is read and dropped, and err is the answer once
 * it has all arrived. */
static void fail_body(http_request *req, const cu_error *err)
{
    req->failed = true;
    if (&req->fail_err != err)
        req->fail_err = *err;
    if (req->stream_open) {
        req->stream_open = false;
        if (req->mode == HTTP_BODY_MULTIPART)
            req->mp->abort(req->mp_state);
        else
            req->stream->abort(req->stream_state);
    }
}

/* ---- the request's life ---- */

static void set_phase(conn_state *cs, conn_phase phase)
{
    if (!cs)
        return;
    atomic_store(&cs->phase, phase);
    atomic_store(&cs->phase_since, now_ns());
}

static bool sane_request_id(const char *id)
{
    size_t len = id ? strlen(id) : 0;
    if (len == 0 || len > 40)
        return false;
    for (const char *p = id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.'))
            return false;
    return true;
}

/* Whether the request announces a body (Content-Length > 0 or a transfer coding). */
static void read_body_headers(http_request *req)
{
    const char *cl = http_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH);
    int64_t n;
    req->content_length = cl && util_parse_i64(cl, &n) == 0 && n >= 0 ? n : -1;
    req->has_body =
        req->content_length > 0 || http_header(req, MHD_HTTP_HEADER_TRANSFER_ENCODING) != NULL;
}

typedef struct {
    const char *values[16]; /* the last ones received, oldest first */
    size_t n;
} forwarded_for;

static enum MHD_Result collect_forwarded_for(void *cls, enum MHD_ValueKind kind, const char *key,
                                             const char *value)
{
    (void)kind;
    forwarded_for *x = cls;
    if (strcasecmp(key, "X-Forwarded-For") != 0 || !value)
        return MHD_YES;
    size_t cap = sizeof x->values / sizeof *x->values;
    if (x->n == cap) { /* the rightmost entries are the ones that count: keep the last */
        memmove(x->values, x->values + 1, (cap - 1) * sizeof *x->values);
        x->n--;
    }
    x->values[x->n++] = value;
    return MHD_YES;
}

/* Who the client is: the peer, unless it is a trusted proxy that names another. */
static void settle_client(http_request *req)
{
    if (!req->cs)
        return; /* unknown peer: family 0, "" */
    if (!req->cs->peer_trusted) {
        req->client = req->cs->peer_addr;
        memcpy(req->client_text, req->cs->peer_canonical, sizeof req->client_text);
        return;
    }
    forwarded_for xff = {.n = 0};
    MHD_get_connection_values(req->conn, MHD_HEADER_KIND, collect_forwarded_for, &xff);
    req->forwarded_trusted =
        http_trust_client(req->srv->opts.trust, &req->cs->peer_addr,
                          http_header(req, "CF-Connecting-IP"), xff.values, xff.n, &req->client);
    netaddr_format(&req->client, req->client_text);
}

static void run_handler(http_request *req)
{
    const http_route *route = req->match.route;
    route->handle(route->ctx, req);
}

typedef struct {
    int content_lengths;
    bool lengths_differ;
    const char *first_length;
    int transfer_encodings;
} framing;

static enum MHD_Result count_framing(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    (void)kind;
    framing *f = cls;
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        if (f->content_lengths++ && strcmp(f->first_length, value) != 0)
            f->lengths_differ = true;
        else
            f->first_length = value;
    }
    if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0)
        f->transfer_encodings++;
    return MHD_YES;
}

/* The framings a proxy in front may read differently from us (request smuggling): two
 * Content-Lengths that differ, a Transfer-Encoding beside a Content-Length, more than one
 * Transfer-Encoding header (libmicrohttpd reads only the first; a proxy may read the last),
 * and a transfer coding other than chunked. Returns the refusal's message, or NULL. */
static const char *framing_problem(http_request *req)
{
    framing f = {0};
    MHD_get_connection_values(req->conn, MHD_HEADER_KIND, count_framing, &f);
    const char *te = http_header(req, MHD_HTTP_HEADER_TRANSFER_ENCODING);
#define AMBIGUOUS "Ambiguous request framing: "
    return f.lengths_differ               ? AMBIGUOUS "two different Content-Length headers"
           : f.transfer_encodings > 1     ? AMBIGUOUS "more than one Transfer-Encoding header"
           : te && f.content_lengths      ? AMBIGUOUS "both Transfer-Encoding and Content-Length"
           : te && strcasecmp(te, "chunked") != 0 ? AMBIGUOUS "a Transfer-Encoding other than chunked"
                                                  : NULL;
#undef AMBIGUOUS
}

/* The method a POST stands for under X-HTTP-Method-Override (its own when it has none), or
 * NULL for a method not taken that way. The strings are static: req->method points at one. */
static const char *overridden_method(const http_request *req)
{
    static const char *const methods[] = {"PATCH", "DELETE", "PUT", "HEAD", "GET", "POST"};
    const char *want = http_header(req, "X-HTTP-Method-Override");
    if (!want)
        return req->method;
    for (size_t i = 0; i < sizeof methods / sizeof *methods; i++)
        if (!strcmp(want, methods[i]))
            return methods[i];
    return NULL;
}

/* What the server answers by itself, decided from the headers alone (0: the request goes
 * on); also applies X-HTTP-Method-Override, matches the route and sets the body mode and
 * limit. */
static int server_refusal(http_request *req)
{
    http_server *srv = req->srv;
    if ((req->refusal_why = framing_problem(req)) != NULL) {
        req->close_after = true;
        return 400;
    }
    if (srv->opts.method_override && !strcmp(req->method, "POST")) {
        const char *method = overridden_method(req);
        if (!method) {
            req->refusal_why = "X-HTTP-Method-Override must be PATCH, DELETE, PUT, HEAD or GET";
            return 400;
        }
        req->method = method;
    }
    if (req->cs && req->cs->overflow) {
        req->close_after = true;
        return 503;
    }
    http_router_match(srv->opts.router, req->method, req->path, &req->match);
    req->head = !strcmp(req->method, "HEAD");
    if (req->match.status)
        return req->match.status; /* 404, or 405 */
    const http_route *route = req->match.route;
    if (route) {
        req->mode = route->body;
        req->body_max = route->body_max;
        if (!req->body_max && (route->body == HTTP_BODY_NONE || route->body == HTTP_BODY_JSON))
            req->body_max = HTTP_SMALL_BODY_MAX;
        if (req->body_max && req->content_length > req->body_max)
            return 413;
    }
    return 0;
}

static void send_refusal(http_request *req)
{
    switch (req->refusal) {
    case 400:
        http_reply_error(req, 400, "%s", req->refusal_why);
        break;
    case 503:
        http_reply_error(req, 503, "The server has too many connections; try again shortly");
        break;
    case 404:
        http_reply_error(req, 404, "Not found: %s", req->path);
        break;
    case 405:
        http_add_header(req, "Allow", req->match.allow);
        http_reply_error(req, 405, "Method %s not allowed here (allowed: %s)", req->method,
                         req->match.allow);
        break;
    default:
        assert(req->refusal == 413);
        http_reply_error(req, 413, "Request body is over %lld bytes", (long long)req->body_max);
        break;
    }
}

/* Everything that can be decided from the headers. Every request passes the filters, the
 * ones the server refuses by itself too: a filter may answer first (a rate limit's 429),
 * and every reply, refusals included, passes their reply hooks (CORS headers). */
static void begin_request(http_request *req)
{
    http_server *srv = req->srv;
    req->refusal = server_refusal(req);
    for (size_t i = 0; i < srv->opts.nfilters; i++) {
        const http_filter *f = &srv->opts.filters[i];
        if (f->request && f->request(f->ctx, req))
            return;
    }
    if (req->refusal) {
        send_refusal(req);
        return;
    }
    const http_route *route = req->match.route;
    if (!route) { /* OPTIONS on a known path that no filter answered */
        http_add_header(req, "Allow", req->match.allow);
        http_reply_empty(req, 204);
        return;
    }
    if (req->mode == HTTP_BODY_STREAM || req->mode == HTTP_BODY_MULTIPART) {
        run_handler(req);
        if (!req->replied && !req->stream_open)
            http_reply_error(req, 500, "The handler took no body and gave no reply");
    }
}

/* Takes one piece of the body. Returns false to close the connection. */
static bool take_body(http_request *req, const char *data, size_t len)
{
    req->bytes_in += (int64_t)len;
    if (req->failed || req->replied) {
        req->discarded += (int64_t)len;
        return req->content_length >= 0 || req->discarded <= DISCARD_UNKNOWN_MAX;
    }
    cu_error err;
    switch (req->mode) {
    case HTTP_BODY_NONE:
    case HTTP_BODY_JSON:
        if (req->body_len + len > (size_t)req->body_max) {
            cu_fail(&err, CU_ETOOLARGE, "Request body is over %lld bytes",
                    (long long)req->body_max);
            fail_body(req, &err);
            return true;
        }
        if (req->mode == HTTP_BODY_JSON) {
            char *grown = realloc(req->body, req->body_len + len + 1);
            if (!grown) {
                fail_body(req, (cu_fail_oom(&err), &err));
                return true;
            }
            req->body = grown;
            memcpy(req->body + req->body_len, data, len);
            req->body[req->body_len + len] = '\0';
        }
        req->body_len += len;
        return true;
    case HTTP_BODY_STREAM:
        if (req->stream->data(req->stream_state, data, len, &err) != 0)
            fail_body(req, &err);
        return true;
    case HTTP_BODY_MULTIPART:
        if (MHD_post_process(req->pp, data, len) != MHD_YES) {
            if (!req->failed)
                cu_fail(&req->fail_err, CU_EINVAL, "Malformed multipart/form-data body");
            fail_body(req, &req->fail_err);
        }
        return true;
    }
    return true;
}

/* The whole request is in: answer it. */
static void end_request(http_request *req)
{
    req->body_done = true;
    if (req->replied)
        return;
    if (req->failed) {
        http_reply_cu_error(req, &req->fail_err);
        return;
    }
    switch (req->mode) {
    case HTTP_BODY_NONE:
    case HTTP_BODY_JSON:
        run_handler(req);
        break;
    case HTTP_BODY_STREAM:
        req->stream_open = false;
        req->stream->end(req->stream_state, req);
        break;
    case HTTP_BODY_MULTIPART:
        req->stream_open = false;
        if (MHD_destroy_post_processor(req->pp) != MHD_YES) {
            req->pp = NULL;
            req->mp->abort(req->mp_state);
            http_reply_error(req, 400,
                             "The multipart/form-data body ended in the middle of a part");
            break;
        }
        req->pp = NULL;
        if (req->failed) { /* the last piece failed inside the parser */
            req->mp->abort(req->mp_state);
            http_reply_cu_error(req, &req->fail_err);
            break;
        }
        req->mp->end(req->mp_state, req);
        break;
    }
    if (!req->replied)
        http_reply_error(req, 500, "No reply was produced");
}

static conn_state *conn_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
    (void)version;
    http_request *req = *con_cls;
    if (!req) {
        req = calloc(1, sizeof *req);
        if (!req)
            return MHD_NO;
        http_server *srv = cls;
        req->srv = srv;
        req->conn = conn;
        req->cs = conn_of(conn);
        req->method = method;
        req->path = url;
        req->started = now_ns();
        const char *rid = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
        if (sane_request_id(rid))
            snprintf(req->id, sizeof req->id, "%s", rid);
        else
            snprintf(req->id, sizeof req->id, "%s%08llx", srv->id_prefix,
                     (unsigned long long)atomic_fetch_add(&srv->next_id, 1));
        *con_cls = req;
        set_phase(req->cs, PHASE_BUSY);
        if (req->cs) {
            atomic_store(&req->cs->body_bytes, 0);
            atomic_store(&req->cs->busy_ns, 0);
        }
        settle_client(req);
        read_body_headers(req);
        req->in_headers = true;
        begin_request(req);
        req->in_headers = false;
        if (req->has_body && !(req->replied && req->linger)) {
            if (req->cs)
                atomic_fetch_add(&req->cs->body_epoch, 1);
            set_phase(req->cs, PHASE_BODY);
        }
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t len = *upload_data_size;
        *upload_data_size = 0;
        conn_state *cs = req->cs;
        int64_t entered = now_ns();
        if (cs) {
            atomic_fetch_add(&cs->body_bytes, (int64_t)len);
            atomic_store(&cs->in_callback_since, entered);
        }
        bool keep = take_body(req, upload_data, len);
        if (cs) {
            atomic_store(&cs->in_callback_since, 0);
            atomic_fetch_add(&cs->busy_ns, now_ns() - entered);
        }
        return keep ? MHD_YES : MHD_NO;
    }
    /* The whole request is in. */
    set_phase(req->cs, PHASE_BUSY);
    end_request(req);
    if (req->pending) {
        struct MHD_Response *resp = req->pending;
        req->pending = NULL;
        queue(req, resp, req->pending_status);
    }
    return MHD_YES;
}

/* Reads and drops what a refused client still sends, so that closing the socket does not
 * reset the connection under the reply. Runs on the connection's own thread, bounded. */
static void linger_drain(struct MHD_Connection *conn, conn_state *cs)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci)
        return;
    int fd = ci->connect_fd;
    set_phase(cs, PHASE_LINGER);
    shutdown(fd, SHUT_WR); /* the reply is complete: say so */
    int64_t until = now_ns() + (int64_t)LINGER_TOTAL_MS * 1000000;
    char buf[16384];
    for (;;) {
        int64_t left_ms = (until - now_ns()) / 1000000;
        if (left_ms <= 0)
            return;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int ready = poll(&p, 1, (int)(left_ms < LINGER_IDLE_MS ? left_ms : LINGER_IDLE_MS));
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready <= 0)
            return;
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n <= 0)
            return;
    }
}

static void access_log(const http_request *req, const http_request_stats *st, bool cut)
{
    int status = st->status;
    int level = status >= 500 || status == 0 ? LOG_ERROR : status >= 400 ? LOG_WARN : LOG_INFO;
    if (!st->completed && status == 0)
        level = LOG_INFO; /* the client left: its business */
    if (!log_enabled(level))
        return;
    char what[600], msg[600];
    request_for_log(req, what, sizeof what);
    msg[0] = '\0';
    if (req->error_msg) {
        char esc[560];
        snprintf(msg, sizeof msg, " \"%s\"", log_escape(req->error_msg, esc, sizeof esc));
    } else if (cut && req->cs) {
        snprintf(msg, sizeof msg, " \"%s\"", req->cs->cut_msg);
    }
    char via[NETADDR_TEXT_LEN + 8] = "";
    if (req->cs && strcmp(req->client_text, req->cs->peer_canonical) != 0)
        snprintf(via, sizeof via, " via %s", req->cs->peer_canonical);
    log_msg(level, "%s%s %s %d%s %lld/%lld B %.1f ms id=%s%s", req->client_text, via, what, status,
            msg, (long long)st->bytes_in, (long long)st->bytes_out, st->seconds * 1000, req->id,
            st->completed ? "" : " (connection closed before the end)");
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    http_server *srv = cls;
    http_request *req = *con_cls;
    if (!req)
        return;
    *con_cls = NULL;
    if (req->stream_open) { /* the client went away mid-body */
        req->stream_open = false;
        if (req->mode == HTTP_BODY_MULTIPART)
            req->mp->abort(req->mp_state);
        else
            req->stream->abort(req->stream_state);
    }
    if (req->pp)
        MHD_destroy_post_processor(req->pp);
    if (req->pending)
        MHD_destroy_response(req->pending);
    conn_state *cs = req->cs;
    int cut = cs ? atomic_load(&cs->cut_status) : 0;
    http_request_stats st = {.status = req->replied ? req->status
                                       : cut > 0    ? cut
                                                    : 0,
                             .bytes_in = req->bytes_in,
                             .bytes_out = req->bytes_out,
                             .seconds = (double)(now_ns() - req->started) / 1e9,
                             .completed = toe == MHD_REQUEST_TERMINATED_COMPLETED_OK};
    if (req->stream_reply)
        st.bytes_out = atomic_load(&req->stream_reply->sent);
    access_log(req, &st, cut > 0);
    for (size_t i = 0; i < srv->opts.nfilters; i++) {
        const http_filter *f = &srv->opts.filters[i];
        if (f->done)
            f->done(f->ctx, req, &st);
    }
    if (req->linger && toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
        linger_drain(conn, cs);
    if (cs) {
        /* Idle from here: the next header block is measured from the bytes received now. */
        struct tcp_info ti;
        socklen_t len = sizeof ti;
        if (getsockopt(cs->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0)
            atomic_store(&cs->idle_baseline, ti.tcpi_bytes_received);
        set_phase(cs, PHASE_IDLE);
    }
    for (int i = 0; i < req->nheaders; i++) {
        free(req->headers[i].name);
        free(req->headers[i].value);
    }
    free(req->headers);
    free(req->body);
    free(req->error_msg);
    free(req->principal);
    free(req);
}

/* ---- connections and the watchdog ---- */

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    http_server *srv = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        conn_state *cs = calloc(1, sizeof *cs);
        if (!cs)
            return; /* the connection works, without limits on its client */
        cs->srv = srv;
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        cs->fd = ci ? ci->connect_fd : -1;
        ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        const struct sockaddr *sa = ci ? ci->client_addr : NULL;
        if (sa && sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, cs->peer,
                      sizeof cs->peer);
        else if (sa && sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, cs->peer,
                      sizeof cs->peer);
        if (sa && netaddr_from_sockaddr(sa,
                                        sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                                  : sizeof(struct sockaddr_in),
                                        &cs->peer_addr) == 0) {
            netaddr_unmap(&cs->peer_addr);
            netaddr_format(&cs->peer_addr, cs->peer_canonical);
            cs->peer_trusted = http_trust_has(srv->opts.trust, &cs->peer_addr);
        }
        set_phase(cs, PHASE_IDLE);
        pthread_mutex_lock(&srv->lock);
        cs->overflow = srv->nconns >= srv->opts.max_connections;
        srv->nconns++;
        cs->next = srv->conns;
        if (srv->conns)
            srv->conns->prev = cs;
        srv->conns = cs;
        pthread_mutex_unlock(&srv->lock);
        *socket_context = cs;
        return;
    }
    conn_state *cs = *socket_context;
    if (!cs)
        return;
    /* Closed: libmicrohttpd closes the socket after this returns, so the watchdog (which
     * uses the descriptor under the lock) must forget it now. */
    pthread_mutex_lock(&srv->lock);
    if (cs->prev)
        cs->prev->next = cs->next;
    else
        srv->conns = cs->next;
    if (cs->next)
        cs->next->prev = cs->prev;
    srv->nconns--;
    pthread_mutex_unlock(&srv->lock);
    *socket_context = NULL;
    free(cs);
}

/* Closes a connection the watchdog found over a limit, telling the client why when a
 * request is under way (status 0: close quietly). Caller holds srv->lock. */
static void cut(conn_state *cs, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void cut(conn_state *cs, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cs->cut_msg, sizeof cs->cut_msg, fmt, ap);
    va_end(ap);
    int phase = atomic_load(&cs->phase);
    /* A request under way logs its own line with this reason; an idle connection has no
     * request, so the watchdog logs it (first, so the line is there once the client knows). */
    if (phase == PHASE_IDLE && status)
        log_warn("%s connection closed: %s", cs->peer, cs->cut_msg);
    else if (phase == PHASE_IDLE)
        log_debug("%s connection closed: %s", cs->peer, cs->cut_msg);
    if (status) {
        char body[256], reply[512];
        int blen =
            snprintf(body, sizeof body, "{\"error\":\"%s\",\"status\":%d}", cs->cut_msg, status);
        int rlen = snprintf(reply, sizeof reply,
                            "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                            "Cache-Control: no-store\r\nConnection: close\r\n"
                            "Content-Length: %d\r\n\r\n%s",
                            status, status == 408 ? "Request Timeout" : "Error", blen, body);
        ssize_t sent = send(cs->fd, reply, (size_t)rlen, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)sent; /* best effort: the connection ends either way */
    }
    atomic_store(&cs->cut_status, status ? status : -1);
    shutdown(cs->fd, SHUT_RDWR);
}

static void check_connection(http_server *srv, conn_state *cs, int64_t now)
{
    const http_server_options *o = &srv->opts;
    if (atomic_load(&cs->cut_status) || cs->fd < 0)
        return;
    int phase = atomic_load(&cs->phase);
    int64_t since = atomic_load(&cs->phase_since);
    if (phase == PHASE_IDLE) {
        struct tcp_info ti;
        socklen_t len = sizeof ti;
        bool got_bytes = getsockopt(cs->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 &&
                         ti.tcpi_bytes_received > atomic_load(&cs->idle_baseline);
        if (!got_bytes) {
            cs->header_seen = 0;
            if (o->keepalive_timeout > 0 && now - since > (int64_t)(o->keepalive_timeout * 1e9))
                cut(cs, 0, "idle for %g s", o->keepalive_timeout);
            return;
        }
        if (!cs->header_seen || cs->header_seen < since)
            cs->header_seen = now;
        if (o->header_timeout > 0 && now - cs->header_seen > (int64_t)(o->header_timeout * 1e9))
            cut(cs, 408, "The request's headers did not arrive within %g s", o->header_timeout);
        return;
    }
    cs->header_seen = 0;
    if (phase != PHASE_BODY || o->body_min_rate <= 0 || o->body_rate_window <= 0)
        return;
    unsigned epoch = atomic_load(&cs->body_epoch);
    int64_t bytes = atomic_load(&cs->body_bytes);
    int64_t busy = atomic_load(&cs->busy_ns);
    int64_t inside = atomic_load(&cs->in_callback_since);
    if (inside)
        busy += now - inside; /* the server is working, not waiting for the client */
    if (cs->window_epoch != epoch || !cs->window_start) {
        cs->window_epoch = epoch;
        cs->window_start = now;
        cs->window_bytes = bytes;
        cs->window_busy = busy;
        return;
    }
    int64_t waited = (now - cs->window_start) - (busy - cs->window_busy);
    int64_t window = (int64_t)(o->body_rate_window * 1e9);
    if (waited < window)
        return;
    double rate = (double)(bytes - cs->window_bytes) / ((double)waited / 1e9);
    if (rate < (double)o->body_min_rate) {
        cut(cs, 408, "The request body arrived at %.0f bytes/s, below the minimum of %lld", rate,
            (long long)o->body_min_rate);
        return;
    }
    cs->window_start = now;
    cs->window_bytes = bytes;
    cs->window_busy = busy;
}

static void *watchdog_main(void *arg)
{
    http_server *srv = arg;
    pthread_mutex_lock(&srv->lock);
    while (!srv->stopping) {
        int64_t now = now_ns();
        for (conn_state *cs = srv->conns; cs; cs = cs->next)
            check_connection(srv, cs, now);
        struct timespec until = util_deadline_monotonic(WATCHDOG_MS / 1000.0);
        pthread_cond_timedwait(&srv->wake, &srv->lock, &until);
    }
    pthread_mutex_unlock(&srv->lock);
    return NULL;
}

/* ---- the daemon ---- */

/* MHD's own format strings; the attribute tells the compiler that fmt is one. */
__attribute__((format(printf, 2, 0))) static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[512], esc[1024];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t len = strlen(line);
    while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        line[--len] = '\0';
    log_debug("http: %s", log_escape(line, esc, sizeof esc)); /* may quote the client's bytes */
}

http_server *http_server_start(const http_server_options *opts, cu_error *err)
{
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *ai = NULL;
    int gai = getaddrinfo(opts->host, NULL, &hints, &ai);
    if (gai != 0) {
        cu_fail(err, CU_EINVAL, "SERVER_HOST: cannot resolve \"%s\": %s", opts->host,
                gai_strerror(gai));
        return NULL;
    }
    struct sockaddr_storage addr;
    memset(&addr, 0, sizeof addr);
    memcpy(&addr, ai->ai_addr, ai->ai_addrlen);
    bool v6 = ai->ai_family == AF_INET6;
    freeaddrinfo(ai);
    if (v6)
        ((struct sockaddr_in6 *)&addr)->sin6_port = htons((uint16_t)opts->port);
    else
        ((struct sockaddr_in *)&addr)->sin_port = htons((uint16_t)opts->port);

    http_server *srv = calloc(1, sizeof *srv);
    if (!srv) {
        cu_fail_oom(err);
        return NULL;
    }
    srv->opts = *opts;
    pthread_mutex_init(&srv->lock, NULL);
    util_cond_init_monotonic(&srv->wake);
    unsigned char rnd[4];
    util_random_bytes(rnd, sizeof rnd);
    util_hex(rnd, sizeof rnd, srv->id_prefix);

    double backstop = opts->keepalive_timeout;
    if (opts->header_timeout > backstop)
        backstop = opts->header_timeout;
    if (opts->body_rate_window > backstop)
        backstop = opts->body_rate_window;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_POLL | MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0);
    struct MHD_OptionItem ip_limit[] = {
        {MHD_OPTION_PER_IP_CONNECTION_LIMIT, opts->max_connections_per_ip, NULL},
        {MHD_OPTION_END, 0, NULL}};
    srv->daemon = MHD_start_daemon(
        flags, (uint16_t)opts->port, NULL, NULL, on_access, srv,
        /* The logger must come first to catch messages about the options after it. */
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_SOCK_ADDR, &addr,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)(opts->max_connections + OVERFLOW_CONNECTIONS),
        /* A backstop only: the watchdog enforces the real limits, in finer ways. */
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)backstop + 10, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)CONN_MEMORY, MHD_OPTION_THREAD_STACK_SIZE, (size_t)(1024 * 1024),
        MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)1024, MHD_OPTION_NOTIFY_COMPLETED, on_completed,
        srv, MHD_OPTION_NOTIFY_CONNECTION, on_connection, srv, MHD_OPTION_ARRAY,
        opts->max_connections_per_ip > 0 ? ip_limit : ip_limit + 1, MHD_OPTION_END);
    if (!srv->daemon) {
        cu_fail(err, CU_EIO, "cannot listen on %s:%d (is the port in use?)", opts->host,
                opts->port);
        http_server_stop(srv);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = info ? info->port : opts->port;
    if (pthread_create(&srv->watchdog, NULL, watchdog_main, srv) != 0) {
        cu_fail(err, CU_EIO, "cannot start the connection watchdog");
        http_server_stop(srv);
        return NULL;
    }
    srv->watchdog_started = true;
    return srv;
}

int http_server_port(const http_server *srv)
{
    return srv->port;
}

int http_server_connections(http_server *srv)
{
    pthread_mutex_lock(&srv->lock);
    int n = srv->nconns;
    pthread_mutex_unlock(&srv->lock);
    return n;
}

void http_server_stop(http_server *srv)
{
    if (!srv)
        return;
    if (srv->watchdog_started) {
        pthread_mutex_lock(&srv->lock);
        srv->stopping = true;
        pthread_cond_signal(&srv->wake);
        pthread_mutex_unlock(&srv->lock);
        pthread_join(srv->watchdog, NULL);
    }
    if (srv->daemon)
        MHD_stop_daemon(srv->daemon);
    pthread_mutex_destroy(&srv->lock);
    pthread_cond_destroy(&srv->wake);
    free(srv);
}
