/* s3.c - S3 (AWS, MinIO, R2, Ceph, any S3-compatible store) as the blob store.
 *
 * One upload is one S3 multipart upload at the final key: init is CreateMultipartUpload,
 * part n is UploadPart number n+1, complete is one CompleteMultipartUpload (no copy, no
 * local assembly: the same time for 1 GB as for 100 GB), cancel and expiry are
 * AbortMultipartUpload. A part's body is spooled to an anonymous file in TEMP_STORAGE_PATH
 * as it streams in (memory stays bounded, and a failed UploadPart can be retried from it),
 * then sent with its SHA-256 as the signed payload hash, so S3 checks every byte; the
 * client's reply waits for S3's answer. Requests are signed by libcurl (CURLOPT_AWS_SIGV4).
 * Transient failures (connection errors, timeouts, 5xx, 429) are retried with backoff.
 *
 * Connections are kept: a request runs on a pooled pair of curl handles (a multi handle and
 * its one easy handle), and the multi handle's connection cache keeps the connection open
 * for the next request that takes the pair, from whichever thread. A 1 GB upload in 5 MiB
 * parts costs a few TCP (and TLS) handshakes instead of 200 or more. DNS answers and TLS
 * sessions are shared by all pairs through one CURLSH with a lock per kind of data; the
 * connection cache is not shared that way because libcurl does not support a shared
 * connection cache between concurrent threads (CURLSHOPT_SHARE), so each pair has its own
 * and serves one thread at a time. A pool rather than a handle per thread: there is one
 * thread per HTTP connection, so threads come and go with clients while the pool outlives
 * them, and storage_destroy can free it whole. */
#include "storage/storage.h"

#include "base/log.h"
#include "base/util.h"

#include <assert.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define S3_TRIES 4
#define S3_BODY_MAX (64 * 1024)
#define S3_ETAG_MAX (64 * 1024) /* a longer ETag header is not kept (no S3 sends one) */
#define S3_POOL_MAX 32          /* idle handle pairs (and so open connections) kept */
#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

/* A multi handle and its one easy handle: the multi handle's connection cache is what keeps
 * the connection to S3 open between requests. */
typedef struct s3_conn {
    CURLM *multi;
    CURL *easy;
    struct s3_conn *next; /* in the pool */
} s3_conn;

typedef struct {
    storage_t base;
    char *base_url; /* path-style "<endpoint>/<bucket>" or
                       "https://<bucket>.s3.<region>.amazonaws.com" */
    char *endpoint; /* for messages */
    char *bucket;
    char *prefix;       /* "" or "some/prefix/" */
    char *userpwd;      /* "<access key>:<secret>" */
    char *token_header; /* "x-amz-security-token: ..." or NULL */
    char sigv4[128];
    char *spool_dir;
    CURLSH *share; /* DNS cache and TLS sessions of every pair */
    pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];
    pthread_mutex_t pool_lock; /* guards pool and pooled */
    s3_conn *pool;             /* idle pairs */
    int pooled;
} s3_storage;

typedef struct {
    struct storage_writer base;
    s3_storage *s3;
    char *url; /* UploadPart URL */
    int part;  /* 0-based: S3's part number part + 1 */
    int fd;    /* the spool */
    int64_t length, written;
} s3_writer;

static const struct storage_writer_ops s3_writer_ops;

/* ---- connections ---- */

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *ctx)
{
    (void)h, (void)access;
    s3_storage *s = ctx;
    assert(data >= 0 && data < CURL_LOCK_DATA_LAST);
    pthread_mutex_lock(&s->share_locks[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *ctx)
{
    (void)h;
    s3_storage *s = ctx;
    assert(data >= 0 && data < CURL_LOCK_DATA_LAST);
    pthread_mutex_unlock(&s->share_locks[data]);
}

static void conn_free(s3_conn *c)
{
    if (!c)
        return;
    if (c->easy)
        curl_easy_cleanup(c->easy);
    if (c->multi)
        curl_multi_cleanup(c->multi);
    free(c);
}

/* A pair ready for a request, with every option at our defaults: an idle one from the pool
 * (its connection to S3 may still be open) or a new one. NULL when out of memory. */
static s3_conn *conn_take(s3_storage *s)
{
    pthread_mutex_lock(&s->pool_lock);
    s3_conn *c = s->pool;
    if (c) {
        s->pool = c->next;
        s->pooled--;
    }
    pthread_mutex_unlock(&s->pool_lock);
    if (c) {
        curl_easy_reset(c->easy); /* keeps the connection cache, drops every option */
    } else if (!(c = calloc(1, sizeof *c)) || !(c->multi = curl_multi_init()) ||
               !(c->easy = curl_easy_init())) {
        conn_free(c);
        return NULL;
    }
    c->next = NULL;
    CURL *h = c->easy;
    curl_easy_setopt(h, CURLOPT_SHARE, s->share);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_AWS_SIGV4, s->sigv4);
    curl_easy_setopt(h, CURLOPT_USERPWD, s->userpwd);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
    return c;
}

/* Returns a pair whose transfer is over (or removed) to the pool, connection and all. */
static void conn_give(s3_storage *s, s3_conn *c)
{
    pthread_mutex_lock(&s->pool_lock);
    bool keep = s->pooled < S3_POOL_MAX;
    if (keep) {
        c->next = s->pool;
        s->pool = c;
        s->pooled++;
    }
    pthread_mutex_unlock(&s->pool_lock);
    if (!keep)
        conn_free(c);
}

/* The result of the pair's finished transfer (CURLE_OK when it has not finished). */
static CURLcode conn_result(s3_conn *c)
{
    CURLcode res = CURLE_OK;
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(c->multi, &left)))
        if (m->msg == CURLMSG_DONE && m->easy_handle == c->easy)
            res = m->data.result;
    return res;
}

