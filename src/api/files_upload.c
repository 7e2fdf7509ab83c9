/* files_upload.c - POST /api/files/upload: a whole file in one request.
 *
 * Two forms. A raw body (any Content-Type but multipart/form-data) names the file with
 * ?filename= (which may carry a directory, like the seed's filename). multipart/form-data
 * carries it in a part named "file" (its filename, and its Content-Type); a "path" field (a
 * directory) and a "webhook_url" field must come before that part, because the file's name,
 * and so its key in storage (S3 fixes the key when the upload starts), is decided when the
 * part starts: a path after the file is refused (400) rather than the file stored where the
 * client did not mean. The same values may come as query parameters instead (?path=,
 * ?webhook_url=, ?filename= over the part's filename), which works with either form.
 *
 * Either way the upload is one stream write through the engine: created (stream layout)
 * when the file's first byte is near, its bytes appended as they arrive (a multipart file
 * part is never held whole; memory is the writer's buffer), its length declared when the
 * body ends if it was not known (multipart, chunked), which completes it in the same
 * request: the seed's complete reply, and the engine's finished event fires the webhook. At
 * most MAX_SINGLE_UPLOAD_MB MiB: checked against Content-Length before 100 Continue, and
 * counted as the file streams. Whatever fails after the upload was created cancels it, so
 * nothing half-written stays behind. */
#include "api/files.h"

#include "api/auth.h"
#include "api/download.h"
#include "api/file_reply.h"
#include "base/log.h"
#include "base/util.h"
#include "core/filename.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Room a multipart body needs beyond its file: boundaries, part headers, a path field. */
#define MULTIPART_OVERHEAD (64 * 1024)
/* The most bytes of form fields other than the file (ignored ones included). */
#define FIELDS_MAX (16 * 1024)
#define WEBHOOK_URL_MAX 2048

typedef enum { FIELD_NONE, FIELD_PATH, FIELD_WEBHOOK, FIELD_FILE, FIELD_OTHER } field_kind;

typedef struct {
    files_api *api;
    const char *owner; /* who creates it (the request's principal) */
    int64_t limit;     /* bytes the file may have */
    field_kind field;  /* the multipart part being read */
    char dir[FILENAME_MAX_TOTAL + 1];
    size_t dir_len;
    bool dir_from_query;
    char webhook[WEBHOOK_URL_MAX + 1];
    size_t webhook_len;
    bool webhook_from_query;
    const char *query_filename;
    int64_t field_bytes; /* of the fields that are not the file */
    bool file_seen;
    bool created; /* u is an upload that must complete or be cancelled */
    meta_upload u;
    upload_write *w;
    int64_t received;
} single_upload;

static void single_free(single_upload *s)
{
    meta_upload_clear(&s->u);
    free(s);
}

/* The request ended without completing: drop the write and the upload. */
static void single_abort(void *state)
{
    single_upload *s = state;
    if (s->w)
        upload_write_abort(s->w);
    s->w = NULL;
    if (s->created) {
        cu_error err;
        if (upload_cancel(s->api->uploads, s->u.id, NULL, &err) != 0)
            log_warn("upload %s: cancelling an unfinished single upload: %s", s->u.id, err.msg);
    }
    single_free(s);
}

/* Copies a query value into buf (cap bytes with the NUL); false when it does not fit. */
static bool take_query(const char *value, char *buf, size_t cap, size_t *len)
{
    size_t n = strlen(value);
    if (n >= cap)
        return false;
    memcpy(buf, value, n + 1);
    *len = n;
    return true;
}

/* Creates the upload for a file called `name` (a part's filename, or ?filename=) of
 * total_size bytes (-1: not known yet) and opens its one write. */
