/* s3.c - S3 (AWS, MinIO, R2, Ceph, any S3-compatible store) as the blob store.
 *
 * One upload is one S3 multipart upload at the final key: init is CreateMultipartUpload,
 * part n is UploadPart number n+1, complete is one CompleteMultipartUpload (no copy, no
 * local assembly: the same time for 1 GB as for 100 GB), cancel and expiry are
 * AbortMultipartUpload. A part's body is spooled to an anonymous file in TEMP_STORAGE_PATH
 * as it streams in (memory stays bounded, and a failed UploadPart can be retried from it),
 * then sent with its SHA-256 as the signed payload hash, so S3 checks every byte; the
 * client's reply waits for S3's answer. Requests are signed by libcurl (CURLOPT_AWS_SIGV4).
 * Transient failures (connection errors, timeouts, 5xx, 429) are retried with backoff. */
#include "storage/storage.h"

#include "base/log.h"
#include "base/util.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define S3_TRIES 4
#define S3_BODY_MAX (64 * 1024)
#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

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

/* ---- requests ---- */

typedef struct {
    long status;
    char body[S3_BODY_MAX + 1];
    size_t body_len;
    char etag[256];
    char code[128];    /* S3's <Code>, or the curl error for transport failures */
    char message[256]; /* S3's <Message>, or the curl error text */
} s3_reply;

typedef struct {
    int fd;                 /* body from a file (pread), or -1 */
    const char *data;       /* body from memory */
    int64_t length, offset; /* of the body; offset = bytes sent so far */
} s3_body;

static size_t on_body(char *p, size_t size, size_t n, void *ctx)
{
    s3_reply *r = ctx;
    size_t len = size * n, room = S3_BODY_MAX - r->body_len;
    memcpy(r->body + r->body_len, p, len < room ? len : room);
    r->body_len += len < room ? len : room;
    r->body[r->body_len] = '\0';
    return len;
}

static size_t on_header(char *p, size_t size, size_t n, void *ctx)
{
    s3_reply *r = ctx;
    size_t len = size * n;
    if (len > 5 && !strncasecmp(p, "ETag:", 5)) {
        const char *v = p + 5;
        while (*v == ' ')
            v++;
        size_t vlen = len - (size_t)(v - p);
        while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' '))
            vlen--;
        snprintf(r->etag, sizeof r->etag, "%.*s", (int)vlen, v);
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

/* One S3 request with retries. payload_sha256 is the hex SHA-256 of the body (signed by
 * SigV4; S3 rejects a body that does not match it). Returns 0 when S3 answered 2xx. */
static int s3_request(s3_storage *s, const char *method, const char *url, s3_body *body,
                      const char *payload_sha256, const char *content_type, s3_reply *r)
{
    for (int attempt = 1;; attempt++) {
        memset(r, 0, sizeof *r);
        CURL *curl = curl_easy_init();
        if (!curl) {
            snprintf(r->code, sizeof r->code, "OutOfMemory");
            return -1;
        }
        struct curl_slist *headers = NULL;
        char line[160];
        snprintf(line, sizeof line, "x-amz-content-sha256: %s", payload_sha256);
        headers = curl_slist_append(headers, line);
        if (s->token_header)
            headers = curl_slist_append(headers, s->token_header);
        if (content_type) {
            snprintf(line, sizeof line, "Content-Type: %s", content_type);
            headers = curl_slist_append(headers, line);
        }
        headers = curl_slist_append(headers, "Expect:");
        curl_easy_setopt(curl, CURLOPT_URL, url);
        curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(curl, CURLOPT_AWS_SIGV4, s->sigv4);
        curl_easy_setopt(curl, CURLOPT_USERPWD, s->userpwd);
        curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 10L);
        if (body && body->fd >= 0) {
            /* A part upload that stalls below 1 KiB/s for 60 s is dead: retry it. */
            curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1024L);
            curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, 60L);
        } else {
            /* CompleteMultipartUpload of a large object may take minutes on AWS, which
             * keeps the connection alive with a trickle of whitespace meanwhile. */
            curl_easy_setopt(curl, CURLOPT_TIMEOUT, 900L);
        }
        curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(curl, CURLOPT_WRITEDATA, r);
        curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(curl, CURLOPT_HEADERDATA, r);
        if (!strcmp(method, "HEAD"))
            curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
        if (body) {
            body->offset = 0;
            curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
            curl_easy_setopt(curl, CURLOPT_READFUNCTION, on_read);
            curl_easy_setopt(curl, CURLOPT_READDATA, body);
            curl_easy_setopt(curl, CURLOPT_INFILESIZE_LARGE, (curl_off_t)body->length);
        }
        CURLcode res = curl_easy_perform(curl);
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r->status);
        curl_slist_free_all(headers);
        curl_easy_cleanup(curl);
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
        double delay = 0.25 * (1 << (attempt - 1));
        log_warn("s3: %s %s: %s %s; retrying in %.2f s", method, url, r->code, r->message, delay);
        usleep((useconds_t)(delay * 1e6));
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