/* Runs the pair's transfer to its end: curl_easy_perform, but on the pair's multi handle, so
 * that the connection stays in the pair's cache afterwards. */
static CURLcode conn_perform(s3_conn *c)
{
    if (curl_multi_add_handle(c->multi, c->easy) != CURLM_OK)
        return CURLE_OUT_OF_MEMORY;
    int running = 1;
    CURLMcode mc = CURLM_OK;
    while (mc == CURLM_OK && running) {
        mc = curl_multi_perform(c->multi, &running);
        if (mc == CURLM_OK && running)
            mc = curl_multi_poll(c->multi, NULL, 0, 1000, NULL);
    }
    CURLcode res = mc == CURLM_OK ? conn_result(c) : CURLE_RECV_ERROR;
    curl_multi_remove_handle(c->multi, c->easy);
    return res;
}

/* Waits `seconds` on the monotonic clock, to an absolute deadline: a change of the wall clock
 * cannot stretch or shorten the wait, and a signal (EINTR) resumes it instead of ending it. */
static void sleep_monotonic(double seconds)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    int64_t ns = until.tv_nsec + (int64_t)(seconds * 1e9);
    until.tv_sec += (time_t)(ns / 1000000000);
    until.tv_nsec = (long)(ns % 1000000000);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR)
        continue;
}

/* ---- requests ---- */

/* A response body's destination when it is file data (a ranged GET into a spool file). */
typedef struct {
    int fd;
    int64_t offset;  /* file offset of the body's first byte */
    int64_t written; /* body bytes written so far */
} s3_sink;

typedef struct {
    long status;
    bool headers_done; /* the final response's headers are all in */
    char body[S3_BODY_MAX + 1];
    size_t body_len;
    char *etag;             /* ETag header (malloc'ed, any length up to S3_ETAG_MAX), or NULL */
    int64_t content_length; /* Content-Length header, or -1 */
    int64_t last_modified;  /* Last-Modified header in seconds since the epoch, or -1 */
    s3_sink *sink;          /* where a 2xx body goes instead of body, or NULL */
    int sink_errno;         /* why writing to the sink failed, or 0 */
    char code[128];         /* S3's <Code>, or the curl error for transport failures */
    char message[256];      /* S3's <Message>, or the curl error text */
} s3_reply;

typedef struct {
    int fd;                 /* body from a file (pread), or -1 */
    const char *data;       /* body from memory */
    int64_t length, offset; /* of the body; offset = bytes sent so far */
} s3_body;

/* One request. */
typedef struct {
    const char *method;
    const char *url;
    s3_body *body;              /* or NULL: none */
    const char *payload_sha256; /* hex SHA-256 of the body (signed); NULL for no body */
    const char *extra[3];       /* further header lines, or NULL */
    s3_sink *sink;              /* where a 2xx response body goes, or NULL: into the reply */
} s3_req;

static void reply_reset(s3_reply *r)
{
    s3_sink *sink = r->sink;
    free(r->etag);
    memset(r, 0, sizeof *r);
    r->content_length = r->last_modified = -1;
    r->sink = sink;
}

static s3_reply *reply_new(void)
{
    s3_reply *r = calloc(1, sizeof *r);
    if (r)
        reply_reset(r);
    return r;
}

static void reply_free(s3_reply *r)
{
    if (r)
        free(r->etag);
    free(r);
}

/* pwrite()s all of len bytes at off. Returns 0 or an errno value. */
static int write_all_at(int fd, const void *buf, size_t len, int64_t off)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno;
        p += n;
        len -= (size_t)n;
        off += n;
    }
    return 0;
}

static size_t on_body(char *p, size_t size, size_t n, void *ctx)
{
    s3_reply *r = ctx;
    size_t len = size * n;
    if (r->sink && r->status >= 200 && r->status <= 299) {
        int err = write_all_at(r->sink->fd, p, len, r->sink->offset + r->sink->written);
        if (err) {
            r->sink_errno = err;
            return 0; /* curl ends the transfer with CURLE_WRITE_ERROR */
        }
        r->sink->written += (int64_t)len;
        return len;
    }
    size_t room = S3_BODY_MAX - r->body_len;
    memcpy(r->body + r->body_len, p, len < room ? len : room);
    r->body_len += len < room ? len : room;
    r->body[r->body_len] = '\0';
    return len;
}