static int single_begin(single_upload *s, const char *name, const char *content_type,
                        int64_t total_size, cu_error *err)
{
    if (s->query_filename)
        name = s->query_filename;
    if (!name || !*name)
        return cu_fail(err, CU_EINVAL,
                       "The file needs a name: ?filename= with a raw body, or multipart/form-data "
                       "with a \"file\" part that has a filename");
    /* path + "/" + name, the path without slashes around it. */
    const char *dir = s->dir;
    size_t dir_len = s->dir_len;
    while (dir_len && *dir == '/')
        dir++, dir_len--;
    while (dir_len && dir[dir_len - 1] == '/')
        dir_len--;
    size_t name_len = strlen(name);
    if (dir_len + 1 + name_len > FILENAME_MAX_TOTAL)
        return cu_fail(err, CU_EINVAL, "path and filename are over %d bytes together",
                       FILENAME_MAX_TOTAL);
    char full[FILENAME_MAX_TOTAL + 2];
    int n = dir_len ? snprintf(full, sizeof full, "%.*s/%s", (int)dir_len, dir, name)
                    : snprintf(full, sizeof full, "%s", name);
    if (s->limit > 0 && total_size > s->limit)
        return cu_fail(err, CU_ETOOLARGE,
                       "The file is %lld bytes, more than one request takes (%lld bytes); "
                       "upload it in parts (POST /upload/init)",
                       (long long)total_size, (long long)s->limit);
    upload_create_request cr = {
        .protocol = "single",
        .owner = s->owner,
        .filename = full,
        .filename_len = (size_t)n,
        /* a malformed type is not kept (downloads would not send it) */
        .content_type = content_type && download_content_type(content_type) == content_type
                            ? content_type
                            : NULL,
        .total_size = total_size,
        .layout = UPLOAD_LAYOUT_STREAM,
        .webhook_url = s->webhook_len ? s->webhook : NULL};
    int rc = upload_create(s->api->uploads, &cr, &s->u, err);
    if (rc)
        return rc;
    s->created = true;
    upload_write_request wr = {.id = s->u.id, .offset = 0, .length = total_size};
    return upload_write_begin(s->api->uploads, &wr, &s->w, err);
}

static int file_bytes(single_upload *s, const char *buf, size_t len, cu_error *err)
{
    s->received += (int64_t)len;
    if (s->received > s->limit)
        return cu_fail(err, CU_ETOOLARGE,
                       "The file is more than one request takes (%lld bytes); upload it in "
                       "parts (POST /upload/init)",
                       (long long)s->limit);
    return upload_write_data(s->w, buf, len, err);
}

/* The body is in: fix the length if it was not known, and end the write (which completes
 * the upload). Replies either way; frees s. */
static void single_end(void *state, http_request *req)
{
    single_upload *s = state;
    cu_error err;
    int rc = 0;
    if (!s->file_seen)
        rc = cu_fail(&err, CU_EINVAL, "No file: send it in a multipart part named \"file\"");
    if (rc == 0 && s->u.total_size < 0)
        rc = upload_declare_length(s->api->uploads, s->u.id, s->received, &err);
    upload_write_result res = {0};
    if (rc == 0) {
        upload_write *w = s->w;
        s->w = NULL;
        rc = upload_write_end(w, &res, &err);
    }
    if (rc == 0 && !res.completed) /* every byte is in: complete it (idempotent) */
        rc = cu_fail(&err, CU_EIO, "The upload did not complete with its last byte");
    if (rc) {
        http_reply_cu_error(req, &err);
        single_abort(s);
        return;
    }
    json_t *reply = file_reply_complete(&res.upload, upload_storage_name(s->api->uploads));
    if (reply)
        json_object_set_new(reply, "sha256",
                            res.upload.sha256 ? json_string(res.upload.sha256) : json_null());
    http_reply_json(req, 200, reply);
    upload_write_result_clear(&res);
    single_free(s);
}

/* ---- a raw body ---- */

static int raw_data(void *state, const char *buf, size_t len, cu_error *err)
{
    return file_bytes(state, buf, len, err);
}

static const http_stream_ops raw_ops = {.data = raw_data, .end = single_end, .abort = single_abort};

/* ---- multipart/form-data ---- */

/* Appends a field's bytes to buf (cap bytes with the NUL). */
static int field_append(char *buf, size_t cap, size_t *len, const char *data, size_t n,
                        const char *name, cu_error *err)
{
    if (*len + n >= cap)
        return cu_fail(err, CU_EINVAL, "The %s field is over %zu bytes", name, cap - 1);
    memcpy(buf + *len, data, n);
    *len += n;
    buf[*len] = '\0';
    return 0;
}