/* ---- the storage interface ---- */

static int s3_stage_create(storage_t *base, const storage_upload *u, char **storage_ref,
                           cu_error *e)
{
    s3_storage *s = (s3_storage *)base;
    if (u->total_size == 0)
        return 0; /* S3 multipart needs a part: an empty file is one PutObject at the end */
    char *url = object_url(s, u->key, Q_UPLOADS, NULL, 0);
    if (!url)
        return cu_fail(e, CU_EIO, "Out of memory");
    s3_reply *r = malloc(sizeof *r);
    s3_body none = {.fd = -1, .data = "", .length = 0};
    int rc = 0;
    if (!r)
        rc = cu_fail(e, CU_EIO, "Out of memory");
    else if (s3_request(s, "POST", url, &none, EMPTY_SHA256, NULL, r) != 0)
        rc = upstream_fail(e, "CreateMultipartUpload", r);
    else {
        char upload_id[1024];
        if (!xml_value(r->body, "UploadId", upload_id, sizeof upload_id) || !*upload_id)
            rc = cu_fail(e, CU_EUPSTREAM, "S3 answered CreateMultipartUpload without an UploadId");
        else
            *storage_ref = strdup(upload_id);
    }
    free(r);
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
        return cu_fail(e, CU_EIO, "Out of memory");
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
    s3_reply *r = malloc(sizeof *r);
    int rc = 0;
    if (!r)
        rc = cu_fail(e, CU_EIO, "Out of memory");
    else if (s3_request(w->s3, "PUT", w->url, &body, hex, NULL, r) != 0)
        rc = upstream_fail(e, "UploadPart", r);
    else if (!r->etag[0])
        rc = cu_fail(e, CU_EUPSTREAM, "S3 answered UploadPart without an ETag");
    else if (!(out->chunks = calloc(1, sizeof *out->chunks)) ||
             !(out->chunks[0].ref = strdup(r->etag))) {
        free(out->chunks);
        out->chunks = NULL;
        rc = cu_fail_oom(e);
    } else {
        out->nchunks = 1;
        out->chunks[0].index = w->part;
        out->chunks[0].size = w->written;
        out->durable = w->written;
    }
    free(r);
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
    s3_reply *r = malloc(sizeof *r);
    bool found = url && r && s3_request(s, "HEAD", url, NULL, EMPTY_SHA256, NULL, r) == 0;
    free(r);
    free(url);
    return found;
}

