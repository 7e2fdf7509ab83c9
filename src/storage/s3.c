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
 * them, and storage_destroy can free it whole.
 *
 * Every optional capability is here (see their sections below): ranged reads of finished
 * files (a GET read in pull mode, paused when the caller's buffer is full), removal
 * (DeleteObject), a deferred length (nothing to do), appends of any size (named spool files
 * that survive a restart until a part is full), concatenation (UploadPartCopy inside S3,
 * small pieces through the spool) and presigned GET URLs (SigV4 in the query string, signed
 * here, no request to S3). Staged parts cannot be read back before completion. */
#include "storage/storage.h"

#include "base/log.h"
#include "base/util.h"

#include <assert.h>
#include <ctype.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
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
#define S3_MAX_PARTS 10000
#define S3_MAX_PART ((int64_t)5 << 30) /* bytes in one part (and one UploadPartCopy) */
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
    char *prefix;  /* "" or "some/prefix/" */
    char *userpwd; /* "<access key>:<secret>" */
    char *region;
    char *token_header; /* "x-amz-security-token: ..." or NULL */
    char sigv4[128];
    char *spool_dir;
    CURLSH *share; /* DNS cache and TLS sessions of every pair */
    pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];
    pthread_mutex_t pool_lock; /* guards pool and pooled */
    s3_conn *pool;             /* idle pairs */
    int pooled;
} s3_storage;

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

/* ---- requests ---- */

typedef struct {
    long status;
    bool headers_done; /* the final response's headers are all in */
    char body[S3_BODY_MAX + 1];
    size_t body_len;
    char *etag;             /* ETag header (malloc'ed, any length up to S3_ETAG_MAX), or NULL */
    int64_t content_length; /* Content-Length header, or -1 */
    int64_t last_modified;  /* Last-Modified header in seconds since the epoch, or -1 */
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
    bool sign_here;             /* signed by sign_request, not by libcurl */
} s3_req;

static void reply_reset(s3_reply *r)
{
    free(r->etag);
    memset(r, 0, sizeof *r);
    r->content_length = r->last_modified = -1;
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
    return (status >= 500 && status != 501) || status == 429; /* 501: NotImplemented */
}

/* Seconds to wait before attempt + 1: 0.25, 0.5, 1, ... */
static double backoff_seconds(int attempt)
{
    assert(attempt >= 1 && attempt < 30);
    return 0.25 * (double)(1 << (attempt - 1));
}

/* Appends SigV4's x-amz-date, Host and Authorization lines for q to headers (NULL when out of
 * memory). For the one request libcurl before 8.10 signs wrong: an UploadPartCopy with a range,
 * whose header names x-amz-copy-source and x-amz-copy-source-range share a prefix, and old
 * libcurl sorts its canonical headers as "name:value" lines (':' sorts after '-') instead of
 * by name, so S3 computes another signature. q->url is already canonical (path encoded once,
 * query sorted), and every header is signed. */
/* SigV4's signature of to_sign for day (YYYYMMDD), as hex into sig[65]: the signing key is
 * derived from the secret through the day, region, service and "aws4_request". */
static bool sigv4_signature(const s3_storage *s, const char *day, const char *to_sign,
                            char sig[CU_SHA256_HEX_LEN + 1])
{
    const char *secret = strchr(s->userpwd, ':') + 1;
    char key0[256];
    unsigned char k[32];
    unsigned len = 32;
    snprintf(key0, sizeof key0, "AWS4%s", secret);
    const char *steps[] = {day, s->region, "s3", "aws4_request", to_sign};
    bool ok = HMAC(EVP_sha256(), key0, (int)strlen(key0), (const unsigned char *)steps[0],
                   strlen(steps[0]), k, &len) != NULL;
    for (size_t i = 1; ok && i < sizeof steps / sizeof *steps; i++)
        ok = HMAC(EVP_sha256(), k, 32, (const unsigned char *)steps[i], strlen(steps[i]), k,
                  &len) != NULL;
    OPENSSL_cleanse(key0, sizeof key0);
    util_hex(k, 32, sig);
    return ok;
}

/* The access key id, the part of userpwd before ':'. */
static int access_key_len(const s3_storage *s)
{
    return (int)(strchr(s->userpwd, ':') - s->userpwd);
}

/* The time a request is signed at: "YYYYMMDDTHHMMSSZ" into stamp[32], "YYYYMMDD" into day[16]. */
static void sigv4_now(char stamp[32], char day[16])
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(stamp, 32, "%Y%m%dT%H%M%SZ", &tm);
    strftime(day, 16, "%Y%m%d", &tm);
}

static struct curl_slist *sign_request(const s3_storage *s, const s3_req *q,
                                       struct curl_slist *headers)
{
    const char *authority = strstr(q->url, "://");
    authority = authority ? authority + 3 : q->url;
    size_t alen = strcspn(authority, "/?");
    const char *path = authority + alen, *query = strchr(path, '?');
    size_t plen = query ? (size_t)(query - path) : strlen(path);
    char host[256];
    snprintf(host, sizeof host, "%.*s", (int)alen, authority);
    char stamp[32], day[16];
    sigv4_now(stamp, day);
    /* name: value lines, sorted by name (all lowercase x-amz-* but for host, which sorts first). */
    const char *lines[8];
    int n = 0;
    char host_line[300], date_line[64];
    snprintf(host_line, sizeof host_line, "host:%s", host);
    snprintf(date_line, sizeof date_line, "x-amz-date:%s", stamp);
    lines[n++] = host_line;
    for (struct curl_slist *l = headers; l; l = l->next)
        if (!strncasecmp(l->data, "x-amz-", 6))
            lines[n++] = l->data;
    lines[n++] = date_line;
    assert(n <= (int)(sizeof lines / sizeof *lines));
    for (int i = 1; i < n; i++) /* by name: the part before ':' */
        for (int j = i; j > 0; j--) {
            size_t a = strcspn(lines[j - 1], ":"), b = strcspn(lines[j], ":");
            int cmp = strncasecmp(lines[j - 1], lines[j], a < b ? a : b);
            if (cmp < 0 || (cmp == 0 && a <= b))
                break;
            const char *t = lines[j];
            lines[j] = lines[j - 1];
            lines[j - 1] = t;
        }
    s3_buf canon = {0}, names = {0};
    buf_addf(&canon, "%s\n", q->method);
    buf_add(&canon, path, plen);
    buf_addf(&canon, "\n");
    if (query)
        buf_add(&canon, query + 1, strlen(query + 1));
    buf_addf(&canon, "\n");
    for (int i = 0; i < n; i++) {
        size_t nlen = strcspn(lines[i], ":");
        const char *v = lines[i] + nlen + 1;
        while (*v == ' ')
            v++;
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)nlen, lines[i]);
        for (char *c = name; *c; c++)
            *c = (char)tolower((unsigned char)*c);
        buf_addf(&canon, "%s:", name);
        buf_add(&canon, v, strlen(v));
        buf_addf(&canon, "\n");
        buf_addf(&names, "%s%s", i ? ";" : "", name);
    }
    buf_addf(&canon, "\n");
    if (names.data)
        buf_add(&canon, names.data, names.len);
    buf_addf(&canon, "\n%s", q->payload_sha256 ? q->payload_sha256 : EMPTY_SHA256);
    char canon_hex[CU_SHA256_HEX_LEN + 1], scope[128], to_sign[512], auth[1024];
    bool ok = !canon.failed && !names.failed;
    if (ok) {
        util_sha256_hex(canon.data, canon.len, canon_hex);
        snprintf(scope, sizeof scope, "%s/%s/s3/aws4_request", day, s->region);
        snprintf(to_sign, sizeof to_sign, "AWS4-HMAC-SHA256\n%s\n%s\n%s", stamp, scope, canon_hex);
        char sig[CU_SHA256_HEX_LEN + 1];
        ok = sigv4_signature(s, day, to_sign, sig);
        snprintf(auth, sizeof auth,
                 "Authorization: AWS4-HMAC-SHA256 Credential=%.*s/%s, SignedHeaders=%s, "
                 "Signature=%s",
                 access_key_len(s), s->userpwd, scope, names.data, sig);
    }
    free(canon.data);
    free(names.data);
    char host_header[300], date_header[64];
    snprintf(host_header, sizeof host_header, "Host: %s", host);
    snprintf(date_header, sizeof date_header, "x-amz-date: %s", stamp);
    const char *add[] = {host_header, date_header, auth};
    for (size_t i = 0; ok && i < sizeof add / sizeof *add; i++) {
        struct curl_slist *next = curl_slist_append(headers, add[i]);
        ok = next != NULL;
        headers = next ? next : headers;
    }
    if (!ok) {
        curl_slist_free_all(headers);
        return NULL;
    }
    return headers;
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
    return q->sign_here ? sign_request(s, q, headers) : headers;
}

