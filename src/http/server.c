/* server.c - libmicrohttpd glue: routing to handlers, body modes, replies. */
#include "http/server.h"

#include "base/log.h"
#include "base/util.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Body bytes we keep reading (and dropping) after deciding to refuse a request, so the
 * client can read our answer; past this we close the connection instead. */
#define DISCARD_MAX (1024 * 1024)
#define MAX_REPLY_HEADERS 8

struct http_server {
    struct MHD_Daemon *daemon;
    const http_handler *handlers;
    size_t nhandlers;
    int port;
};

typedef enum { BODY_NONE, BODY_JSON, BODY_STREAM } body_mode;

struct http_request {
    http_server *srv;
    struct MHD_Connection *conn;
    const char *method;
    const char *path;
    double started;
    body_mode mode;
    http_json_fn json_fn;
    void *json_ctx;
    char *json_buf;
    size_t json_len;
    const http_stream_ops *stream;
    void *stream_state;
    bool stream_open; /* begin took resources that end or abort must release */
    bool failed;      /* the body is being dropped; fail_err is the answer */
    cu_error fail_err;
    size_t discarded;
    bool replied;
    int status;
    int nheaders;
    char *header_names[MAX_REPLY_HEADERS];
    char *header_values[MAX_REPLY_HEADERS];
};

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

const char *http_header(const http_request *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

int64_t http_content_length(const http_request *req)
{
    const char *v = http_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH);
    int64_t n;
    if (!v || util_parse_i64(v, &n) != 0 || n < 0)
        return -1;
    return n;
}

void http_want_json(http_request *req, http_json_fn fn, void *ctx)
{
    req->mode = BODY_JSON;
    req->json_fn = fn;
    req->json_ctx = ctx;
}

void http_want_stream(http_request *req, const http_stream_ops *ops, void *state)
{
    req->mode = BODY_STREAM;
    req->stream = ops;
    req->stream_state = state;
    req->stream_open = true;
}

void http_set_reply_header(http_request *req, const char *name, const char *value)
{
    if (req->nheaders == MAX_REPLY_HEADERS)
        return;
    req->header_names[req->nheaders] = strdup(name);
    req->header_values[req->nheaders] = strdup(value);
    req->nheaders++;
}

static void send_text(http_request *req, int status, char *text)
{
    if (req->replied) {
        free(text);
        return;
    }
    size_t len = text ? strlen(text) : 0;
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, text ? text : (char *)"", MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    for (int i = 0; i < req->nheaders; i++)
        MHD_add_response_header(resp, req->header_names[i], req->header_values[i]);
    if (MHD_queue_response(req->conn, (unsigned)status, resp) == MHD_YES) {
        req->replied = true;
        req->status = status;
    }
    MHD_destroy_response(resp);
}

void http_reply_json(http_request *req, int status, json_t *obj)
{
    char *text = obj ? json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(10)) : NULL;
    json_decref(obj);
    if (!text) {
        http_reply_error(req, 500, "Out of memory");
        return;
    }
    send_text(req, status, text);
}

void http_reply_error(http_request *req, int status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_msg(status >= 500 ? LOG_ERROR : LOG_WARN, "%s %s -> %d %s", req->method, req->path, status,
            msg);
    json_t *obj = json_pack("{s:s, s:i}", "error", msg, "status", status);
    char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    send_text(req, status, text);
}

void http_reply_cu_error(http_request *req, const cu_error *err)
{
    http_reply_error(req, http_status_for(err->code), "%s", err->msg);
}

/* Answers a request refused halfway through its body: now if libmicrohttpd lets us,
 * otherwise once the rest of the body has been read. */
static void fail_body(http_request *req, const cu_error *err)
{
    req->failed = true;
    req->fail_err = *err;
    if (req->stream_open) {
        req->stream_open = false;
        req->stream->abort(req->stream_state);
    }
}

