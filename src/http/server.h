/* server.h - the HTTP front: connections, requests, filters, bodies and replies.
 *
 * A request's life (h2o and nginx are the models):
 *   1. headers in: the client address is settled (the peer, or what a trusted proxy says:
 *      http/trust.h); X-HTTP-Method-Override is applied (when enabled); the server decides what it would refuse by itself (ambiguous
 *      framing 400, too many connections 503, 404, 405 with Allow, a Content-Length over
 *      the route's limit 413) and the router picks the route (HEAD from GET, OPTIONS for
 *      known paths);
 *   2. filters run in order and may answer (CORS, rate limit, authentication, ...). Every
 *      request reaches them, also one the server refuses by itself: then http_route_of is
 *      NULL and http_refusal says the status the server answers with unless a filter
 *      answers first (so a rate limit counts a scanner's 404s);
 *   3. the handler runs: for STREAM and MULTIPART routes at once, on the headers (it may
 *      refuse before any body byte, or take the body piece by piece); for NONE and JSON
 *      routes once the (bounded) body is in;
 *   4. the reply goes out: JSON, text, empty, a stream from a reader callback, or a file
 *      range from a descriptor (sendfile);
 *   5. done: one access log line (with the request id and, for errors, the message: every
 *      refusal is logged exactly once, here) and the filters' done hooks.
 * A reply decided before the body was read is sent at once and the connection closed
 * after a lingering read of what the client still sends, so the client receives it.
 *
 * Threads: one per connection (libmicrohttpd's thread-per-connection mode), so a request
 * that blocks on fsync or a slow backend never holds up other clients. A watchdog thread
 * enforces what a client controls: the time to send a header block, an idle connection's
 * lifetime, a body's minimum rate, and connections per address and in all. */
#ifndef CU_HTTP_SERVER_H
#define CU_HTTP_SERVER_H

#include "base/error.h"
#include "base/netaddr.h"
#include "http/trust.h"
#include "http/router.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct http_server http_server;

/* What a finished request did, for done hooks. */
typedef struct {
    int status;        /* 0 when no reply was sent (the client went away) */
    int64_t bytes_in;  /* body bytes received */
    int64_t bytes_out; /* body bytes of the reply (as declared; streams: as sent) */
    double seconds;    /* from the headers' arrival to the end */
    bool completed;    /* the whole exchange took place */
} http_request_stats;

typedef struct {
    const char *name;
    /* Before the handler, for every request until one filter answers; returns true when it
     * answered. req's route is NULL for OPTIONS on a known path (answered 204 with Allow by
     * the server if no filter does) and for every request the server refuses by itself
     * (http_refusal non-zero: the server sends that refusal if no filter answers). */
    bool (*request)(void *ctx, http_request *req);
    /* Just before any reply is queued (also errors and early refusals): may add headers. */
    void (*reply)(void *ctx, http_request *req, int status);
    /* After every request. */
    void (*done)(void *ctx, const http_request *req, const http_request_stats *stats);
    void *ctx;
} http_filter;

typedef struct {
    const char *host;
    int port;
    const http_router *router;
    const http_filter *filters;
    size_t nfilters;
    const http_trust *trust;    /* proxies whose forwarding headers name the client; NULL: none */
    int max_connections;        /* beyond it: 503 and close */
    int max_connections_per_ip; /* beyond it: refused at accept; 0: no limit */
    double header_timeout;      /* seconds for a whole header block */
    double keepalive_timeout;   /* seconds an idle connection lives */
    int64_t body_min_rate;      /* bytes/s over body_rate_window; 0: off */
    double body_rate_window;
    /* A POST with X-HTTP-Method-Override: PATCH (DELETE, PUT, HEAD, GET) is routed, filtered,
     * handled and logged as that method, for clients behind proxies that pass only GET and
     * POST (tus asks servers to honour it). Applied before routing; another value is 400. */
    bool method_override;
} http_server_options;

/* Starts listening; returns NULL with a message in err when it cannot. */
http_server *http_server_start(const http_server_options *opts, cu_error *err);
/* The port actually bound (useful with port 0). */
int http_server_port(const http_server *srv);
/* Connections open now (for tests and metrics). */
int http_server_connections(http_server *srv);
void http_server_stop(http_server *srv);

/* ---- the request ---- */

const char *http_method(const http_request *req);
const char *http_path(const http_request *req);
/* The matched route (NULL for OPTIONS, and for a request the server refuses by itself) and
 * its parameters. */
const http_route *http_route_of(const http_request *req);
/* The status the server answers this request with by itself (400 ambiguous framing, 503
 * too many connections, 404, 405, 413), or 0 when it goes to its route (or is OPTIONS on a
 * known path). For filters: the refusal is sent unless one of them answers first. */