static void request_setup(CURL *h, const s3_req *q, s3_reply *r, struct curl_slist *headers)
{
    curl_easy_setopt(h, CURLOPT_URL, q->url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, q->method);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    if (q->sign_here) { /* headers has the signature */
        curl_easy_setopt(h, CURLOPT_AWS_SIGV4, NULL);
        curl_easy_setopt(h, CURLOPT_USERPWD, NULL);
    }
    if (q->body && q->body->fd >= 0) {
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

/* Says in r->code and r->message why a request that ended with res and r->status failed;
 * false when it did not (2xx). */
static bool reply_explain(s3_reply *r, CURLcode res)
{
    if (res != CURLE_OK) {
        snprintf(r->code, sizeof r->code, "ConnectionFailed");
        snprintf(r->message, sizeof r->message, "%s", curl_easy_strerror(res));
    } else if (r->status < 200 || r->status > 299) {
        if (!xml_value(r->body, "Code", r->code, sizeof r->code))
            snprintf(r->code, sizeof r->code, "HTTP%ld", r->status);
        xml_value(r->body, "Message", r->message, sizeof r->message);
    } else {
        return false;
    }
    return true;
}

/* One S3 request with retries (q->payload_sha256 is signed by SigV4: S3 rejects a body that
 * does not match it). Returns 0 when S3 answered 2xx; otherwise r says why. */
static int s3_request(s3_storage *s, const s3_req *q, s3_reply *r)
{
    for (int attempt = 1;; attempt++) {
        reply_reset(r);
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
        if (!reply_explain(r, res))
            return 0;
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

/* One request without a body (an empty one for PUT and POST) to key's object or its multipart
 * upload (q, upload_id): 0 when S3 answered 2xx, else -1 with r saying why. */
static int object_request(s3_storage *s, const char *method, const char *key, s3_query q,
                          const char *upload_id, s3_reply *r)
{
    char *url = object_url(s, key, q, upload_id, 0);
    if (!url) {
        reply_reset(r);
        snprintf(r->code, sizeof r->code, "OutOfMemory");
        snprintf(r->message, sizeof r->message, "Out of memory");
        return -1;
    }
    s3_body empty = {.fd = -1, .data = "", .length = 0};
    bool sends = !strcmp(method, "PUT") || !strcmp(method, "POST");
    int rc = s3_request(s,
                        &(s3_req){.method = method,
                                  .url = url,
                                  .body = sends ? &empty : NULL,
                                  .payload_sha256 = EMPTY_SHA256},
                        r);
    free(url);
    return rc;
}

/* ---- the storage interface ---- */

static int s3_stage_create(storage_t *base, const storage_upload *u, char **storage_ref,
                           cu_error *e)
{
    s3_storage *s = (s3_storage *)base;
    if (u->total_size == 0)
        return 0; /* S3 multipart needs a part: an empty file is one PutObject at the end */
    s3_reply *r = reply_new();
    int rc = 0;
    if (!r)
        rc = cu_fail_oom(e);
    else if (object_request(s, "POST", u->key, Q_UPLOADS, NULL, r) != 0)
        rc = upstream_fail(e, "CreateMultipartUpload", r);
    else {
        char upload_id[1024];
        if (!xml_value(r->body, "UploadId", upload_id, sizeof upload_id) || !*upload_id)
            rc = cu_fail(e, CU_EUPSTREAM, "S3 answered CreateMultipartUpload without an UploadId");
        else if (!(*storage_ref = strdup(upload_id)))
            rc = cu_fail_oom(e);
    }
    reply_free(r);
    return rc;
}

/* A storage_chunk array that grows. */
typedef struct {
    storage_chunk *items;
    int n, cap;
} chunk_list;

/* Appends a chunk that takes ref (freed here when out of memory). Returns 0 or -1. */
static int chunks_add(chunk_list *l, int index, int64_t size, char *ref)
{
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 4;
        storage_chunk *items = realloc(l->items, (size_t)cap * sizeof *items);
        if (!items) {
            free(ref);
            return -1;
        }
        l->items = items;
        l->cap = cap;
    }
    l->items[l->n++] = (storage_chunk){.index = index, .size = size, .ref = ref};
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

static int spool_fail(cu_error *e, int err, const char *what)
{
    log_error("s3: %s in TEMP_STORAGE_PATH: %s", what, strerror(err));
    return cu_fail(e, err == ENOSPC || err == EDQUOT ? CU_ENOSPC : CU_EIO,
                   "Cannot spool data in TEMP_STORAGE_PATH (%s): %s", what, strerror(err));
}

/* UploadPart number index + 1 of the multipart upload (key, upload_id) from the first length
 * bytes of fd; sha256_hex is the signed payload hash (NULL: computed from the file). On
 * success *etag is S3's ETag (malloc'ed, as S3 sent it). When gone is not NULL, a multipart
 * upload S3 no longer knows sets *gone and fails with CU_EGONE, unlogged. */
static int upload_part_file(s3_storage *s, const char *key, const char *upload_id, int index,
                            int fd, int64_t length, const char *sha256_hex, char **etag, bool *gone,
                            cu_error *e)
{
    char hex[CU_SHA256_HEX_LEN + 1];
    if (!sha256_hex) {
        unsigned char md[32];
        if (spool_sha256(fd, length, md) != 0)
            return cu_fail(e, CU_EIO, "Cannot read the spooled part back");
        util_hex(md, 32, hex);
        sha256_hex = hex;
    }
    char *url = object_url(s, key, Q_PART, upload_id, index + 1);
    s3_reply *r = reply_new();
    s3_body body = {.fd = fd, .length = length};
    int rc = 0;
    if (!url || !r)
        rc = cu_fail_oom(e);
    else if (s3_request(
                 s,
                 &(s3_req){
                     .method = "PUT", .url = url, .body = &body, .payload_sha256 = sha256_hex},
                 r) != 0) {
        if (gone && !strcmp(r->code, "NoSuchUpload")) {
            *gone = true;
            rc = cu_fail(e, CU_EGONE, "S3 no longer has the multipart upload");
        } else {
            rc = upstream_fail(e, "UploadPart", r);
        }
    } else if (!r->etag || !r->etag[0]) {
        rc = cu_fail(e, CU_EUPSTREAM, "S3 answered UploadPart without an ETag");
    } else {
        *etag = r->etag; /* any length, exactly as S3 sent it */
        r->etag = NULL;
    }
    reply_free(r);
    free(url);
    return rc;
}

/* ---- slot writers: one part each ---- */

typedef struct {
    struct storage_writer base;
    s3_storage *s3;
    char *key, *upload_id;
    int part; /* 0-based: S3's part number part + 1 */
    int fd;   /* the spool */
    int64_t length, written;
} s3_writer;

static const struct storage_writer_ops s3_writer_ops;

static void s3_writer_free(s3_writer *w)
{
    if (w->fd >= 0)
        close(w->fd);
    free(w->key);
    free(w->upload_id);
    free(w);
}

static int s3_writer_open(storage_t *base, const storage_upload *u, int64_t offset, int64_t length,
                          storage_writer_t **out, cu_error *e)
{
    s3_storage *s = (s3_storage *)base;
    if (!u->storage_ref)
        return cu_fail(e, CU_EIO, "Upload has no S3 multipart upload");
    s3_writer *w = calloc(1, sizeof *w);
    if (!w)
        return cu_fail_oom(e);
    w->fd = -1;
    if (!(w->key = strdup(u->key)) || !(w->upload_id = strdup(u->storage_ref))) {
        s3_writer_free(w);
        return cu_fail_oom(e);
    }
    /* O_TMPFILE: the spool has no name, so it disappears with the descriptor even if the
     * server dies mid-part (a slot is sent again whole). */
    w->fd = open(s->spool_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (w->fd < 0) {
        int rc = spool_fail(e, errno, "creating a spool file");
        s3_writer_free(w);
        return rc;
    }
    w->base.ops = &s3_writer_ops;
    w->s3 = s;
    w->part = (int)(offset / u->part_size);
    w->length = length;
    *out = &w->base;
    return 0;
}

static int s3_writer_write(storage_writer_t *base, const void *buf, size_t len, cu_error *e)
{
    s3_writer *w = (s3_writer *)base;
    if ((int64_t)len > w->length - w->written)
        return cu_fail(e, CU_EINVAL, "Write past the end of the part");
    int err = write_all_at(w->fd, buf, len, w->written);
    if (err)
        return spool_fail(e, err, "spooling a part");
    w->written += (int64_t)len;
    return 0;
}

static int s3_writer_finish(storage_writer_t *base, const unsigned char *sha256,
                            storage_written *out, cu_error *e)
{
    s3_writer *w = (s3_writer *)base;
    if (w->written != w->length) {
        s3_writer_free(w);
        return cu_fail(e, CU_EINVAL, "A part must be sent whole");
    }
    char hex[CU_SHA256_HEX_LEN + 1];
    if (sha256)
        util_hex(sha256, 32, hex);
    char *etag = NULL;
    int rc = upload_part_file(w->s3, w->key, w->upload_id, w->part, w->fd, w->written,
                              sha256 ? hex : NULL, &etag, NULL, e);
    if (rc == 0) {
        chunk_list l = {0};
        if (chunks_add(&l, w->part, w->written, etag) != 0) {
            rc = cu_fail_oom(e);
        } else {
            out->chunks = l.items;
            out->nchunks = l.n;
            out->durable = w->written;
        }
    }
    s3_writer_free(w);
    return rc;
}

static void s3_writer_abort(storage_writer_t *base)
{
    s3_writer_free((s3_writer *)base);
}

static const struct storage_writer_ops s3_writer_ops = {
    .write = s3_writer_write, .finish = s3_writer_finish, .abort = s3_writer_abort};

/* ---- appends: a spool that survives restarts ----
 *
 * An append (tus PATCH) brings any number of bytes, but S3 takes parts of 5 MiB or more (but
 * for the last). So appended bytes wait in the spool until a part (u->part_size bytes) is
 * full, and then go as its UploadPart. Acknowledged bytes must survive a crash, so this spool
 * is named files, fsync'ed before an append reports their bytes durable:
 * TEMP_STORAGE_PATH/appends/<upload id>/<part index>, each holding its part's bytes so far.
 * The caller records the durable end after each append and starts the next one there; all
 * else follows from that offset O, in part k = O / part_size:
 *   - file k must hold at least O - k * part_size bytes; if it holds more, the server died
 *     after writing them but before the caller recorded them: they are cut off.
 *   - an append reports a part's end as durable only once S3 has the part, so the parts
 *     below k are in S3 and recorded: their files go. Files above k hold only bytes the
 *     caller never recorded: they go too.
 *   - a writer keeps the file of the part it started in: if the server dies before the
 *     writer finishes, the caller stays at O, inside that part, which S3 may meanwhile have
 *     whole with bytes never recorded; the next append rebuilds it from the file and sends it
 *     again (a part sent again under its number replaces the old one). The files of parts it
 *     fills after that go as soon as S3 has them. So an upload's spool is at most two files
 *     of at most a part each, whatever the size of an append.
 * finish sends the last file as the last part (the caller's chunks do not name it), then
 * CompleteMultipartUpload, and removes the spool only after S3 confirmed: a completion cut
 * short by a crash finds the spool still there and S3 answers NoSuchUpload to the part sent
 * again once the object exists, which is success, as for any finish run again. */

typedef struct {
    struct storage_writer base;
    s3_storage *s3;
    char *key, *upload_id;
    int dirfd;       /* the upload's spool directory; -1 for an empty upload (no multipart) */
    int fd;          /* spool file of part `index`, or -1 before its first byte */
    int index;       /* the part the next byte belongs to */
    int first_index; /* the part the writer started in: its file stays */
    bool unsent;     /* part `index` is whole in its file, but S3 has not taken it */
    int64_t part_size;
    int64_t start, pos, end; /* first offset, next offset, limit */
    chunk_list sent;         /* the parts S3 took from this writer */
} s3_appender;

static const struct storage_writer_ops s3_appender_ops;

/* "<spool>/appends/<id>" (malloc'ed), or NULL when out of memory or when id is not a plain
 * name (ids are UUIDs; nothing else may reach the file system). */
static char *append_dir_of(const s3_storage *s, const char *id)
{
    size_t len = strlen(id);
    if (len == 0 || len > 64 ||
        strspn(id, "0123456789abcdefghijklmnopqrstuvwxyz"
                   "ABCDEFGHIJKLMNOPQRSTUVWXYZ-_") != len)
        return NULL;
    char *dir;
    return asprintf(&dir, "%s/appends/%s", s->spool_dir, id) < 0 ? NULL : dir;
}

static void part_file_name(int index, char out[16])
{
    snprintf(out, 16, "%d", index);
}

/* Opens an upload's spool directory, creating it (durably) when create. Returns a directory
 * descriptor or -errno (-ENOENT: the upload has no spool). */
static int append_dir_open(const s3_storage *s, const char *id, bool create)
{
    char *dir = append_dir_of(s, id);
    if (!dir)
        return -EINVAL;
    int err = 0;
    if (create && mkdir(dir, 0700) == 0) {
        char *parent = strndup(dir, (size_t)(strrchr(dir, '/') - dir));
        int pfd = parent ? open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
        if (pfd < 0 || fsync(pfd) != 0)
            err = parent ? errno : ENOMEM;
        if (pfd >= 0)
            close(pfd);
        free(parent);
    } else if (create && errno != EEXIST) {
        err = errno;
    }
    int fd = err ? -1 : open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (!err && fd < 0)
        err = errno;
    free(dir);
    return err ? -err : fd;
}

/* Removes every part file in the spool directory dirfd but part keep's (-1: all of them). */
static int spool_clear(int dirfd, int keep)
{
    int fd = dup(dirfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        int err = errno;
        if (fd >= 0)
            close(fd);
        return -err;
    }
    char keep_name[16] = "";
    if (keep >= 0)
        part_file_name(keep, keep_name);
    int rc = 0;
    for (struct dirent *ent; (ent = readdir(d));) {
        if (ent->d_name[0] == '.' || !strcmp(ent->d_name, keep_name))
            continue;
        if (unlinkat(dirfd, ent->d_name, 0) != 0 && errno != ENOENT)
            rc = -errno;
    }
    closedir(d);
    return rc;
}

/* Removes an appended upload's spool whole; one that has none is fine. */
static int append_spool_remove(const s3_storage *s, const char *id, cu_error *e)
{
    int dirfd = append_dir_open(s, id, false);
    if (dirfd == -ENOENT || dirfd == -EINVAL)
        return 0; /* never appended to (or not a name the spool could hold) */
    int rc = dirfd < 0 ? dirfd : spool_clear(dirfd, -1);
    if (dirfd >= 0)
        close(dirfd);
    char *dir = rc == 0 ? append_dir_of(s, id) : NULL;
    if (dir && rmdir(dir) != 0 && errno != ENOENT)
        rc = -errno;
    free(dir);
    return rc ? spool_fail(e, -rc, "removing an upload's spool") : 0;
}

/* Opens the spool file of part w->index, which must hold `have` bytes: more are cut off
 * (never recorded), fewer mean the spool lost acknowledged bytes. */
static int part_file_open(s3_appender *w, int64_t have, cu_error *e)
{
    char name[16];
    part_file_name(w->index, name);
    int flags = O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC;
    int fd = openat(w->dirfd, name, flags | O_EXCL, 0600);
    bool created = fd >= 0;
    if (fd < 0 && errno == EEXIST)
        fd = openat(w->dirfd, name, flags, 0600);
    if (fd < 0)
        return spool_fail(e, errno, "opening an append's spool file");
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0)
        rc = spool_fail(e, errno, "reading an append's spool file");
    else if (st.st_size < have)
        rc = cu_fail(e, CU_EIO,
                     "The spool has %lld of the %lld bytes of part %d that were "
                     "acknowledged (TEMP_STORAGE_PATH changed behind the server)",
                     (long long)st.st_size, (long long)have, w->index + 1);
    else if (st.st_size > have && ftruncate(fd, have) != 0)
        rc = spool_fail(e, errno, "cutting bytes that were never recorded");
    /* A new file's name must be durable before any byte in it is reported so. */
    else if (created && fsync(w->dirfd) != 0)
        rc = spool_fail(e, errno, "syncing the spool directory");
    if (rc) {
        close(fd);
        return rc;
    }
    w->fd = fd;
    return 0;
}

static void appender_free(s3_appender *w)
{
    if (w->fd >= 0)
        close(w->fd);
    if (w->dirfd >= 0)
        close(w->dirfd);
    storage_chunks_free(w->sent.items, w->sent.n);
    free(w->key);
    free(w->upload_id);
    free(w);
}

static int s3_append_open(storage_t *base, const storage_upload *u, int64_t offset,
                          storage_writer_t **out, cu_error *e)
{
    s3_storage *s = (s3_storage *)base;
    assert(u->part_size >= s->base.min_part_size);
    int64_t end = u->total_size >= 0 ? u->total_size : INT64_MAX;
    if (offset > end)
        return cu_fail(e, CU_EINVAL, "Offset %lld is past the end of the upload",
                       (long long)offset);
    if (!u->storage_ref && u->total_size != 0)
        return cu_fail(e, CU_EIO, "Upload has no S3 multipart upload");
    int index = (int)(offset / u->part_size);
    if (u->storage_ref && index >= S3_MAX_PARTS)
        return cu_fail(e, CU_ETOOLARGE, "An S3 upload has at most %d parts", S3_MAX_PARTS);
    s3_appender *w = calloc(1, sizeof *w);
    if (!w)
        return cu_fail_oom(e);
    w->dirfd = w->fd = -1;
    w->base.ops = &s3_appender_ops;
    w->s3 = s;
    w->index = w->first_index = index;
    w->part_size = u->part_size;
    w->start = w->pos = offset;
    w->end = end;
    int rc = 0;
    if (!(w->key = strdup(u->key)) || (u->storage_ref && !(w->upload_id = strdup(u->storage_ref))))
        rc = cu_fail_oom(e);
    else if (u->storage_ref) { /* else an empty file: nothing to spool */
        w->dirfd = append_dir_open(s, u->id, true);
        if (w->dirfd == -EINVAL)
            rc = cu_fail(e, CU_EINVAL, "Upload id %s cannot name a spool directory", u->id);
        else if (w->dirfd < 0)
            rc = spool_fail(e, -w->dirfd, "creating an upload's spool directory");
        else if ((rc = spool_clear(w->dirfd, index)) != 0)
            rc = spool_fail(e, -rc, "removing spool files the offset leaves behind");
        else
            rc = part_file_open(w, offset - (int64_t)index * u->part_size, e);
    }
    if (rc) {
        appender_free(w);
        return rc;
    }
    *out = &w->base;
    return 0;
}

/* Sends the whole part w->index from its file, and moves on to the next part. */
static int part_send(s3_appender *w, cu_error *e)
{
    assert(w->unsent && w->fd >= 0);
    assert(w->pos == (int64_t)(w->index + 1) * w->part_size);
    char *etag = NULL;
    int rc = upload_part_file(w->s3, w->key, w->upload_id, w->index, w->fd, w->part_size, NULL,
                              &etag, NULL, e);
    if (rc)
        return rc;
    if (chunks_add(&w->sent, w->index, w->part_size, etag) != 0)
        return cu_fail_oom(e);
    w->unsent = false;
    close(w->fd);
    w->fd = -1;
    if (w->index != w->first_index) {
        /* S3 has it, and no offset the caller can record falls inside it (see above). */
        char name[16];
        part_file_name(w->index, name);
        unlinkat(w->dirfd, name, 0);
    }
    w->index++;
    return 0;
}

static int s3_append_write(storage_writer_t *base, const void *buf, size_t len, cu_error *e)
{
    s3_appender *w = (s3_appender *)base;
    if ((int64_t)len > w->end - w->pos)
        return cu_fail(e, CU_EINVAL, "Write past the end of the upload");
    int rc = w->unsent ? part_send(w, e) : 0; /* S3 refused it before: try again */
    const char *p = buf;
    while (rc == 0 && len > 0) {
        if (w->fd < 0 && w->index >= S3_MAX_PARTS)
            return cu_fail(e, CU_ETOOLARGE, "An S3 upload has at most %d parts", S3_MAX_PARTS);
        if (w->fd < 0 && (rc = part_file_open(w, 0, e)) != 0)
            break;
        int64_t in_part = w->pos - (int64_t)w->index * w->part_size;
        size_t n = (int64_t)len < w->part_size - in_part ? len : (size_t)(w->part_size - in_part);
        int err = write_all_at(w->fd, p, n, in_part);
        if (err)
            return spool_fail(e, err, "spooling appended bytes");
        w->pos += (int64_t)n;
        p += n;
        len -= n;
        if (in_part + (int64_t)n == w->part_size) {
            w->unsent = true;
            rc = part_send(w, e);
        }
    }
    return rc;
}

static int s3_append_finish(storage_writer_t *base, const unsigned char *sha256,
                            storage_written *out, cu_error *e)
{
    s3_appender *w = (s3_appender *)base;
    (void)sha256; /* the digest of the whole append says nothing about any one part */
    int rc = 0;
    /* A part whole in the spool that S3 refused: its last byte is not reported, so the
     * caller's offset stays inside the part and the next append sends it (a recorded offset
     * at a part's end must mean that S3 has the part). */
    int64_t durable_end = w->unsent ? w->pos - 1 : w->pos;
    if (w->fd >= 0 && fdatasync(w->fd) != 0) {
        rc = spool_fail(e, errno, "syncing appended bytes");
        durable_end = (int64_t)w->index * w->part_size; /* what S3 has */
    }
    out->durable = durable_end > w->start ? durable_end - w->start : 0;
    out->chunks = w->sent.items;
    out->nchunks = w->sent.n;
    w->sent = (chunk_list){0};
    appender_free(w);
    return rc;
}

static void s3_append_abort(storage_writer_t *base)
{
    appender_free((s3_appender *)base);
}

static const struct storage_writer_ops s3_appender_ops = {
    .write = s3_append_write, .finish = s3_append_finish, .abort = s3_append_abort};

/* ---- finishing and aborting ---- */

/* Does the object exist? (a completion that S3 carried out but we never recorded) */
static bool object_exists(s3_storage *s, const char *key)
{
    s3_reply *r = reply_new();
    bool found = r && object_request(s, "HEAD", key, Q_OBJECT, NULL, r) == 0;
    reply_free(r);
    return found;
}

/* The CompleteMultipartUpload body for chunks (in part order) and then tail (or NULL): each
 * ETag exactly as S3 gave it, XML-escaped, whatever its length. NULL when out of memory. */
static char *complete_body(const storage_chunk *chunks, int nchunks, const storage_chunk *tail,
                           size_t *len)
{
    s3_buf b = {0};
    buf_addf(&b, "<CompleteMultipartUpload>");
    int previous = -1;
    for (int i = 0; i <= nchunks; i++) {
        const storage_chunk *c = i < nchunks ? &chunks[i] : tail;
        if (!c || (i < nchunks && tail && c->index >= tail->index))
            continue; /* the tail replaces any chunk of its number */
        assert(c->index > previous);
        (void)previous;
        previous = c->index;
        buf_addf(&b, "<Part><PartNumber>%d</PartNumber><ETag>", c->index + 1);
        buf_add_xml(&b, c->ref ? c->ref : "");
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

static int complete_multipart(s3_storage *s, const storage_upload *u, const storage_chunk *chunks,
                              int nchunks, const storage_chunk *tail, cu_error *e)
{
    size_t len = 0;
    char *xml = complete_body(chunks, nchunks, tail, &len);
    char *url = object_url(s, u->key, Q_UPLOAD, u->storage_ref, 0);
    s3_reply *r = reply_new();
    int rc = 0;
    char hex[CU_SHA256_HEX_LEN + 1];
    s3_body body = {.fd = -1, .data = xml, .length = (int64_t)len};
    if (xml)
        util_sha256_hex(xml, len, hex);
    if (!xml || !url || !r) {
        rc = cu_fail_oom(e);
    } else if (s3_request(s,
                          &(s3_req){.method = "POST",
                                    .url = url,
                                    .body = &body,
                                    .payload_sha256 = hex,
                                    .extra = {"Content-Type: application/xml"}},
                          r) != 0) {
        /* NoSuchUpload with the object there: an earlier call completed it and crashed
         * before the caller recorded it. */
        if (strcmp(r->code, "NoSuchUpload") != 0 || !object_exists(s, u->key))
            rc = upstream_fail(e, "CompleteMultipartUpload", r);
    } else if (strstr(r->body, "<Error>")) { /* S3 may answer 200 and fail in the body */
        xml_value(r->body, "Code", r->code, sizeof r->code);
        xml_value(r->body, "Message", r->message, sizeof r->message);
        rc = upstream_fail(e, "CompleteMultipartUpload", r);
    }
    reply_free(r);
    free(url);
    free(xml);
    return rc;
}

/* The last part of an appended upload is still in the spool: sends it as *tail (ref NULL when
 * there is none). *completed: S3 no longer has the multipart upload but has the object (an
 * earlier finish got that far). */
static int send_tail(s3_storage *s, const storage_upload *u, storage_chunk *tail, bool *completed,
                     cu_error *e)
{
    int64_t rest = u->total_size % u->part_size;
    int index = (int)(u->total_size / u->part_size);
    if (rest == 0)
        return 0; /* every part is whole: appends sent them all */
    int dirfd = append_dir_open(s, u->id, false);
    if (dirfd == -ENOENT || dirfd == -EINVAL)
        return 0; /* never appended to */
    if (dirfd < 0)
        return spool_fail(e, -dirfd, "opening an upload's spool");
    char name[16];
    part_file_name(index, name);
    int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    int err = errno;
    close(dirfd);
    if (fd < 0)
        return err == ENOENT ? 0 : spool_fail(e, err, "opening the last part's spool file");
    struct stat st;
    int rc = 0;
    bool gone = false;
    if (fstat(fd, &st) != 0)
        rc = spool_fail(e, errno, "reading the last part's spool file");
    else if (st.st_size < rest)
        rc = cu_fail(e, CU_EIO, "The spool has %lld of the last part's %lld bytes",
                     (long long)st.st_size, (long long)rest);
    else if ((rc = upload_part_file(s, u->key, u->storage_ref, index, fd, rest, NULL, &tail->ref,
                                    &gone, e)) != 0 &&
             gone && object_exists(s, u->key)) {
        *completed = true;
        rc = 0;
    }
    close(fd);
    tail->index = index;
    tail->size = rest;
    return rc;
}

/* An empty file is one PutObject (a multipart upload needs a part); a deferred upload that
 * ended up empty also has a multipart upload to abort. */
static int complete_empty(s3_storage *s, const storage_upload *u, cu_error *e)
{
    s3_reply *r = reply_new();
    int rc = 0;
    if (!r)
        rc = cu_fail_oom(e);
    else if (object_request(s, "PUT", u->key, Q_OBJECT, NULL, r) != 0)
        rc = upstream_fail(e, "PutObject", r);
    else if (u->storage_ref && object_request(s, "DELETE", u->key, Q_UPLOAD, u->storage_ref, r) &&
             strcmp(r->code, "NoSuchUpload") != 0)
        rc = upstream_fail(e, "AbortMultipartUpload", r);
    reply_free(r);
    return rc;
}

/* Makes u's object out of its staged parts (chunks, plus the spool's last part for an
 * appended upload), then removes its spool. Idempotent. */
static int complete_upload(s3_storage *s, const storage_upload *u, const storage_chunk *chunks,
                           int nchunks, cu_error *e)
{
    assert(u->total_size >= 0);
    int rc = 0;
    if (u->total_size == 0) {
        rc = complete_empty(s, u, e);
    } else if (!u->storage_ref) {
        rc = cu_fail(e, CU_EIO, "Upload has no S3 multipart upload");
    } else {
        storage_chunk tail = {0};
        bool completed = false;
        rc = send_tail(s, u, &tail, &completed, e);
        if (rc == 0 && !completed)
            rc = complete_multipart(s, u, chunks, nchunks, tail.ref ? &tail : NULL, e);
        free(tail.ref);
    }
    return rc ? rc : append_spool_remove(s, u->id, e);
}

static int s3_finish(storage_t *base, const storage_upload *u, const storage_chunk *chunks,
                     int nchunks, char **final_path, cu_error *e)
{
    s3_storage *s = (s3_storage *)base;
    int rc = complete_upload(s, u, chunks, nchunks, e);
    if (rc == 0 && !(*final_path = final_path_of(s, u->key)))
        rc = cu_fail_oom(e);
    return rc;
}

/* Abort is only for uploads that never completed (cancel, expiry) and for concatenation
 * sources, which concat completed into objects at their own keys: so the object at u->key
 * goes too (keys hold the upload id: no other upload's object can be there). */
static int s3_abort(storage_t *base, const storage_upload *u, cu_error *e)
{
    s3_storage *s = (s3_storage *)base;
    s3_reply *r = reply_new();
    int rc = 0;
    if (!r)
        rc = cu_fail_oom(e);
    else if (u->storage_ref &&
             object_request(s, "DELETE", u->key, Q_UPLOAD, u->storage_ref, r) != 0 &&
             strcmp(r->code, "NoSuchUpload") != 0)
        rc = upstream_fail(e, "AbortMultipartUpload", r);
    else if (u->key && *u->key && /* none: an orphan spool alone (never the bucket itself) */
             object_request(s, "DELETE", u->key, Q_OBJECT, NULL, r) != 0 && r->status != 404)
        rc = upstream_fail(e, "DeleteObject", r);
    else
        rc = append_spool_remove(s, u->id, e);
    reply_free(r);
    return rc;
}

/* ---- reading and removing finished files ---- */

static int s3_stat(storage_t *base, const char *key, storage_file_info *out, cu_error *e)
{
    s3_storage *s = (s3_storage *)base;
    s3_reply *r = reply_new();
    int rc = 0;
    if (!r)
        rc = cu_fail_oom(e);
    else if (object_request(s, "HEAD", key, Q_OBJECT, NULL, r) != 0)
        rc = r->status == 404 ? cu_fail(e, CU_ENOTFOUND, "File not found in storage")
                              : upstream_fail(e, "HeadObject", r);
    else if (r->content_length < 0)
        rc = cu_fail(e, CU_EUPSTREAM, "S3 answered HeadObject without a Content-Length");
    else {
        out->size = r->content_length;
        out->mtime = r->last_modified >= 0 ? r->last_modified : 0;
    }
    reply_free(r);
    return rc;
}

/* Room for what one write callback brings beyond the caller's buffer: libcurl hands over at
 * most CURL_MAX_WRITE_SIZE bytes at a time (CURLOPT_BUFFERSIZE stays at its default). */
#define S3_SPILL (2 * CURL_MAX_WRITE_SIZE)

/* A ranged GET read in pull mode: the transfer runs only inside s3_read, and is paused
 * (CURL_WRITEFUNC_PAUSE, libcurl keeps the bytes it has) whenever the caller's buffer and the
 * small spill are full. So a reader holds about S3_SPILL bytes plus libcurl's buffer, whatever
 * the size of the range and however slowly the caller reads. A GET that breaks off is
 * resumed at the next byte, If-Match the ETag of the first answer, so a file replaced
 * meanwhile cannot be read half old, half new. */
typedef struct {
    struct storage_reader base;
    s3_storage *s3;
    char *url;
    s3_conn *conn;              /* the pair running the current GET, or NULL */
    struct curl_slist *headers; /* its request headers */
    s3_reply *r;                /* its status, headers and error document */
    char *etag;                 /* the object's ETag when first answered, or NULL */
    int64_t offset, end;        /* next byte to hand out; one past the range */
    int attempts;               /* GETs started since the last one that brought bytes */
    int64_t started_at;         /* where the current GET started */
    bool running;               /* the current GET has not ended */
    bool paused;                /* ... and is paused */
    bool stopping;              /* ... and is being ended: its bytes are dropped */
    CURLcode result;            /* how it ended */
    char *dst;                  /* the caller's buffer while s3_read runs, else NULL */
    size_t dst_cap, dst_len;
    unsigned char spill[S3_SPILL]; /* bytes that came past dst_cap, handed out next */
    size_t spill_at, spill_len;
} s3_reader;

static const struct storage_reader_ops s3_reader_ops;

static size_t on_range_body(char *p, size_t size, size_t n, void *ctx)
{
    s3_reader *rd = ctx;
    size_t len = size * n;
    if (rd->r->status < 200 || rd->r->status > 299)
        return on_body(p, size, n, rd->r); /* S3's error document */
    if (rd->stopping)
        return len;
    if (!rd->dst || rd->spill_len > 0) {
        rd->paused = true;
        return CURL_WRITEFUNC_PAUSE; /* libcurl keeps these bytes and offers them again */
    }
    /* Bytes past the range (a server that sends more than asked) are dropped. */
    int64_t left = rd->end - rd->offset - (int64_t)rd->dst_len;
    size_t keep = left <= 0 ? 0 : (int64_t)len < left ? len : (size_t)left;
    size_t to_dst = keep < rd->dst_cap - rd->dst_len ? keep : rd->dst_cap - rd->dst_len;
    memcpy(rd->dst + rd->dst_len, p, to_dst);
    rd->dst_len += to_dst;
    if (keep - to_dst > sizeof rd->spill)
        return 0; /* more than libcurl ever hands over at once: end the transfer */
    memcpy(rd->spill, p + to_dst, keep - to_dst);
    rd->spill_at = 0;
    rd->spill_len = keep - to_dst;
    return len;
}

/* Ends the current GET (if any) and returns its pair; a connection cut off mid-body is closed
 * by libcurl, the pair stays good. */
static void reader_stop(s3_reader *rd)
{
    if (rd->conn) {
        /* A handle removed while paused stays paused for its next transfer: resume it first
         * (the bytes it still holds are dropped). */
        rd->stopping = true;
        if (rd->paused)
            curl_easy_pause(rd->conn->easy, CURLPAUSE_CONT);
        rd->stopping = false;
        curl_multi_remove_handle(rd->conn->multi, rd->conn->easy);
        conn_give(rd->s3, rd->conn);
    }
    curl_slist_free_all(rd->headers);
    rd->headers = NULL;
    rd->conn = NULL;
    rd->running = rd->paused = false;
}

/* Moves the current GET on; when wait and it has nothing to do, waits (up to a second) for
 * the network. Notes in running and result when it ends. A transfer that has just paused
 * (its bytes wait for the caller's buffer) or handed bytes over has something for the caller
 * now: waiting then would only hold the caller up (a whole second before every download's
 * first byte, when the answer came with the headers). */
static void reader_step(s3_reader *rd, bool wait)
{
    int running = 0;
    CURLMcode mc = curl_multi_perform(rd->conn->multi, &running);
    if (mc == CURLM_OK && running && wait && !rd->paused && rd->dst_len == 0)
        mc = curl_multi_poll(rd->conn->multi, NULL, 0, 1000, NULL);
    if (mc != CURLM_OK || !running) {
        rd->running = false;
        rd->result = mc != CURLM_OK ? CURLE_RECV_ERROR : conn_result(rd->conn);
    }
}

/* Starts a GET of [offset, end) and runs it until the answer's headers are in. */
static int reader_start(s3_reader *rd)
{
    reader_stop(rd);
    assert(rd->spill_len == 0 && rd->offset < rd->end);
    rd->attempts++;
    rd->started_at = rd->offset;
    char range[80];
    snprintf(range, sizeof range, "Range: bytes=%lld-%lld", (long long)rd->offset,
             (long long)rd->end - 1);
    char *match = NULL;
    if (rd->etag && asprintf(&match, "If-Match: %s", rd->etag) < 0)
        return -1;
    s3_req q = {.method = "GET", .url = rd->url, .extra = {range, match}};
    rd->headers = request_headers(rd->s3, &q);
    free(match); /* curl_slist_append copied it */
    rd->conn = rd->headers ? conn_take(rd->s3) : NULL;
    if (!rd->conn)
        return -1;
    CURL *h = rd->conn->easy;
    reply_reset(rd->r);
    curl_easy_setopt(h, CURLOPT_URL, rd->url);
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, rd->headers);
    /* A paused transfer does not count as slow: only a stalled network does. */
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_range_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, rd);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, rd->r);
    if (curl_multi_add_handle(rd->conn->multi, h) != CURLM_OK) {
        conn_give(rd->s3, rd->conn);
        rd->conn = NULL;
        return -1;
    }
    rd->running = true;
    while (rd->running && !rd->r->headers_done)
        reader_step(rd, true);
    return 0;
}

/* Starts a GET at rd->offset, retrying what is transient, until its body is on its way. */
static int reader_begin(s3_reader *rd, cu_error *e)
{
    for (;;) {
        if (reader_start(rd) != 0)
            return cu_fail_oom(e);
        long status = rd->r->status;
        if (rd->r->headers_done && (status == 206 || (status == 200 && rd->offset == 0))) {
            if (!rd->etag && rd->r->etag && !(rd->etag = strdup(rd->r->etag)))
                return cu_fail_oom(e);
            return 0;
        }
        while (rd->running) /* the rest of S3's error document */
            reader_step(rd, true);
        if (rd->result == CURLE_OK && status >= 200 && status <= 299)
            return cu_fail(e, CU_EUPSTREAM, "S3 answered a ranged GET with the whole object");
        if (rd->result == CURLE_OK && status == 404)
            return cu_fail(e, CU_ENOTFOUND, "File not found in storage");
        if (rd->result == CURLE_OK && status == 412)
            return cu_fail(e, CU_EIO, "The file changed in storage while it was read");
        if (rd->result == CURLE_OK && status == 416)
            return cu_fail(e, CU_ERANGE, "The range is outside the file in storage");
        reply_explain(rd->r, rd->result);
        if (rd->attempts >= S3_TRIES || !transient(rd->result, status))
            return upstream_fail(e, "GetObject", rd->r);
        log_warn("s3: GET %s: %s %s; retrying", rd->url, rd->r->code, rd->r->message);
        sleep_monotonic(backoff_seconds(rd->attempts));
    }
}

static ssize_t s3_read(storage_reader_t *base, void *buf, size_t cap, cu_error *e)
{
    s3_reader *rd = (s3_reader *)base;
    if ((int64_t)cap > rd->end - rd->offset)
        cap = (size_t)(rd->end - rd->offset);
    if (cap == 0)
        return 0;
    if (rd->spill_len > 0) {
        size_t n = cap < rd->spill_len ? cap : rd->spill_len;
        memcpy(buf, rd->spill + rd->spill_at, n);
        rd->spill_at += n;
        rd->spill_len -= n;
        rd->offset += (int64_t)n;
        return (ssize_t)n;
    }
    rd->dst = buf;
    rd->dst_cap = cap;
    rd->dst_len = 0;
    int rc = 0;
    while (rd->dst_len == 0 && rc == 0) {
        if (rd->running) {
            if (rd->paused) {
                rd->paused = false;
                curl_easy_pause(rd->conn->easy, CURLPAUSE_CONT); /* may deliver at once */
            }
            if (rd->dst_len == 0)
                reader_step(rd, false);
            if (rd->dst_len == 0 && rd->running)
                reader_step(rd, true);
        } else if (rd->result == CURLE_OK) {
            rc = cu_fail(e, CU_EIO, "The file in storage is shorter than recorded");
        } else if ((rd->offset > rd->started_at || rd->attempts < S3_TRIES) &&
                   transient(rd->result, 0)) {
            log_warn("s3: GET %s broke off at byte %lld: %s; resuming", rd->url,
                     (long long)rd->offset, curl_easy_strerror(rd->result));
            /* A GET that brought bytes resumes at once with a fresh count of tries: a long
             * read may break off many times. One that brought nothing waits first. */
            if (rd->offset > rd->started_at)
                rd->attempts = 0;
            else
                sleep_monotonic(backoff_seconds(rd->attempts));
            rc = reader_begin(rd, e);
        } else {
            rc = cu_fail(e, CU_EUPSTREAM, "Reading the file from S3 broke off: %s",
                         curl_easy_strerror(rd->result));
        }
    }
    size_t n = rd->dst_len;
    rd->dst = NULL;
    rd->dst_len = 0;
    rd->offset += (int64_t)n;
    return n > 0 ? (ssize_t)n : rc;
}

static void s3_reader_close(storage_reader_t *base)
{
    s3_reader *rd = (s3_reader *)base;
    reader_stop(rd);
    reply_free(rd->r);
    free(rd->etag);
    free(rd->url);
    free(rd);
}

static int s3_read_open(storage_t *base, const char *key, int64_t offset, int64_t length,
                        storage_reader_t **out, cu_error *e)
{
    s3_storage *s = (s3_storage *)base;
    storage_file_info info;
    int rc = length == 0 ? s3_stat(base, key, &info, e) : 0;
    if (rc)
        return rc; /* nothing to GET for 0 bytes, but a missing file is still missing */
    s3_reader *rd = calloc(1, sizeof *rd);
    if (!rd || !(rd->url = object_url(s, key, Q_OBJECT, NULL, 0)) || !(rd->r = reply_new())) {
        if (rd)
            s3_reader_close(&rd->base);
        return cu_fail_oom(e);
    }
    rd->base.ops = &s3_reader_ops;
    rd->s3 = s;
    rd->offset = offset;
    rd->end = offset + length;
    if (length > 0 && (rc = reader_begin(rd, e)) != 0) {
        s3_reader_close(&rd->base);
        return rc;
    }
    *out = &rd->base;
    return 0;
}

/* S3 readers have no descriptor (fd stays NULL): zero-copy sends are for local files. */
static const struct storage_reader_ops s3_reader_ops = {.read = s3_read, .close = s3_reader_close};

/* ---- presigned URLs ---- */

/* Appends "&name=value" (or "?name=value" for the first) with value encoded as SigV4 wants. */
static void query_add(s3_buf *b, const char *name, const char *value)
{
    size_t cap = strlen(value) * 3 + 1;
    char *enc = malloc(cap);
    if (!enc) {
        b->failed = true;
        return;
    }
    enc[0] = '\0';
    util_percent_encode(enc, cap, value, false);
    if (b->len)
        buf_add(b, "&", 1);
    buf_add(b, name, strlen(name));
    buf_add(b, "=", 1);
    buf_add(b, enc, strlen(enc));
    free(enc);
}

/* A GET of the object at key signed in its query string (SigV4 query authentication, the
 * host header alone signed, payload UNSIGNED-PAYLOAD), valid expires_in seconds from now. The
 * answer carries content_type and content_disposition (response-* overrides) when given. */
static int s3_presign_get(storage_t *base, const char *key, int64_t expires_in,
                          const char *content_type, const char *content_disposition, char **url,
                          cu_error *e)
{
    s3_storage *s = (s3_storage *)base;
    *url = NULL;
    if (expires_in < 1 || expires_in > 7 * 86400)
        return cu_fail(e, CU_EINVAL, "A presigned URL lives 1 s to 7 days");
    char *object = object_url(s, key, Q_OBJECT, NULL, 0);
    if (!object)
        return cu_fail_oom(e);
    const char *authority = strstr(object, "://");
    authority = authority ? authority + 3 : object;
    size_t alen = strcspn(authority, "/?");
    char stamp[32], day[16], expires[24], credential[512];
    sigv4_now(stamp, day);
    snprintf(expires, sizeof expires, "%lld", (long long)expires_in);
    snprintf(credential, sizeof credential, "%.*s/%s/%s/s3/aws4_request", access_key_len(s),
             s->userpwd, day, s->region);
    /* The query in canonical order: by name, byte for byte ("X-Amz-*" sorts before
     * "response-*"). */
    s3_buf query = {0};
    query_add(&query, "X-Amz-Algorithm", "AWS4-HMAC-SHA256");
    query_add(&query, "X-Amz-Credential", credential);
    query_add(&query, "X-Amz-Date", stamp);
    query_add(&query, "X-Amz-Expires", expires);
    if (s->token_header)
        query_add(&query, "X-Amz-Security-Token", strchr(s->token_header, ':') + 2);
    query_add(&query, "X-Amz-SignedHeaders", "host");
    if (content_disposition)
        query_add(&query, "response-content-disposition", content_disposition);
    if (content_type)
        query_add(&query, "response-content-type", content_type);
    s3_buf canon = {0};
    const char *path = authority + alen;
    buf_add(&canon, "GET\n", 4);
    buf_add(&canon, path, strlen(path));
    buf_add(&canon, "\n", 1);
    if (query.data)
        buf_add(&canon, query.data, query.len);
    buf_add(&canon, "\nhost:", 6);
    buf_add(&canon, authority, alen);
    buf_addf(&canon, "\n\nhost\nUNSIGNED-PAYLOAD");
    int rc = 0;
    if (query.failed || canon.failed || !query.data || !canon.data) {
        rc = cu_fail_oom(e);
    } else {
        char canon_hex[CU_SHA256_HEX_LEN + 1], to_sign[512], sig[CU_SHA256_HEX_LEN + 1];
        util_sha256_hex(canon.data, canon.len, canon_hex);
        snprintf(to_sign, sizeof to_sign, "AWS4-HMAC-SHA256\n%s\n%s/%s/s3/aws4_request\n%s", stamp,
                 day, s->region, canon_hex);
        if (!sigv4_signature(s, day, to_sign, sig))
            rc = cu_fail(e, CU_EIO, "Cannot sign the URL");
        else if (asprintf(url, "%s?%s&X-Amz-Signature=%s", object, query.data, sig) < 0)
            rc = cu_fail_oom(e), *url = NULL;
    }
    free(query.data);
    free(canon.data);
    free(object);
    return rc;
}

static int s3_remove(storage_t *base, const char *key, cu_error *e)
{
    s3_storage *s = (s3_storage *)base;
    s3_reply *r = reply_new();
    int rc = 0;
    if (!r)
        rc = cu_fail_oom(e);
    else if (object_request(s, "DELETE", key, Q_OBJECT, NULL, r) != 0 && r->status != 404)
        rc = upstream_fail(e, "DeleteObject", r);
    reply_free(r);
    return rc;
}

/* ---- concatenation ----
 *
 * Concatenation (tus concatenation-final) fills dst's multipart upload from sources whose
 * every byte is staged, without reading them through this process where S3 allows: each
 * source's multipart upload is completed into an object at its own key (its abort removes it
 * later), and dst's parts are UploadPartCopy ranges of those objects, copied inside S3. But S3
 * wants every part but the last to be 5 MiB or more: the bytes of a source smaller than that
 * (or the small rest of one) cannot be a part on their own, so they are read through a spool
 * file with the ranged reader (memory: its buffer; disk: at most 5 MiB) until 5 MiB are
 * together, and go as one UploadPart. Sources of whole parts, as tus clients send them, are
 * copied by S3 alone. */

typedef struct {
    s3_storage *s;
    const storage_upload *dst;
    chunk_list parts; /* dst's parts so far */
    int carry_fd;     /* spool of bytes waiting to make up a part, or -1 */
    int64_t carry_len;
} concat_job;

/* "x-amz-copy-source: /<bucket>/<prefix><key>" (key percent-encoded), malloc'ed or NULL. */
static char *copy_source_header(const s3_storage *s, const char *key)
{
    size_t cap = 32 + strlen(s->bucket) + 3 * (strlen(s->prefix) + strlen(key));
    char *h = malloc(cap);
    if (h) {
        snprintf(h, cap, "x-amz-copy-source: /%s/", s->bucket);
        util_percent_encode(h, cap, s->prefix, true);
        util_percent_encode(h, cap, key, true);
    }
    return h;
}

/* The next part of dst: [off, off + len) of src's object, copied by S3. */
static int copy_part(concat_job *j, const storage_upload *src, int64_t off, int64_t len,
                     cu_error *e)
{
    int index = j->parts.n;
    if (index >= S3_MAX_PARTS)
        return cu_fail(e, CU_ETOOLARGE, "An S3 upload has at most %d parts", S3_MAX_PARTS);
    char *url = object_url(j->s, j->dst->key, Q_PART, j->dst->storage_ref, index + 1);
    char *source = copy_source_header(j->s, src->key);
    s3_reply *r = reply_new();
    /* S3 copies a range only out of objects above 5 MiB: a whole object goes without one. */
    char range[96];
    bool whole = off == 0 && len == src->total_size;
    snprintf(range, sizeof range, "x-amz-copy-source-range: bytes=%lld-%lld", (long long)off,
             (long long)(off + len - 1));
    s3_body none = {.fd = -1, .data = "", .length = 0};
    char *etag = NULL;
    int rc = 0;
    if (!url || !source || !r)
        rc = cu_fail_oom(e);
    else if (s3_request(j->s,
                        &(s3_req){.method = "PUT",
                                  .url = url,
                                  .body = &none,
                                  .payload_sha256 = EMPTY_SHA256,
                                  .extra = {source, whole ? NULL : range},
                                  .sign_here = !whole},
                        r) != 0)
        rc = upstream_fail(e, "UploadPartCopy", r);
    else if (strstr(r->body, "<Error>")) { /* S3 may answer 200 and fail in the body */
        xml_value(r->body, "Code", r->code, sizeof r->code);
        xml_value(r->body, "Message", r->message, sizeof r->message);
        rc = upstream_fail(e, "UploadPartCopy", r);
    } else if (!(etag = malloc(r->body_len + 1)))
        rc = cu_fail_oom(e);
    else if (!xml_value(r->body, "ETag", etag, r->body_len + 1) || !*etag)
        rc = cu_fail(e, CU_EUPSTREAM, "S3 answered UploadPartCopy without an ETag");
    else if (chunks_add(&j->parts, index, len, etag) != 0)
        rc = cu_fail_oom(e);
    else
        etag = NULL; /* taken by the list */
    free(etag);
    reply_free(r);
    free(source);
    free(url);
    return rc;
}

/* Reads [off, off + len) of the object at key through the ranged reader into the carry. */
static int carry_fill(concat_job *j, const char *key, int64_t off, int64_t len, cu_error *e)
{
    if (j->carry_fd < 0 &&
        (j->carry_fd = open(j->s->spool_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600)) < 0)
        return spool_fail(e, errno, "creating a spool file");
    storage_reader_t *reader = NULL;
    size_t cap = 64 * 1024;
    char *buf = malloc(cap);
    int rc = buf ? s3_read_open(&j->s->base, key, off, len, &reader, e) : cu_fail_oom(e);
    for (int64_t got = 0; rc == 0 && got < len;) {
        ssize_t n = s3_read(reader, buf, cap, e);
        int err = n > 0 ? write_all_at(j->carry_fd, buf, (size_t)n, j->carry_len) : 0;
        if (n < 0)
            rc = (int)n;
        else if (n == 0)
            rc = cu_fail(e, CU_EIO, "The object at %s is shorter than its upload", key);
        else if (err)
            rc = spool_fail(e, err, "spooling bytes to concatenate");
        else {
            got += n;
            j->carry_len += n;
        }
    }
    if (reader)
        s3_reader_close(reader);
    free(buf);
    return rc;
}

/* The carry as dst's next part. */
static int carry_send(concat_job *j, cu_error *e)
{
    int index = j->parts.n;
    if (index >= S3_MAX_PARTS)
        return cu_fail(e, CU_ETOOLARGE, "An S3 upload has at most %d parts", S3_MAX_PARTS);
    char *etag = NULL;
    int rc = upload_part_file(j->s, j->dst->key, j->dst->storage_ref, index, j->carry_fd,
                              j->carry_len, NULL, &etag, NULL, e);
    if (rc == 0 && chunks_add(&j->parts, index, j->carry_len, etag) != 0)
        rc = cu_fail_oom(e);
    if (rc == 0 && ftruncate(j->carry_fd, 0) != 0)
        rc = spool_fail(e, errno, "emptying a spool file");
    if (rc == 0)
        j->carry_len = 0;
    return rc;
}

/* Adds the (completed) source src to dst: last says no source with bytes follows. */
static int concat_source(concat_job *j, const storage_upload *src, bool last, cu_error *e)
{
    int64_t min = j->s->base.min_part_size, off = 0, rest = src->total_size;
    int rc = 0;
    if (rest > 0 && j->carry_len > 0) { /* first make up the part that waits */
        off = rest < min - j->carry_len ? rest : min - j->carry_len;
        rc = carry_fill(j, src->key, 0, off, e);
        if (rc == 0 && j->carry_len >= min)
            rc = carry_send(j, e);
        rest -= off;
    }
    if (rc || rest == 0)
        return rc;
    if (rest < min && !(last && j->carry_len == 0 && off == 0))
        return carry_fill(j, src->key, off, rest, e);
    /* Copied by S3, in as few parts as it allows (5 GiB at most): none below 5 MiB but, for
     * the very last source, a small one that is then the last part. */
    int64_t pieces = (rest + S3_MAX_PART - 1) / S3_MAX_PART;
    for (int64_t p = 0; rc == 0 && p < pieces; p++) {
        int64_t a = off + rest * p / pieces, b = off + rest * (p + 1) / pieces;
        rc = copy_part(j, src, a, b - a, e);
    }
    return rc;
}

static int s3_concat(storage_t *base, const storage_upload *dst, const storage_source *srcs, int n,
                     storage_written *out, cu_error *e)
{
    s3_storage *s = (s3_storage *)base;
    int64_t total = 0;
    int last = -1; /* the last source with bytes */
    for (int i = 0; i < n; i++) {
        assert(srcs[i].upload.total_size >= 0);
        total += srcs[i].upload.total_size;
        if (srcs[i].upload.total_size > 0)
            last = i;
    }
    assert(dst->total_size < 0 || dst->total_size == total);
    if (total == 0)
        return 0;
    if (!dst->storage_ref)
        return cu_fail(e, CU_EIO, "Upload has no S3 multipart upload");
    int rc = 0;
    for (int i = 0; rc == 0 && i <= last; i++)
        if (srcs[i].upload.total_size > 0)
            rc = complete_upload(s, &srcs[i].upload, srcs[i].chunks, srcs[i].nchunks, e);
    concat_job j = {.s = s, .dst = dst, .carry_fd = -1};
    for (int i = 0; rc == 0 && i <= last; i++)
        rc = concat_source(&j, &srcs[i].upload, i == last, e);
    if (rc == 0 && j.carry_len > 0)
        rc = carry_send(&j, e);
    if (j.carry_fd >= 0)
        close(j.carry_fd);
    if (rc) {
        storage_chunks_free(j.parts.items, j.parts.n);
        return rc;
    }
    out->chunks = j.parts.items;
    out->nchunks = j.parts.n;
    out->durable = total;
    return 0;
}

/* ---- deferred length ---- */

/* A multipart upload does not need its size up front: S3 learns it from the parts. Only the
 * part count bounds it. */
static int s3_declare_length(storage_t *base, const storage_upload *u, int64_t total_size,
                             cu_error *e)
{
    (void)base;
    if (total_size > (int64_t)S3_MAX_PARTS * u->part_size)
        return cu_fail(e, CU_ETOOLARGE, "An S3 upload has at most %d parts of %lld bytes",
                       S3_MAX_PARTS, (long long)u->part_size);
    return 0;
}

/* ---- sweep ---- */

/* The upload a staging key (below the prefix) belongs to: ".partials/<id>" or
 * "[dir/]<id>_<name>". False for keys that are not ours. */
static bool id_of_key(const char *key, char id[CU_UUID_LEN + 1])
{
    const char *leaf = strrchr(key, '/');
    leaf = leaf ? leaf + 1 : key;
    bool partial = !strncmp(key, ".partials/", 10) && strlen(key) == 10 + CU_UUID_LEN;
    if (!partial && (strlen(leaf) <= CU_UUID_LEN || leaf[CU_UUID_LEN] != '_'))
        return false;
    memcpy(id, partial ? key + 10 : leaf, CU_UUID_LEN);
    id[CU_UUID_LEN] = '\0';
    return util_is_uuid(id);
}

/* Seconds since the epoch of an ISO 8601 UTC time ("2026-11-29T20:00:00.000Z"), or 0. */
static int64_t iso_time(const char *text)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *end = strptime(text, "%Y-%m-%dT%H:%M:%S", &tm);
    return end ? (int64_t)timegm(&tm) : 0;
}

/* The newest modification time of dir (an append spool) and the files in it. */
static int64_t spool_changed_at(int dirfd)
{
    struct stat st;
    int64_t newest = fstat(dirfd, &st) == 0 ? (int64_t)st.st_mtime : 0;
    int fd = dup(dirfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return newest;
    }
    for (struct dirent *ent; (ent = readdir(d));)
        if (ent->d_name[0] != '.' && fstatat(dirfd, ent->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
            (int64_t)st.st_mtime > newest)
            newest = (int64_t)st.st_mtime;
    closedir(d);
    return newest;
}

/* Every append spool (TEMP_STORAGE_PATH/appends/<id>), as a staging object of its own: a
 * crash can leave one whose multipart upload never started or was aborted already. */
static int list_spools(s3_storage *s, int (*fn)(void *ctx, const storage_staged *), void *ctx,
                       cu_error *e)
{
    char *dir = NULL;
    if (asprintf(&dir, "%s/appends", s->spool_dir) < 0)
        return cu_fail_oom(e);
    DIR *d = opendir(dir);
    free(dir);
    if (!d)
        return errno == ENOENT ? 0 : spool_fail(e, errno, "listing the append spools");
    int rc = 0;
    for (struct dirent *ent; rc == 0 && (ent = readdir(d));) {
        if (!util_is_uuid(ent->d_name))
            continue; /* not ours */
        int dirfd = append_dir_open(s, ent->d_name, false);
        if (dirfd < 0)
            continue; /* gone meanwhile, or not a directory */
        storage_staged staged = {.id = ent->d_name, .changed_at = spool_changed_at(dirfd)};
        close(dirfd);
        rc = fn(ctx, &staged);
    }
    closedir(d);
    return rc;
}

/* Every multipart upload under the prefix (ListMultipartUploads, 50 to a page), then every
 * append spool. */
static int s3_list_staged(storage_t *base, int (*fn)(void *ctx, const storage_staged *), void *ctx,
                          cu_error *e)
{
    s3_storage *s = (s3_storage *)base;
    char key_marker[1024] = "", id_marker[1024] = "";
    s3_reply *r = reply_new();
    if (!r)
        return cu_fail_oom(e);
    int rc = 0;
    for (bool more = true; rc == 0 && more;) {
        /* The query in canonical (sorted) order, values encoded, as SigV4 signs it. */
        size_t cap = strlen(s->base_url) +
                     3 * (strlen(s->prefix) + sizeof key_marker + sizeof id_marker) + 128;
        char *url = malloc(cap);
        if (!url) {
            rc = cu_fail_oom(e);
            break;
        }
        snprintf(url, cap, "%s/?key-marker=", s->base_url);
        util_percent_encode(url, cap, key_marker, false);
        size_t len = strlen(url);
        snprintf(url + len, cap - len, "&max-uploads=50&prefix=");
        util_percent_encode(url, cap, s->prefix, false);
        len = strlen(url);
        snprintf(url + len, cap - len, "&upload-id-marker=");
        util_percent_encode(url, cap, id_marker, false);
        len = strlen(url);
        snprintf(url + len, cap - len, "&uploads=");
        int got = s3_request(
            s, &(s3_req){.method = "GET", .url = url, .payload_sha256 = EMPTY_SHA256}, r);
        free(url);
        if (got != 0) {
            rc = upstream_fail(e, "ListMultipartUploads", r);
            break;
        }
        for (char *p = strstr(r->body, "<Upload>"); rc == 0 && p; p = strstr(p + 1, "<Upload>")) {
            char *end = strstr(p, "</Upload>");
            if (!end)
                break;
            *end = '\0'; /* xml_value looks inside this entry only */
            char key[1024], upload_id[1024], when[64], id[CU_UUID_LEN + 1];
            bool ok = xml_value(p, "Key", key, sizeof key) &&
                      xml_value(p, "UploadId", upload_id, sizeof upload_id) &&
                      xml_value(p, "Initiated", when, sizeof when);
            *end = '<';
            size_t plen = strlen(s->prefix);
            if (!ok || strncmp(key, s->prefix, plen) != 0 || !id_of_key(key + plen, id))
                continue;
            storage_staged staged = {.id = id,
                                     .key = key + plen,
                                     .storage_ref = upload_id,
                                     .changed_at = iso_time(when)};
            rc = fn(ctx, &staged);
        }
        char truncated[16] = "";
        xml_value(r->body, "IsTruncated", truncated, sizeof truncated);
        more = !strcmp(truncated, "true") &&
               xml_value(r->body, "NextKeyMarker", key_marker, sizeof key_marker) &&
               xml_value(r->body, "NextUploadIdMarker", id_marker, sizeof id_marker);
    }
    reply_free(r);
    return rc ? rc : list_spools(s, fn, ctx, e);
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
    free(s->region);
    free(s->spool_dir);
    free(s);
}

static const struct storage_ops s3_ops = {
    .stage_create = s3_stage_create,
    .writer_open = s3_writer_open,
    .finish = s3_finish,
    .abort = s3_abort,
    .destroy = s3_destroy,
};
static const struct storage_read_ops s3_read_ops = {
    .zero_copy = false, .stat = s3_stat, .open = s3_read_open};
static const struct storage_remove_ops s3_remove_ops = {.remove = s3_remove};
static const struct storage_concat_ops s3_concat_ops = {.concat = s3_concat};
static const struct storage_defer_ops s3_defer_ops = {.declare_length = s3_declare_length};
static const struct storage_append_ops s3_append_ops = {.open = s3_append_open};
static const struct storage_sweep_ops s3_sweep_ops = {.list_staged = s3_list_staged};
static const struct storage_presign_ops s3_presign_ops = {.presign_get = s3_presign_get};

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
    s->base.read = &s3_read_ops;
    s->base.remove = &s3_remove_ops;
    s->base.concat = &s3_concat_ops;
    s->base.defer = &s3_defer_ops;
    s->base.append = &s3_append_ops;
    s->base.sweep = &s3_sweep_ops;
    s->base.presign = &s3_presign_ops;
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
    s->region = strdup(o->region);
    if (!s->share || !s->bucket || !s->endpoint || !s->base_url || !s->spool_dir || !s->prefix ||
        !s->userpwd || !s->region || (token && !s->token_header)) {
        s3_destroy(&s->base);
        return cu_fail_oom(err);
    }

    /* The spool must take anonymous files (O_TMPFILE) before we accept any part; appends
     * keep theirs (named) below appends/. */
    char *appends = NULL;
    int rc =
        asprintf(&appends, "%s/appends", s->spool_dir) < 0 ? -ENOMEM : util_mkdir_p(appends, 0700);
    free(appends);
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
