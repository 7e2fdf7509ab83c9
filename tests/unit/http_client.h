/* http_client.h - a raw HTTP/1.1 client for the HTTP layer's unit tests: connections from a
 * chosen loopback address, requests written byte for byte, replies read with a deadline.
 *
 * Include after <cmocka.h> and jansson; everything is static inline so that each test
 * executable keeps only what it uses. */
#ifndef CU_UNIT_HTTP_CLIENT_H
#define CU_UNIT_HTTP_CLIENT_H

#include "base/util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

static inline int conn_open(int port, const char *src)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    if (src) {
        struct sockaddr_in from = {.sin_family = AF_INET};
        inet_pton(AF_INET, src, &from.sin_addr);
        assert_int_equal(bind(fd, (struct sockaddr *)&from, sizeof from), 0);
    }
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&to, sizeof to), 0);
    return fd;
}

/* Sends all of buf; returns false when the peer closed (a refusal may do that). */
static inline bool send_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        p += n;
        len -= (size_t)n;
    }
    return true;
}

typedef struct {
    int status;
    char headers[8192];
    char *body;
    size_t body_len;
    bool closed; /* the server closed the connection after the reply */
} reply;

static inline const char *reply_header(const reply *r, const char *name)
{
    static char value[512];
    size_t nlen = strlen(name);
    for (const char *p = strstr(r->headers, "\r\n"); p; p = strstr(p + 2, "\r\n")) {
        if (!strncasecmp(p + 2, name, nlen) && p[2 + nlen] == ':') {
            const char *v = p + 3 + nlen;
            while (*v == ' ')
                v++;
            size_t vlen = strcspn(v, "\r");
            snprintf(value, sizeof value, "%.*s", (int)vlen, v);
            return value;
        }
    }
    return NULL;
}

/* Reads one reply (headers, then a Content-Length or chunked body; none for head). Returns
 * false on a timeout or when the connection ends before a reply. */
static inline bool read_reply(int fd, int timeout_ms, bool head, reply *r)
{
    memset(r, 0, sizeof *r);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    char *body_start = NULL;
    int64_t want = -1;
    bool chunked = false;
    int64_t deadline = (int64_t)(util_monotonic() * 1000) + timeout_ms;
    for (;;) {
        if (body_start) {
            size_t have = len - (size_t)(body_start - buf);
            if (want >= 0 && (int64_t)have >= want)
                break;
            if (chunked && have >= 5 && !memcmp(buf + len - 5, "0\r\n\r\n", 5))
                break;
        }
        int64_t left = deadline - (int64_t)(util_monotonic() * 1000);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, (int)left) <= 0) {
            free(buf);
            return false;
        }
        if (len + 65536 > cap) {
            cap *= 2;
            size_t off = body_start ? (size_t)(body_start - buf) : 0;
            buf = realloc(buf, cap);
            if (body_start)
                body_start = buf + off;
        }
        ssize_t n = recv(fd, buf + len, cap - len - 1, 0);
        if (n <= 0) {
            r->closed = true;
            if (body_start && want < 0 && !chunked)
                break; /* a body delimited by the end of the connection */
            if (!body_start) {
                free(buf);
                return false;
            }
            break;
        }
        len += (size_t)n;
        buf[len] = '\0';
        if (!body_start) {
            char *end = strstr(buf, "\r\n\r\n");
            if (!end)
                continue;
            size_t hlen = (size_t)(end - buf) + 2;
            memcpy(r->headers, buf, hlen < sizeof r->headers - 1 ? hlen : sizeof r->headers - 1);
            r->status = atoi(buf + 9);
            body_start = end + 4;
            const char *cl = reply_header(r, "Content-Length");
            const char *te = reply_header(r, "Transfer-Encoding");
            chunked = te && strstr(te, "chunked");
            want = head || r->status == 204 || r->status == 304 ? 0 : cl ? atoll(cl) : -1;
            if (r->status == 100) { /* an interim reply: start over after it */
                size_t rest = len - (size_t)(body_start - buf);
                memmove(buf, body_start, rest);
                len = rest;
                buf[len] = '\0';
                body_start = NULL;
                continue;
            }
        }
    }
    size_t have = len - (size_t)(body_start - buf);
    if (chunked) { /* decode in place */
        char *out = body_start, *in = body_start;
        size_t total = 0;
        for (;;) {
            size_t sz = (size_t)strtoul(in, NULL, 16);
            in = strstr(in, "\r\n") + 2;
            if (sz == 0)
                break;
            memmove(out + total, in, sz);
            total += sz;
            in += sz + 2;
        }
        have = total;
    }
    r->body = malloc(have + 1);
    memcpy(r->body, body_start, have);
    r->body[have] = '\0';
    r->body_len = have;
    free(buf);
    return true;
}

static inline void reply_free(reply *r)
{
    free(r->body);
    r->body = NULL;
}

/* The JSON error body every refusal must have. */
static inline void assert_json_error(const reply *r, int status)
{
    if (r->status != status)
        print_error("status %d, expected %d: %s %s\n", r->status, status, r->headers,
                    r->body ? r->body : "");
    assert_int_equal(r->status, status);
    const char *ct = reply_header(r, "Content-Type");
    assert_non_null(ct);
    assert_string_equal(ct, "application/json");
    json_error_t je;
    json_t *doc = json_loads(r->body, 0, &je);
    assert_non_null(doc);
    assert_true(json_is_string(json_object_get(doc, "error")));
    assert_int_equal(json_integer_value(json_object_get(doc, "status")), status);
    assert_int_equal(json_object_size(doc), 2);
    json_decref(doc);
}

static inline void request(int fd, const char *text)
{
    assert_true(send_all(fd, text, strlen(text)));
}

#endif