/* When the header line p (len bytes) is `name: value`, its value without surrounding space. */
static bool header_value(const char *p, size_t len, const char *name, const char **v, size_t *vlen)
{
    size_t nlen = strlen(name);
    if (len <= nlen || strncasecmp(p, name, nlen) != 0 || p[nlen] != ':')
        return false;
    const char *a = p + nlen + 1, *end = p + len;
    while (a < end && (*a == ' ' || *a == '\t'))
        a++;
    while (end > a && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    *v = a;
    *vlen = (size_t)(end - a);
    return true;
}

static size_t on_header(char *p, size_t size, size_t n, void *ctx)
{
    s3_reply *r = ctx;
    size_t len = size * n;
    const char *v;
    size_t vlen;
    char text[128];
    if (len > 5 && !strncmp(p, "HTTP/", 5)) {
        /* A new response (after a 100 Continue): forget what the previous one said. */
        const char *sp = memchr(p, ' ', len);
        r->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        r->headers_done = false;
        free(r->etag);
        r->etag = NULL;
        r->content_length = r->last_modified = -1;
    } else if (len <= 2 && r->status >= 200) {
        r->headers_done = true; /* the empty line after the headers */
    } else if (header_value(p, len, "ETag", &v, &vlen)) {
        free(r->etag);
        r->etag = vlen <= S3_ETAG_MAX ? strndup(v, vlen) : NULL;
        if (vlen > S3_ETAG_MAX)
            log_warn("s3: ignoring an ETag header of %zu bytes", vlen);
    } else if (header_value(p, len, "Content-Length", &v, &vlen) && vlen < sizeof text) {
        snprintf(text, sizeof text, "%.*s", (int)vlen, v);
        int64_t cl;
        r->content_length = util_parse_i64(text, &cl) == 0 && cl >= 0 ? cl : -1;
    } else if (header_value(p, len, "Last-Modified", &v, &vlen) && vlen < sizeof text) {
        snprintf(text, sizeof text, "%.*s", (int)vlen, v);
        time_t t = curl_getdate(text, NULL);
        r->last_modified = t < 0 ? -1 : (int64_t)t;
    }
    return len;
}

static size_t on_read(char *p, size_t size, size_t n, void *ctx)
{
    s3_body *b = ctx;
    size_t want = size * n;
    if ((int64_t)want > b->length - b->offset)
        want = (size_t)(b->length - b->offset);
    if (want == 0)
        return 0;
    if (b->fd >= 0) {
        ssize_t got = pread(b->fd, p, want, b->offset);
        if (got <= 0)
            return CURL_READFUNC_ABORT;
        want = (size_t)got;
    } else {
        memcpy(p, b->data + b->offset, want);
    }
    b->offset += (int64_t)want;
    return want;
}

/* libcurl rewinds the body when it sends a request again on a fresh connection (the kept
 * one was closed by the server just as the request went out). */
static int on_seek(void *ctx, curl_off_t offset, int origin)
{
    s3_body *b = ctx;
    if (origin != SEEK_SET || offset < 0 || offset > b->length)
        return CURL_SEEKFUNC_CANTSEEK;
    b->offset = offset;
    return CURL_SEEKFUNC_OK;
}

/* The text of <tag>...</tag> in xml into out (entities &amp; &lt; &gt; &quot; &apos; decoded). */
static bool xml_value(const char *xml, const char *tag, char *out, size_t cap)
{
    char open[64], close[64];
    snprintf(open, sizeof open, "<%s>", tag);
    snprintf(close, sizeof close, "</%s>", tag);
    const char *a = strstr(xml, open);
    const char *b = a ? strstr(a, close) : NULL;
    if (!a || !b || cap == 0)
        return false;
    a += strlen(open);
    size_t o = 0;
    static const struct {
        const char *ent, ch;
    } ents[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
    while (a < b && o + 1 < cap) {
        char c = *a++;
        if (c == '&') {
            for (size_t i = 0; i < sizeof ents / sizeof *ents; i++) {
                size_t l = strlen(ents[i].ent);
                if ((size_t)(b - (a - 1)) >= l && !strncmp(a - 1, ents[i].ent, l)) {
                    c = ents[i].ch;
                    a += l - 1;
                    break;
                }
            }
        }
        out[o++] = c;
    }
    out[o] = '\0';
    return true;
}

static bool transient(CURLcode res, long status)
{
    if (res != CURLE_OK)
        return res == CURLE_COULDNT_CONNECT || res == CURLE_OPERATION_TIMEDOUT ||
               res == CURLE_SEND_ERROR || res == CURLE_RECV_ERROR || res == CURLE_GOT_NOTHING ||
               res == CURLE_PARTIAL_FILE || res == CURLE_COULDNT_RESOLVE_HOST;
    return status >= 500 || status == 429;
}

/* Seconds to wait before attempt + 1: 0.25, 0.5, 1, ... */
static double backoff_seconds(int attempt)
{
    return 0.25 * (double)(1 << (attempt - 1));
}

/* The request's header lines (curl_slist_free_all them), or NULL when out of memory. */
static struct curl_slist *request_headers(const s3_storage *s, const s3_req *q)
{
    char payload[128];
    snprintf(payload, sizeof payload, "x-amz-content-sha256: %s",
             q->payload_sha256 ? q->payload_sha256 : EMPTY_SHA256);
    /* "Expect:" without a value: no 100-continue round trip before each body. */
    const char *lines[] = {payload,     s->token_header, q->extra[0],
                           q->extra[1], q->extra[2],     "Expect:"};
    struct curl_slist *headers = NULL;
    for (size_t i = 0; i < sizeof lines / sizeof *lines; i++) {
        if (!lines[i])
            continue;
        struct curl_slist *next = curl_slist_append(headers, lines[i]);
        if (!next) {
            curl_slist_free_all(headers);
            return NULL;
        }
        headers = next;
    }
    return headers;
}

static void request_setup(CURL *h, const s3_req *q, s3_reply *r, struct curl_slist *headers)
{
    curl_easy_setopt(h, CURLOPT_URL, q->url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, q->method);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    if ((q->body && q->body->fd >= 0) || q->sink) {
        /* Part data that moves below 1 KiB/s for 60 s is stuck: retry it. */
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1024L);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 60L);
    } else {
        /* CompleteMultipartUpload (or UploadPartCopy) of a large object may take minutes on
         * AWS, which keeps the connection alive with a trickle of whitespace meanwhile. */
        curl_easy_setopt(h, CURLOPT_TIMEOUT, 900L);
    }
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
    if (!strcmp(q->method, "HEAD"))
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    if (q->body) {
        q->body->offset = 0;
        curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(h, CURLOPT_READDATA, q->body);
        curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, on_seek);
        curl_easy_setopt(h, CURLOPT_SEEKDATA, q->body);
        curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)q->body->length);
    }
}