static int s3_finish(storage_t *base, const storage_upload *u, const storage_chunk *chunks,
                     int nparts, char **final_path, cu_error *e)
{
    s3_storage *s = (s3_storage *)base;
    int rc = 0;
    char *url = NULL, *xml = NULL;
    s3_reply *r = malloc(sizeof *r);
    if (!r)
        return cu_fail(e, CU_EIO, "Out of memory");
    if (u->total_size == 0 || !u->storage_ref) {
        url = object_url(s, u->key, Q_OBJECT, NULL, 0);
        s3_body empty = {.fd = -1, .data = "", .length = 0};
        if (!url)
            rc = cu_fail(e, CU_EIO, "Out of memory");
        else if (s3_request(s, "PUT", url, &empty, EMPTY_SHA256, NULL, r) != 0)
            rc = upstream_fail(e, "PutObject", r);
        goto out;
    }
    /* <CompleteMultipartUpload><Part><PartNumber>n</PartNumber><ETag>..</ETag></Part>...  */
    size_t cap = 128 + (size_t)nparts * (64 + 256), len = 0;
    xml = malloc(cap);
    url = object_url(s, u->key, Q_UPLOAD, u->storage_ref, 0);
    if (!xml || !url) {
        rc = cu_fail(e, CU_EIO, "Out of memory");
        goto out;
    }
    len += (size_t)snprintf(xml + len, cap - len, "<CompleteMultipartUpload>");
    for (int i = 0; i < nparts; i++) {
        char etag[512] = "";
        /* ETags are quoted strings; escape what XML needs escaped. */
        for (const char *p = chunks[i].ref ? chunks[i].ref : ""; *p && strlen(etag) < 480; p++)
            strcat(etag, *p == '"' ? "&quot;" : *p == '&' ? "&amp;" : (char[]){*p, 0});
        len += (size_t)snprintf(xml + len, cap - len,
                                "<Part><PartNumber>%d</PartNumber><ETag>%s</ETag></Part>",
                                chunks[i].index + 1, etag);
    }
    len += (size_t)snprintf(xml + len, cap - len, "</CompleteMultipartUpload>");
    char hex[CU_SHA256_HEX_LEN + 1];
    util_sha256_hex(xml, len, hex);
    s3_body body = {.fd = -1, .data = xml, .length = (int64_t)len};
    if (s3_request(s, "POST", url, &body, hex, "application/xml", r) != 0) {
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
        rc = cu_fail(e, CU_EIO, "Out of memory");
    free(xml);
    free(url);
    free(r);
    return rc;
}

static int s3_abort(storage_t *base, const storage_upload *u, cu_error *e)
{
    s3_storage *s = (s3_storage *)base;
    if (!u->storage_ref)
        return 0;
    char *url = object_url(s, u->key, Q_UPLOAD, u->storage_ref, 0);
    s3_reply *r = malloc(sizeof *r);
    int rc = 0;
    if (!url || !r)
        rc = cu_fail(e, CU_EIO, "Out of memory");
    else if (s3_request(s, "DELETE", url, NULL, EMPTY_SHA256, NULL, r) != 0 &&
             strcmp(r->code, "NoSuchUpload") != 0)
        rc = upstream_fail(e, "AbortMultipartUpload", r);
    free(r);
    free(url);
    return rc;
}

static void s3_destroy(storage_t *base)
{
    s3_storage *s = (s3_storage *)base;
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

int storage_s3_open(const storage_s3_options *o, storage_t **out, cu_error *err)
{
    s3_storage *s = calloc(1, sizeof *s);
    if (!s)
        return cu_fail(err, CU_EIO, "Out of memory");
    s->base.ops = &s3_ops;
    s->base.name = "s3";
    s->base.min_part_size = 5 * 1024 * 1024;
    s->base.allows_trailing_dot_space = true;
    s->bucket = strdup(o->bucket);
    s->endpoint = storage_s3_endpoint(o->endpoint, o->region);
    s->base_url = storage_s3_base_url(o->endpoint, o->bucket, o->region);
    if (!s->endpoint || !s->base_url) {
        s3_destroy(&s->base);
        return cu_fail(err, CU_EIO, "Out of memory");
    }
    size_t len;
    /* The prefix is a key prefix: "a/b" and "/a/b/" both mean keys under "a/b/". */
    const char *p = o->prefix ? o->prefix : "";
    while (*p == '/')
        p++;
    len = strlen(p);
    while (len && p[len - 1] == '/')
        len--;
    s->prefix = malloc(len + 2);
    snprintf(s->prefix, len + 2, len ? "%.*s/" : "%.*s", (int)len, p);
    len = strlen(o->access_key_id) + strlen(o->secret_access_key) + 2;
    s->userpwd = malloc(len);
    snprintf(s->userpwd, len, "%s:%s", o->access_key_id, o->secret_access_key);
    if (o->session_token && *o->session_token) {
        len = strlen(o->session_token) + 32;
        s->token_header = malloc(len);
        snprintf(s->token_header, len, "x-amz-security-token: %s", o->session_token);
    }
    snprintf(s->sigv4, sizeof s->sigv4, "aws:amz:%s:s3", o->region);
    s->spool_dir = strdup(o->spool_dir);

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
    size_t ulen = strlen(s->base_url) + 32;
    char *url = malloc(ulen);
    s3_reply *r = malloc(sizeof *r);
    snprintf(url, ulen, "%s/?max-keys=1", s->base_url);
    rc = 0;
    if (s3_request(s, "GET", url, NULL, EMPTY_SHA256, NULL, r) != 0) {
        cu_fail(err, CU_EUPSTREAM, "S3: cannot use bucket \"%s\" at %s: %s%s%s", s->bucket,
                s->endpoint, r->code, r->message[0] ? ": " : "", r->message);
        rc = CU_EUPSTREAM;
    }
    free(r);
    free(url);
    if (rc) {
        s3_destroy(&s->base);
        return rc;
    }
    *out = &s->base;
    return 0;
}