int http_refusal(const http_request *req);
/* The methods the request's path takes ("GET, HEAD, OPTIONS"), "" for an unknown path. */
const char *http_allowed_methods(const http_request *req);
const char *http_param(const http_request *req, const char *name);
/* A request header, or NULL. */
const char *http_header(const http_request *req, const char *name);
/* A query string argument (decoded), or NULL. */
const char *http_query(const http_request *req, const char *name);
/* The declared Content-Length, or -1 when none was sent (chunked or no body). */
int64_t http_content_length(const http_request *req);
/* The client's address ("192.0.2.1", "2001:db8::1"), as the socket has it. */
const char *http_peer(const http_request *req);
/* The client's address: the peer's, or the one a trusted proxy forwarded (TRUST_PROXY;
 * http/trust.h says how it is read), in canonical text (an IPv4-mapped peer as IPv4);
 * "" when the peer is unknown. */
const char *http_client_addr(const http_request *req);
/* The same as an address (family 0 when unknown), e.g. to key a rate limit on. */
const netaddr *http_client_netaddr(const http_request *req);
/* Whether the peer is a trusted proxy, so that its X-Forwarded-Proto and X-Forwarded-Host
 * may be believed (to build absolute URLs). */
bool http_forwarded_trusted(const http_request *req);
/* "scheme://host[:port]" as the client addressed this server (its Host header), for the
 * absolute URLs a reply hands out, into out (cap bytes). Every such URL is built from it, so
 * that what a trusted proxy in front says (X-Forwarded-Proto/-Host, see TRUST_PROXY) is
 * honoured in one place. Returns
 * 0, or CU_EINVAL when the request names no usable host. */
int http_origin(const http_request *req, char *out, size_t cap);
/* This request's id (the client's X-Request-Id when it sent a sane one); replies carry it. */
const char *http_request_id(const http_request *req);
/* True for HEAD (answered by the GET route; the reply's body is not sent). */
bool http_is_head(const http_request *req);
/* Who made the request, as authentication decided ("key", a token id), or NULL. */
const char *http_principal(const http_request *req);
/* Records who made the request (copied); returns 0 or CU_ENOMEM. */
int http_set_principal(http_request *req, const char *principal);

/* ---- bodies ---- */

/* A JSON route's body (NUL-terminated; "" when none). */
const char *http_body(const http_request *req, size_t *len);

/* A body stream: data for each piece (return 0, or a cu_code with err filled to answer with
 * that error: the rest of the body is then read and dropped, and the error sent at the end),
 * end once the body is complete (must reply), abort when the request ends without end
 * (client gone, or data failed) to release what the handler took. */
typedef struct {
    int (*data)(void *state, const char *buf, size_t len, cu_error *err);
    void (*end)(void *state, http_request *req);
    void (*abort)(void *state);
} http_stream_ops;

void http_want_stream(http_request *req, const http_stream_ops *ops, void *state);

/* multipart/form-data, parsed as it streams: field starts each part (name, and for files the
 * filename and content type, else NULL), data carries its bytes in pieces (a file is never
 * held whole), end and abort as for streams. */
typedef struct {
    int (*field)(void *state, const char *name, const char *filename, const char *content_type,
                 cu_error *err);
    int (*data)(void *state, const char *buf, size_t len, cu_error *err);
    void (*end)(void *state, http_request *req);
    void (*abort)(void *state);
} http_multipart_ops;

/* Takes the body as multipart/form-data (415 when it is not). Returns 0, or replies with the
 * error and returns it. */
int http_want_multipart(http_request *req, const http_multipart_ops *ops, void *state);

/* ---- replies (exactly one per request) ---- */

/* Adds a header to the reply (before it is sent). Returns 0, or CU_ENOMEM (logged, and the
 * reply becomes a 500: a header is never dropped silently). */
int http_add_header(http_request *req, const char *name, const char *value);
/* Replies with obj (the reference is taken), Content-Type application/json. */
void http_reply_json(http_request *req, int status, json_t *obj);
/* Replies {"error": msg, "status": status}; the access log line carries the message. Bytes
 * of msg that are not UTF-8 (a client's, quoted) are sent as '?'. */
void http_reply_error(http_request *req, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Replies with the status that err's code stands for. */
void http_reply_cu_error(http_request *req, const cu_error *err);
/* Replies with len bytes of text (copied). */
void http_reply_text(http_request *req, int status, const char *content_type, const char *text,
                     size_t len);
/* Replies with no body (204, 304, a HEAD-style answer with headers only). */
void http_reply_empty(http_request *req, int status);

/* Produces the reply's body: up to cap bytes at pos into buf; returns the count, 0 at the
 * end (a body of unknown length), or -1 to cut the reply short (the client sees a broken
 * transfer, never a wrong length). */
typedef ssize_t (*http_body_reader)(void *state, uint64_t pos, char *buf, size_t cap);

/* Replies with a body from reader: length bytes, or -1 when unknown (chunked encoding).
 * free_state (may be NULL) is called once the reply is done with state, sent or not. */
void http_reply_stream(http_request *req, int status, const char *content_type, int64_t length,
                       http_body_reader reader, void *state, void (*free_state)(void *));
/* Replies with length bytes of fd from offset, sent with sendfile where the system can.
 * Takes the descriptor (closed when the reply is done, sent or not). */
void http_reply_fd(http_request *req, int status, const char *content_type, int fd, int64_t offset,
                   int64_t length);

/* The HTTP status for a cu_code (the error table's default). */
int http_status_for(int code);

#endif