/* One S3 request with retries (q->payload_sha256 is signed by SigV4: S3 rejects a body that
 * does not match it). Returns 0 when S3 answered 2xx; otherwise r says why. */
static int s3_request(s3_storage *s, const s3_req *q, s3_reply *r)
{
    r->sink = q->sink;
    for (int attempt = 1;; attempt++) {
        reply_reset(r);
        if (q->sink)
            q->sink->written = 0;
        s3_conn *c = conn_take(s);
        struct curl_slist *headers = c ? request_headers(s, q) : NULL;
        if (!headers) {
            if (c)
                conn_give(s, c);
            snprintf(r->code, sizeof r->code, "OutOfMemory");
            snprintf(r->message, sizeof r->message, "Out of memory");
            return -1;
        }
        request_setup(c->easy, q, r, headers);
        CURLcode res = conn_perform(c);
        curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &r->status);
        conn_give(s, c);
        curl_slist_free_all(headers);
        if (res != CURLE_OK && r->sink_errno) {
            snprintf(r->code, sizeof r->code, "SpoolWriteFailed");
            snprintf(r->message, sizeof r->message, "%s", strerror(r->sink_errno));
            return -1;
        }
        if (res != CURLE_OK) {
            snprintf(r->code, sizeof r->code, "ConnectionFailed");
            snprintf(r->message, sizeof r->message, "%s", curl_easy_strerror(res));
        } else if (r->status < 200 || r->status > 299) {
            if (!xml_value(r->body, "Code", r->code, sizeof r->code))
                snprintf(r->code, sizeof r->code, "HTTP%ld", r->status);
            xml_value(r->body, "Message", r->message, sizeof r->message);
        } else {
            return 0;
        }
        if (attempt >= S3_TRIES || !transient(res, r->status))
            return -1;
        double delay = backoff_seconds(attempt);
        log_warn("s3: %s %s: %s %s; retrying in %.2f s", q->method, q->url, r->code, r->message,
                 delay);
        sleep_monotonic(delay);
    }
}

static int upstream_fail(cu_error *e, const char *what, const s3_reply *r)
{
    log_error("s3: %s: %s (HTTP %ld) %s", what, r->code, r->status, r->message);
    return cu_fail(e, CU_EUPSTREAM, "S3 refused %s: %s%s%s", what, r->code,
                   r->message[0] ? ": " : "", r->message);
}

/* ---- a growable buffer for request bodies built from S3's own strings ---- */

typedef struct {
    char *data;
    size_t len, cap;
    bool failed; /* an allocation failed: data is incomplete */
} s3_buf;

