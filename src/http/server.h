/* server.h - the HTTP front: libmicrohttpd, request bodies, JSON replies and errors.
 *
 * Protocol modules (the seed API now; tus and the files API later) register a handler. The
 * server offers each request to the handlers in turn, once its headers are in; the one that
 * takes it either replies at once (an error found from the headers costs no body) or asks
 * for the body, as one small JSON document or as a stream of pieces.
 *
 * Threads: one per connection (libmicrohttpd's thread-per-connection mode), so a part that
 * blocks on fsync or a slow backend never holds up other clients. */
#ifndef CU_HTTP_SERVER_H
#define CU_HTTP_SERVER_H

#include "base/error.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct http_server http_server;
typedef struct http_request http_request;

/* Largest JSON request body accepted. */
#define HTTP_JSON_BODY_MAX (64 * 1024)

typedef struct {
    /* Returns true when it takes the request (then it must reply or ask for a body). */
    bool (*begin)(void *ctx, http_request *req);
    void *ctx;
} http_handler;

/* Called with the whole JSON body text (NUL-terminated, may be empty). */
typedef void (*http_json_fn)(void *ctx, http_request *req, const char *body, size_t len);

/* A body stream: data for each piece (return 0, or a cu_code with err filled to answer with
 * that error), end once the body is complete (must reply), abort when the request ends
 * without end (client gone, or data failed) to release what begin took. */
typedef struct {
    int (*data)(void *state, const char *buf, size_t len, cu_error *err);
    void (*end)(void *state, http_request *req);
    void (*abort)(void *state);
} http_stream_ops;

typedef struct {
    const char *host;
    int port;
    int max_connections;
    const http_handler *handlers;
    size_t nhandlers;
} http_server_options;

/* Starts listening; returns NULL with a message in err when it cannot. */
http_server *http_server_start(const http_server_options *opts, cu_error *err);
/* The port actually bound (useful with port 0). */
int http_server_port(const http_server *srv);
void http_server_stop(http_server *srv);

const char *http_method(const http_request *req);
const char *http_path(const http_request *req);
/* A request header, or NULL. */
const char *http_header(const http_request *req, const char *name);
/* The declared Content-Length, or -1 when none was sent (chunked or no body). */
int64_t http_content_length(const http_request *req);

void http_want_json(http_request *req, http_json_fn fn, void *ctx);
void http_want_stream(http_request *req, const http_stream_ops *ops, void *state);

/* Replies with obj (the reference is taken). */
void http_reply_json(http_request *req, int status, json_t *obj);
/* Replies {"error": msg, "status": status} and logs it once. */
void http_reply_error(http_request *req, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Replies with the status that err's code stands for. */
void http_reply_cu_error(http_request *req, const cu_error *err);
/* Adds a header to the reply about to be sent (call before the reply). */
void http_set_reply_header(http_request *req, const char *name, const char *value);

/* The HTTP status for a cu_code. */
int http_status_for(int code);

#endif