static int mp_field(void *state, const char *name, const char *filename, const char *content_type,
                    cu_error *err)
{
    single_upload *s = state;
    if (!strcmp(name, "file")) {
        if (s->file_seen)
            return cu_fail(err, CU_EINVAL, "One file per request: a second \"file\" part came");
        s->file_seen = true;
        s->field = FIELD_FILE;
        return single_begin(s, filename, content_type, -1, err);
    }
    bool path = !strcmp(name, "path"), webhook = !strcmp(name, "webhook_url");
    if ((path || webhook) && s->file_seen)
        return cu_fail(err, CU_EINVAL,
                       "The %s field must come before the file part (or use ?%s=): the file is "
                       "stored as it arrives",
                       name, name);
    if (path) {
        if (!s->dir_from_query)
            s->dir_len = 0, s->dir[0] = '\0';
        s->field = s->dir_from_query ? FIELD_OTHER : FIELD_PATH;
    } else if (webhook) {
        if (!s->webhook_from_query)
            s->webhook_len = 0, s->webhook[0] = '\0';
        s->field = s->webhook_from_query ? FIELD_OTHER : FIELD_WEBHOOK;
    } else {
        s->field = FIELD_OTHER; /* not ours: read and dropped */
    }
    return 0;
}

static int mp_data(void *state, const char *buf, size_t len, cu_error *err)
{
    single_upload *s = state;
    if (s->field == FIELD_FILE)
        return file_bytes(s, buf, len, err);
    s->field_bytes += (int64_t)len;
    if (s->field_bytes > FIELDS_MAX)
        return cu_fail(err, CU_EINVAL, "The form fields besides the file are over %d bytes",
                       FIELDS_MAX);
    if (s->field == FIELD_PATH)
        return field_append(s->dir, sizeof s->dir, &s->dir_len, buf, len, "path", err);
    if (s->field == FIELD_WEBHOOK)
        return field_append(s->webhook, sizeof s->webhook, &s->webhook_len, buf, len, "webhook_url",
                            err);
    return 0;
}

static const http_multipart_ops multipart_ops = {
    .field = mp_field, .data = mp_data, .end = single_end, .abort = single_abort};

void files_upload_handle(void *ctx, http_request *req)
{
    files_api *api = ctx;
    const cu_config *cfg = api->cfg;
    single_upload *s = calloc(1, sizeof *s);
    if (!s) {
        http_reply_error(req, 500, "Out of memory");
        return;
    }
    s->api = api;
    s->owner = http_principal(req);
    s->limit = cfg->max_single_upload;
    if (cfg->max_file_size > 0 && cfg->max_file_size < s->limit)
        s->limit = cfg->max_file_size;
    s->query_filename = http_query(req, "filename");
    const char *path = http_query(req, "path"), *webhook = http_query(req, "webhook_url");
    if (path && !(s->dir_from_query = take_query(path, s->dir, sizeof s->dir, &s->dir_len))) {
        http_reply_error(req, 400, "path is over %d bytes", FILENAME_MAX_TOTAL);
        single_free(s);
        return;
    }
    if (webhook && !(s->webhook_from_query =
                         take_query(webhook, s->webhook, sizeof s->webhook, &s->webhook_len))) {
        http_reply_error(req, 400, "webhook_url is over %d bytes", WEBHOOK_URL_MAX);
        single_free(s);
        return;
    }
    int64_t length = http_content_length(req);
    const char *type = http_header(req, "Content-Type");
    cu_error err;
    if (type && !strncasecmp(type, "multipart/form-data", 19)) {
        /* The file is at most the body: a body too large for any file is refused now. */
        if (length > s->limit + MULTIPART_OVERHEAD) {
            http_reply_error(req, 413,
                             "The body is %lld bytes, more than one request takes (a file of "
                             "%lld bytes); upload it in parts (POST /upload/init)",
                             (long long)length, (long long)s->limit);
            single_free(s);
            return;
        }
        if (http_want_multipart(req, &multipart_ops, s) != 0)
            single_free(s);
        return;
    }
    s->file_seen = true;
    /* curl -d and HTML forms label any body as a form; it says nothing of the file. */
    if (type && !strncasecmp(type, "application/x-www-form-urlencoded", 33))
        type = NULL;
    if (single_begin(s, NULL, type, length, &err) != 0) {
        http_reply_cu_error(req, &err);
        single_abort(s);
        return;
    }
    http_want_stream(req, &raw_ops, s);
}