static void buf_add(s3_buf *b, const char *p, size_t n)
{
    if (b->failed)
        return;
    if (n >= b->cap - b->len || !b->data) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap - b->len <= n) {
            if (cap > SIZE_MAX / 2) {
                b->failed = true;
                return;
            }
            cap *= 2;
        }
        char *data = realloc(b->data, cap);
        if (!data) {
            b->failed = true;
            return;
        }
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    assert(b->len < b->cap);
}

static void buf_addf(s3_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_addf(s3_buf *b, const char *fmt, ...)
{
    char small[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    assert(n >= 0 && (size_t)n < sizeof small); /* only short numbers and tags go through here */
    buf_add(b, small, (size_t)n);
}

/* Appends s with the five characters XML reserves as entities, so S3 reads back s exactly. */
static void buf_add_xml(s3_buf *b, const char *s)
{
    for (const char *p = s; *p;) {
        size_t plain = strcspn(p, "&<>\"'");
        buf_add(b, p, plain);
        p += plain;
        if (!*p)
            break;
        const char *ent = *p == '&'   ? "&amp;"
                          : *p == '<' ? "&lt;"
                          : *p == '>' ? "&gt;"
                          : *p == '"' ? "&quot;"
                                      : "&apos;";
        buf_add(b, ent, strlen(ent));
        p++;
    }
}

/* ---- URLs ---- */

/* Which sub-resource of an object a request addresses. */
typedef enum { Q_OBJECT, Q_UPLOADS, Q_UPLOAD, Q_PART } s3_query;

/* URL of the object for key (below the prefix), with the query in canonical order (SigV4
 * signs the query as sent, sorted by name, values encoded). */
static char *object_url(const s3_storage *s, const char *key, s3_query q, const char *upload_id,
                        int part_number)
{
    size_t cap = strlen(s->base_url) + 3 * (strlen(s->prefix) + strlen(key)) +
                 3 * (upload_id ? strlen(upload_id) : 0) + 128;
    char *url = malloc(cap);
    if (!url)
        return NULL;
    snprintf(url, cap, "%s/", s->base_url);
    util_percent_encode(url, cap, s->prefix, true);
    util_percent_encode(url, cap, key, true);
    size_t len = strlen(url);
    if (q == Q_UPLOADS)
        snprintf(url + len, cap - len, "?uploads=");
    else if (q == Q_UPLOAD)
        snprintf(url + len, cap - len, "?uploadId=");
    else if (q == Q_PART)
        snprintf(url + len, cap - len, "?partNumber=%d&uploadId=", part_number);
    if (q == Q_UPLOAD || q == Q_PART)
        util_percent_encode(url, cap, upload_id, false);
    return url;
}

static char *final_path_of(const s3_storage *s, const char *key)
{
    size_t len = strlen(s->bucket) + strlen(s->prefix) + strlen(key) + 8;
    char *p = malloc(len);
    if (p)
        snprintf(p, len, "s3://%s/%s%s", s->bucket, s->prefix, key);
    return p;
}

/* ---- the storage interface ---- */

static int s3_stage_create(storage_t *base, const storage_upload *u, char **storage_ref,
                           cu_error *e)
{
    s3_storage *s = (s3_storage *)base;
    if (u->total_size == 0)
        return 0; /* S3 multipart needs a part: an empty file is one PutObject at the end */
    char *url = object_url(s, u->key, Q_UPLOADS, NULL, 0);
    s3_reply *r = reply_new();
    s3_body none = {.fd = -1, .data = "", .length = 0};
    int rc = 0;
    if (!url || !r)
        rc = cu_fail_oom(e);
    else if (s3_request(
                 s,
                 &(s3_req){
                     .method = "POST", .url = url, .body = &none, .payload_sha256 = EMPTY_SHA256},
                 r) != 0)
        rc = upstream_fail(e, "CreateMultipartUpload", r);
    else {
        char upload_id[1024];
        if (!xml_value(r->body, "UploadId", upload_id, sizeof upload_id) || !*upload_id)
            rc = cu_fail(e, CU_EUPSTREAM, "S3 answered CreateMultipartUpload without an UploadId");
        else if (!(*storage_ref = strdup(upload_id)))
            rc = cu_fail_oom(e);
    }
    reply_free(r);
    free(url);
    return rc;
}

static int s3_writer_open(storage_t *base, const storage_upload *u, int64_t offset, int64_t length,
                          storage_writer_t **out, cu_error *e)
{
    s3_storage *s = (s3_storage *)base;
    int part = (int)(offset / u->part_size);
    if (!u->storage_ref)
        return cu_fail(e, CU_EIO, "Upload has no S3 multipart upload");
    /* O_TMPFILE: the spool has no name, so it disappears with the descriptor even if the
     * server dies mid-part. */
    int fd = open(s->spool_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) {
        int err = errno;
        log_error("s3: cannot create a spool file in %s: %s", s->spool_dir, strerror(err));
        return cu_fail(e, err == ENOSPC ? CU_ENOSPC : CU_EIO,
                       "Cannot spool the part in TEMP_STORAGE_PATH: %s", strerror(err));
    }
    s3_writer *w = calloc(1, sizeof *w);
    char *url = object_url(s, u->key, Q_PART, u->storage_ref, part + 1);
    if (!w || !url) {
        free(w);
        free(url);
        close(fd);
        return cu_fail_oom(e);
    }
    w->base.ops = &s3_writer_ops;
    w->s3 = s;
    w->part = part;
    w->url = url;
    w->fd = fd;
    w->length = length;
    *out = &w->base;
    return 0;
}

static int s3_writer_write(storage_writer_t *base, const void *buf, size_t len, cu_error *e)
{
    s3_writer *w = (s3_writer *)base;
    if ((int64_t)len > w->length - w->written)
        return cu_fail(e, CU_EINVAL, "Write past the end of the part");
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(w->fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int err = errno;
            return cu_fail(e, err == ENOSPC ? CU_ENOSPC : CU_EIO,
                           "Cannot spool the part in TEMP_STORAGE_PATH: %s", strerror(err));
        }
        p += n;
        len -= (size_t)n;
        w->written += n;
    }
    return 0;
}

/* SHA-256 of the first len bytes of the spool (when the caller had no digest). */
static int spool_sha256(int fd, int64_t len, unsigned char out[32])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char buf[64 * 1024];
    int rc = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 ? 0 : -1;
    for (int64_t off = 0; rc == 0 && off < len;) {
        ssize_t n =
            pread(fd, buf, len - off < (int64_t)sizeof buf ? (size_t)(len - off) : sizeof buf, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            rc = -1;
        else {
            EVP_DigestUpdate(ctx, buf, (size_t)n);
            off += n;
        }
    }
    if (rc == 0)
        EVP_DigestFinal_ex(ctx, out, NULL);
    EVP_MD_CTX_free(ctx);
    return rc;
}

static void s3_writer_free(s3_writer *w)
{
    close(w->fd);
    free(w->url);
    free(w);
}

static int s3_writer_finish(storage_writer_t *base, const unsigned char *sha256,
                            storage_written *out, cu_error *e)
{
    s3_writer *w = (s3_writer *)base;
    char hex[CU_SHA256_HEX_LEN + 1];
    if (w->written != w->length) {
        s3_writer_free(w);
        return cu_fail(e, CU_EINVAL, "A part must be sent whole");
    }
    if (sha256) {
        util_hex(sha256, 32, hex);
    } else {
        unsigned char md[32];
        int hrc = spool_sha256(w->fd, w->written, md);
        if (hrc) {
            s3_writer_free(w);
            return cu_fail(e, CU_EIO, "Cannot read the spooled part back");
        }
        util_hex(md, 32, hex);
    }
    s3_body body = {.fd = w->fd, .length = w->written};
    s3_reply *r = reply_new();
    int rc = 0;
    if (!r)
        rc = cu_fail_oom(e);
    else if (s3_request(
                 w->s3,
                 &(s3_req){.method = "PUT", .url = w->url, .body = &body, .payload_sha256 = hex},
                 r) != 0)
        rc = upstream_fail(e, "UploadPart", r);
    else if (!r->etag || !r->etag[0])
        rc = cu_fail(e, CU_EUPSTREAM, "S3 answered UploadPart without an ETag");
    else if (!(out->chunks = calloc(1, sizeof *out->chunks))) {
        rc = cu_fail_oom(e);
    } else {
        out->nchunks = 1;
        out->chunks[0].index = w->part;
        out->chunks[0].size = w->written;
        out->chunks[0].ref = r->etag; /* taken: any length, exactly as S3 sent it */
        r->etag = NULL;
        out->durable = w->written;
    }
    reply_free(r);
    s3_writer_free(w);
    return rc;
}

static void s3_writer_abort(storage_writer_t *base)
{
    s3_writer_free((s3_writer *)base);
}

/* Does the object exist? (a completion that S3 carried out but we never recorded) */
static bool object_exists(s3_storage *s, const char *key)
{
    char *url = object_url(s, key, Q_OBJECT, NULL, 0);
    s3_reply *r = reply_new();
    bool found = url && r && s3_request(s, &(s3_req){.method = "HEAD", .url = url}, r) == 0;
    reply_free(r);
    free(url);
    return found;
}

/* The CompleteMultipartUpload body for chunks (in part order): each ETag exactly as S3 gave
 * it, XML-escaped, whatever its length. NULL when out of memory. */
static char *complete_body(const storage_chunk *chunks, int nchunks, size_t *len)
{
    s3_buf b = {0};
    buf_addf(&b, "<CompleteMultipartUpload>");
    for (int i = 0; i < nchunks; i++) {
        assert(i == 0 || chunks[i].index > chunks[i - 1].index);
        buf_addf(&b, "<Part><PartNumber>%d</PartNumber><ETag>", chunks[i].index + 1);
        buf_add_xml(&b, chunks[i].ref ? chunks[i].ref : "");
        buf_addf(&b, "</ETag></Part>");
    }
    buf_addf(&b, "</CompleteMultipartUpload>");
    if (b.failed) {
        free(b.data);
        return NULL;
    }
    *len = b.len;
    return b.data;
}

static int s3_finish(storage_t *base, const storage_upload *u, const storage_chunk *chunks,
                     int nparts, char **final_path, cu_error *e)
{
    s3_storage *s = (s3_storage *)base;
    int rc = 0;
    char *url = NULL, *xml = NULL;
    s3_reply *r = reply_new();
    if (!r)
        return cu_fail_oom(e);
    if (u->total_size == 0 || !u->storage_ref) {
        url = object_url(s, u->key, Q_OBJECT, NULL, 0);
        s3_body empty = {.fd = -1, .data = "", .length = 0};
        if (!url)
            rc = cu_fail_oom(e);
        else if (s3_request(s,
                            &(s3_req){.method = "PUT",
                                      .url = url,
                                      .body = &empty,
                                      .payload_sha256 = EMPTY_SHA256},
                            r) != 0)
            rc = upstream_fail(e, "PutObject", r);
        goto out;
    }
    size_t len = 0;
    xml = complete_body(chunks, nparts, &len);
    url = object_url(s, u->key, Q_UPLOAD, u->storage_ref, 0);
    if (!xml || !url) {
        rc = cu_fail_oom(e);
        goto out;
    }
    char hex[CU_SHA256_HEX_LEN + 1];
    util_sha256_hex(xml, len, hex);
    s3_body body = {.fd = -1, .data = xml, .length = (int64_t)len};
    if (s3_request(s,
                   &(s3_req){.method = "POST",
                             .url = url,
                             .body = &body,
                             .payload_sha256 = hex,
                             .extra = {"Content-Type: application/xml"}},
                   r) != 0) {
        if (!strcmp(r->code, "NoSuchUpload") && object_exists(s, u->key))
            goto out; /* completed by an earlier call that crashed before recording it */
        rc = upstream_fail(e, "CompleteMultipartUpload", r);
        goto out;
    }
    /* S3 may answer 200 and report a failure in the body. */
    if (strstr(r->body, "<Error>")) {
        xml_value(r->body, "Code", r->code, sizeof r->code);
        xml_value(r->body, "Message", r->message, sizeof r->message);
        rc = upstream_fail(e, "CompleteMultipartUpload", r);
    }
out:
    if (rc == 0 && !(*final_path = final_path_of(s, u->key)))
        rc = cu_fail_oom(e);
    free(xml);
    free(url);
    reply_free(r);
    return rc;
}

static int s3_abort(storage_t *base, const storage_upload *u, cu_error *e)
{
    s3_storage *s = (s3_storage *)base;
    if (!u->storage_ref)
        return 0;
    char *url = object_url(s, u->key, Q_UPLOAD, u->storage_ref, 0);
    s3_reply *r = reply_new();
    int rc = 0;
    if (!url || !r)
        rc = cu_fail_oom(e);
    else if (s3_request(s, &(s3_req){.method = "DELETE", .url = url}, r) != 0 &&
             strcmp(r->code, "NoSuchUpload") != 0)
        rc = upstream_fail(e, "AbortMultipartUpload", r);
    reply_free(r);
    free(url);
    return rc;
}

static void s3_destroy(storage_t *base)
{
    s3_storage *s = (s3_storage *)base;
    while (s->pool) {
        s3_conn *c = s->pool;
        s->pool = c->next;
        conn_free(c);
    }
    if (s->share)
        curl_share_cleanup(s->share); /* after every easy handle that used it is gone */
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_destroy(&s->share_locks[i]);
    pthread_mutex_destroy(&s->pool_lock);
    free(s->base_url);
    free(s->endpoint);
    free(s->bucket);
    free(s->prefix);
    if (s->userpwd)
        memset(s->userpwd, 0, strlen(s->userpwd));
    free(s->userpwd);
    free(s->token_header);
    free(s->spool_dir);
    free(s);
}

static const struct storage_writer_ops s3_writer_ops = {
    .write = s3_writer_write, .finish = s3_writer_finish, .abort = s3_writer_abort};

static const struct storage_ops s3_ops = {
    .stage_create = s3_stage_create,
    .writer_open = s3_writer_open,
    .finish = s3_finish,
    .abort = s3_abort,
    .destroy = s3_destroy,
};

char *storage_s3_endpoint(const char *endpoint, const char *region)
{
    char *url = NULL;
    if (endpoint && *endpoint) {
        url = strdup(endpoint);
        size_t len = url ? strlen(url) : 0;
        while (len && url[len - 1] == '/')
            url[--len] = '\0';
    } else if (asprintf(&url, "https://s3.%s.amazonaws.com", region) < 0) {
        url = NULL;
    }
    return url;
}

char *storage_s3_base_url(const char *endpoint, const char *bucket, const char *region)
{
    char *url = NULL;
    int n;
    if (endpoint && *endpoint) {
        char *e = storage_s3_endpoint(endpoint, region);
        n = e ? asprintf(&url, "%s/%s", e, bucket) : -1;
        free(e);
    } else if (strchr(bucket, '.')) {
        /* A dotted bucket name in the host would not match AWS's wildcard certificate. */
        n = asprintf(&url, "https://s3.%s.amazonaws.com/%s", region, bucket);
    } else {
        n = asprintf(&url, "https://%s.s3.%s.amazonaws.com", bucket, region);
    }
    return n < 0 ? NULL : url;
}

/* The share that lets every pair reuse DNS answers and TLS sessions; NULL when out of memory. */
static CURLSH *share_new(s3_storage *s)
{
    CURLSH *sh = curl_share_init();
    if (!sh)
        return NULL;
    if (curl_share_setopt(sh, CURLSHOPT_LOCKFUNC, share_lock) != CURLSHE_OK ||
        curl_share_setopt(sh, CURLSHOPT_UNLOCKFUNC, share_unlock) != CURLSHE_OK ||
        curl_share_setopt(sh, CURLSHOPT_USERDATA, s) != CURLSHE_OK ||
        curl_share_setopt(sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK ||
        curl_share_setopt(sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK) {
        curl_share_cleanup(sh);
        return NULL;
    }
    return sh;
}

int storage_s3_open(const storage_s3_options *o, storage_t **out, cu_error *err)
{
    s3_storage *s = calloc(1, sizeof *s);
    if (!s)
        return cu_fail_oom(err);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&s->share_locks[i], NULL);
    pthread_mutex_init(&s->pool_lock, NULL);
    s->base.ops = &s3_ops;
    s->base.name = "s3";
    s->base.min_part_size = 5 * 1024 * 1024;
    s->base.allows_trailing_dot_space = true;
    s->share = share_new(s);
    s->bucket = strdup(o->bucket);
    s->endpoint = storage_s3_endpoint(o->endpoint, o->region);
    s->base_url = storage_s3_base_url(o->endpoint, o->bucket, o->region);
    s->spool_dir = strdup(o->spool_dir);
    /* The prefix is a key prefix: "a/b" and "/a/b/" both mean keys under "a/b/". */
    const char *p = o->prefix ? o->prefix : "";
    while (*p == '/')
        p++;
    size_t len = strlen(p);
    while (len && p[len - 1] == '/')
        len--;
    if (asprintf(&s->prefix, len ? "%.*s/" : "%.*s", (int)len, p) < 0)
        s->prefix = NULL;
    if (asprintf(&s->userpwd, "%s:%s", o->access_key_id, o->secret_access_key) < 0)
        s->userpwd = NULL;
    bool token = o->session_token && *o->session_token;
    if (token && asprintf(&s->token_header, "x-amz-security-token: %s", o->session_token) < 0)
        s->token_header = NULL;
    snprintf(s->sigv4, sizeof s->sigv4, "aws:amz:%s:s3", o->region);
    if (!s->share || !s->bucket || !s->endpoint || !s->base_url || !s->spool_dir || !s->prefix ||
        !s->userpwd || (token && !s->token_header)) {
        s3_destroy(&s->base);
        return cu_fail_oom(err);
    }

    /* The spool must take anonymous files (O_TMPFILE) before we accept any part. */
    int rc = util_mkdir_p(s->spool_dir, 0700);
    int fd = rc == 0 ? open(s->spool_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600) : -1;
    if (fd < 0) {
        cu_fail(err, CU_EINVAL, "TEMP_STORAGE_PATH: cannot create spool files in %s: %s",
                s->spool_dir, strerror(rc ? -rc : errno));
        s3_destroy(&s->base);
        return CU_EINVAL;
    }
    close(fd);

    /* Is the bucket there, and do the credentials work? ListObjects with one key says both. */
    char *url = NULL;
    s3_reply *r = reply_new();
    if (asprintf(&url, "%s/?max-keys=1", s->base_url) < 0)
        url = NULL;
    if (!url || !r) {
        rc = cu_fail_oom(err);
    } else if (s3_request(s, &(s3_req){.method = "GET", .url = url}, r) != 0) {
        rc = cu_fail(err, CU_EUPSTREAM, "S3: cannot use bucket \"%s\" at %s: %s%s%s", s->bucket,
                     s->endpoint, r->code, r->message[0] ? ": " : "", r->message);
    }
    reply_free(r);
    free(url);
    if (rc) {
        s3_destroy(&s->base);
        return rc;
    }
    *out = &s->base;
    return 0;
}