static void begin_request(http_request *req)
{
    for (size_t i = 0; i < req->srv->nhandlers; i++) {
        const http_handler *h = &req->srv->handlers[i];
        if (h->begin(h->ctx, req))
            return;
    }
    http_reply_error(req, 404, "Not found: %s", req->path);
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
        req->srv = cls;
        req->conn = conn;
        req->method = method;
        req->path = url;
        req->started = util_now();
        *con_cls = req;
        begin_request(req);
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t len = *upload_data_size;
        *upload_data_size = 0;
        if (req->replied || req->failed || req->mode == BODY_NONE) {
            req->discarded += len;
            return req->discarded > DISCARD_MAX ? MHD_NO : MHD_YES;
        }
        cu_error err;
        if (req->mode == BODY_JSON) {
            if (req->json_len + len > HTTP_JSON_BODY_MAX) {
                cu_fail(&err, CU_ETOOLARGE, "Request body is over %d bytes", HTTP_JSON_BODY_MAX);
                fail_body(req, &err);
                return MHD_YES;
            }
            char *grown = realloc(req->json_buf, req->json_len + len + 1);
            if (!grown)
                return MHD_NO;
            req->json_buf = grown;
            memcpy(req->json_buf + req->json_len, upload_data, len);
            req->json_len += len;
            req->json_buf[req->json_len] = '\0';
        } else if (req->stream->data(req->stream_state, upload_data, len, &err) != 0) {
            fail_body(req, &err);
        }
        return MHD_YES;
    }
    /* The whole request is in. */
    if (req->replied)
        return MHD_YES;
    if (req->failed) {
        http_reply_cu_error(req, &req->fail_err);
    } else if (req->mode == BODY_JSON) {
        req->json_fn(req->json_ctx, req, req->json_buf ? req->json_buf : "", req->json_len);
    } else if (req->mode == BODY_STREAM) {
        req->stream_open = false;
        req->stream->end(req->stream_state, req);
    }
    if (!req->replied)
        http_reply_error(req, 500, "No reply was produced");
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls, (void)conn;
    http_request *req = *con_cls;
    if (!req)
        return;
    if (req->stream_open) /* the client went away mid-body */
        req->stream->abort(req->stream_state);
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && !req->replied)
        log_info("%s %s: connection closed before the request was complete", req->method,
                 req->path);
    else
        log_debug("%s %s -> %d (%.1f ms)", req->method, req->path, req->status,
                  (util_now() - req->started) * 1000);
    for (int i = 0; i < req->nheaders; i++) {
        free(req->header_names[i]);
        free(req->header_values[i]);
    }
    free(req->json_buf);
    free(req);
    *con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t len = strlen(line);
    while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        line[--len] = '\0';
    log_debug("http: %s", line);
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
        cu_fail(err, CU_EIO, "Out of memory");
        return NULL;
    }
    srv->handlers = opts->handlers;
    srv->nhandlers = opts->nhandlers;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_POLL | MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0);
    srv->daemon = MHD_start_daemon(
        flags, (uint16_t)opts->port, NULL, NULL, on_access, srv,
        /* The logger must come first to catch messages about the options after it. */
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_SOCK_ADDR, &addr,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)opts->max_connections, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)120,
        /* The read buffer bounds memory per connection and sets the size of the pieces a
         * part body is written in. */
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(256 * 1024), MHD_OPTION_THREAD_STACK_SIZE,
        (size_t)(1024 * 1024), MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv, MHD_OPTION_END);
    if (!srv->daemon) {
        cu_fail(err, CU_EIO, "cannot listen on %s:%d (is the port in use?)", opts->host,
                opts->port);
        free(srv);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = info ? info->port : opts->port;
    return srv;
}

int http_server_port(const http_server *srv)
{
    return srv->port;
}

void http_server_stop(http_server *srv)
{
    if (!srv)
        return;
    MHD_stop_daemon(srv->daemon);
    free(srv);
}
