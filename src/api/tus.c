/* tus.c - tus 1.0.0 on the engine.
 *
 * Every tus upload is a stream upload of the engine: POST creates it (partial ones for a
 * later concatenation, or a final one joined from them at once), PATCH appends at the
 * durable offset the client names, HEAD reports that offset, DELETE terminates. The engine
 * does the rest: one writer per upload (a second PATCH is 423), what a cut-off PATCH made
 * durable is kept, the last byte completes the upload, storage joins partial uploads. This
 * module reads the tus headers (tus_header.c), picks the statuses the specification gives,
 * and writes the tus reply headers. */
#include "api/tus.h"

#include "api/auth.h"
#include "api/seed_path.h"
#include "api/tus_header.h"
#include "base/log.h"
#include "base/util.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define TUS_VERSION "1.0.0"
#define TUS_STATUS_CHECKSUM_MISMATCH 460
/* The name an upload gets when its metadata has none. */
#define TUS_DEFAULT_NAME "upload"

/* ---- replies ---- */

/* The tus status for an engine error: the table's, but a digest mismatch is tus's 460. */
static void reply_error(http_request *req, const cu_error *err)
{
    int status =
        err->code == CU_ECHECKSUM ? TUS_STATUS_CHECKSUM_MISMATCH : http_status_for(err->code);
    http_reply_error(req, status, "%s", err->msg);
}

static void add_number(http_request *req, const char *name, int64_t value)
{
    char text[24];
    snprintf(text, sizeof text, "%lld", (long long)value);
    http_add_header(req, name, text);
}

/* The URL of upload id: base URL, base path, id. */
static void upload_url(const tus_api *api, const http_request *req, const char *id, char *out,
                       size_t cap)
{
    /* The origin (scheme and host as the client addressed us, trusted proxies believed); when
     * the request has none fit for a URL, the path alone, which clients resolve against the
     * URL they used. */
    char base[300];
    if (http_origin(req, base, sizeof base) != 0)
        base[0] = '\0';
    snprintf(out, cap, "%s%s%s", base, api->collection, id);
}

/* Whether u still takes data or waits for a concatenation, so that it has an expiry. */
static bool expires(const meta_upload *u)
{
    return u->state == UPLOAD_PENDING || (u->partial && u->state == UPLOAD_COMPLETE);
}

/* Upload-Expires (expiration extension): an RFC 7231 date. */
static void add_expiry(http_request *req, const meta_upload *u)
{
    if (!expires(u))
        return;
    time_t t = (time_t)u->expires_at;
    struct tm tm;
    char date[40];
    gmtime_r(&t, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    http_add_header(req, "Upload-Expires", date);
}

/* The bytes of u the server holds, from its start. */
static int64_t upload_offset(const meta_upload *u)
{
    if (u->layout == UPLOAD_LAYOUT_STREAM)
        return u->durable_offset;
    return u->state == UPLOAD_COMPLETE ? u->total_size : 0;
}

/* ---- finding the upload ---- */

/* The upload the path names, as the caller may see it. Replies 404 for an unknown one and 410
 * for one that was terminated, expired, deleted or joined into a final upload (tus allows
 * either; 410 says it once was), and returns false then. */
static bool load_upload(tus_api *api, http_request *req, meta_upload *u)
{
    char id[CU_UUID_LEN + 1];
    cu_error err;
    int rc = seed_path_upload_id(http_param(req, "id"), id, &err);
    if (rc == 0)
        rc = upload_get(api->uploads, id, auth_scope_owner(req), u, &err);
    if (rc) {
        reply_error(req, &err);
        return false;
    }
    switch (u->state) {
    case UPLOAD_CANCELLED:
        rc = cu_fail(&err, CU_EGONE, "Upload was terminated");
        break;
    case UPLOAD_EXPIRED:
        rc = cu_fail(&err, CU_EGONE, "Upload expired");
        break;
    case UPLOAD_FAILED:
        rc = cu_fail(&err, CU_EGONE, "Upload failed");
        break;
    case UPLOAD_DELETED:
        rc = cu_fail(&err, CU_EGONE, "%s",
                     u->partial ? "This partial upload was joined into its final upload"
                                : "The file was deleted");
        break;
    default: /* past its expiry but not reaped yet: gone already */
        rc = expires(u) && upload_check_writable(u, &err) == CU_EGONE ? CU_EGONE : 0;
        break;
    }
    if (rc) {
        reply_error(req, &err);
        meta_upload_clear(u);
        return false;
    }
    return true;
}

/* ---- bodies (PATCH, and POST with creation-with-upload) ---- */

/* Whether the request's body is a tus chunk (Content-Type application/offset+octet-stream). */
static bool is_chunk(const http_request *req)
{
    const char *ct = http_header(req, "Content-Type");
    static const char want[] = "application/offset+octet-stream";
    size_t n = sizeof want - 1;
    return ct && !strncasecmp(ct, want, n) && (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

/* Whether the request announces a body at all. */
static bool has_body(const http_request *req)
{
    return http_content_length(req) > 0 || http_header(req, "Transfer-Encoding") != NULL;
}

/* Reads Upload-Checksum, if any, into the write request; replies 400 and returns false when it
 * is malformed or names an algorithm this server does not have. */
static bool read_checksum(http_request *req, upload_write_request *wr)
{
    const char *header = http_header(req, "Upload-Checksum");
    cu_error err;
    if (header && tus_checksum_parse(header, &wr->digest_alg, wr->digest, &err) != 0) {
        reply_error(req, &err);
        return false;
    }
    return true;
}

static int body_data(void *state, const char *buf, size_t len, cu_error *err)
{
    return upload_write_data(state, buf, len, err);
}

static void body_abort(void *state)
{
    upload_write_abort(state);
}

/* The body is in: the write is recorded (and the upload completed when it was the last byte),
 * and the reply says where the upload now stands. */
static void body_end(upload_write *w, http_request *req, int status)
{
    upload_write_result res;
    cu_error err;
    if (upload_write_end(w, &res, &err) != 0) {
        reply_error(req, &err);
        return;
    }
    add_number(req, "Upload-Offset", res.upload.durable_offset);
    add_expiry(req, &res.upload);
    http_reply_empty(req, status);
    upload_write_result_clear(&res);
}

static void patch_end(void *state, http_request *req)
{
    body_end(state, req, 204);
}

static void create_end(void *state, http_request *req)
{
    body_end(state, req, 201);
}

static const http_stream_ops patch_ops = {.data = body_data, .end = patch_end, .abort = body_abort};
static const http_stream_ops create_ops = {
    .data = body_data, .end = create_end, .abort = body_abort};

/* Begins the write of the request's body at offset of upload id and takes the body; replies
 * and returns false when the engine refuses it. */
static bool take_body(tus_api *api, http_request *req, upload_write_request *wr,
                      const http_stream_ops *ops)
{
    upload_write *w;
    cu_error err;
    wr->owner = auth_scope_owner(req);
    wr->length = http_content_length(req);
    if (upload_write_begin(api->uploads, wr, &w, &err) != 0) {
        reply_error(req, &err);
        return false;
    }
    http_want_stream(req, ops, w);
    return true;
}

/* ---- HEAD ---- */

/* Upload-Concat of a final upload: "final;" and its partial uploads' URLs (malloc'ed). */
static char *final_concat_header(const tus_api *api, const http_request *req, const char *ids)
{
    size_t n = 1;
    for (const char *p = ids; *p; p++)
        n += *p == ' ';
    size_t cap = 8 + n * (TUS_PATH_MAX + 300 + CU_UUID_LEN + 1);
    char *out = malloc(cap);
    if (!out)
        return NULL;
    size_t len = (size_t)snprintf(out, cap, "final;");
    for (const char *p = ids; *p && len < cap;) {
        size_t id_len = strcspn(p, " ");
        char id[CU_UUID_LEN + 1], url[TUS_PATH_MAX + 300 + CU_UUID_LEN + 1];
        snprintf(id, sizeof id, "%.*s", (int)id_len, p);
        upload_url(api, req, id, url, sizeof url);
        len += (size_t)snprintf(out + len, cap - len, "%s%s", len > 6 ? " " : "", url);
        p += id_len + (p[id_len] == ' ');
    }
    return out;
}

static void handle_head(void *ctx, http_request *req)
{
    tus_api *api = ctx;
    meta_upload u;
    if (!load_upload(api, req, &u))
        return;
    add_number(req, "Upload-Offset", upload_offset(&u));
    if (u.total_size >= 0)
        add_number(req, "Upload-Length", u.total_size);
    else
        http_add_header(req, "Upload-Defer-Length", "1");
    if (u.metadata && !strcmp(u.protocol, "tus"))
        http_add_header(req, "Upload-Metadata", u.metadata);
    if (u.partial)
        http_add_header(req, "Upload-Concat", "partial");
    if (u.concat_of) {
        char *concat = final_concat_header(api, req, u.concat_of);
        if (concat)
            http_add_header(req, "Upload-Concat", concat);
        else
            http_add_header(req, "Upload-Concat", "final;"); /* then out of memory: a 500 */
        free(concat);
    }
    http_add_header(req, "Cache-Control", "no-store");
    add_expiry(req, &u);
    http_reply_empty(req, 200);
    meta_upload_clear(&u);
}

/* ---- PATCH ---- */

/* A PATCH's Upload-Length: declares the length of an upload created without one. Replies and
 * returns false when it is malformed, disagrees with the length already known, or the engine
 * refuses it. */
static bool declare_length(tus_api *api, http_request *req, meta_upload *u)
{
    const char *header = http_header(req, "Upload-Length");
    int64_t length;
    cu_error err;
    if (!header)
        return true;
    if (tus_parse_size(header, &length) != 0) {
        http_reply_error(req, 400, "Upload-Length must be a whole number of bytes");
        return false;
    }
    if (u->total_size >= 0 && u->total_size != length) {
        http_reply_error(req, 400, "The upload's length is %lld already", (long long)u->total_size);
        return false;
    }
    if (u->total_size < 0) {
        if (upload_declare_length(api->uploads, u->id, length, &err) != 0) {
            reply_error(req, &err);
            return false;
        }
        u->total_size = length;
    }
    return true;
}

static void handle_patch(void *ctx, http_request *req)
{
    tus_api *api = ctx;
    if (!is_chunk(req)) {
        http_reply_error(req, 415, "A PATCH carries Content-Type: application/offset+octet-stream");
        return;
    }
    upload_write_request wr = {0};
    if (tus_parse_size(http_header(req, "Upload-Offset"), &wr.offset) != 0) {
        http_reply_error(req, 400, "Upload-Offset must be a whole number of bytes");
        return;
    }
    if (!read_checksum(req, &wr))
        return;
    meta_upload u;
    if (!load_upload(api, req, &u))
        return;
    if (u.concat_of)
        http_reply_error(req, 403, "A final upload takes no bytes: it is its partial uploads'");
    else if (u.layout != UPLOAD_LAYOUT_STREAM)
        http_reply_error(req, 403,
                         "This upload was made through the %s API and takes its bytes there",
                         u.protocol);
    else if (!declare_length(api, req, &u))
        ; /* answered */
    else if (u.durable_offset != wr.offset)
        http_reply_error(req, 409, "The upload is at offset %lld, not %lld",
                         (long long)u.durable_offset, (long long)wr.offset);
    else if (u.state == UPLOAD_COMPLETE && http_content_length(req) == 0) {
        /* A repeat of the last PATCH, whose answer was lost: it is all there. */
        add_number(req, "Upload-Offset", u.durable_offset);
        http_reply_empty(req, 204);
    } else {
        wr.id = u.id;
        take_body(api, req, &wr, &patch_ops);
    }
    meta_upload_clear(&u);
}

/* ---- POST (creation) ---- */

/* A declared content type kept for downloads: "type/subtype", perhaps with parameters, of
 * visible ASCII and spaces, at most 255 bytes. */
static bool content_type_ok(const tus_metadata_pair *p)
{
    if (!p->value_len || p->value_len > 255 || strlen(p->value) != p->value_len ||
        !strchr(p->value, '/') || p->value[0] == '/' || p->value[0] == ' ')
        return false;
    for (size_t i = 0; i < p->value_len; i++)
        if ((unsigned char)p->value[i] < 0x20 || (unsigned char)p->value[i] > 0x7e)
            return false;
    return true;
}

/* The first of two metadata keys that is there (filename or name, filetype or type). */
static const tus_metadata_pair *metadata_either(const tus_metadata *m, const char *a, const char *b)
{
    const tus_metadata_pair *p = tus_metadata_get(m, a);
    return p ? p : tus_metadata_get(m, b);
}

/* Fills the create request from Upload-Metadata: the name (filename, or name; it may carry a
 * directory and is checked by the engine's filename policy), the content type (filetype, or
 * type) and a webhook_url, and keeps the header as it came for HEAD. Replies and returns false
 * when a value is unfit. */
static bool read_metadata(http_request *req, const tus_metadata *md, upload_create_request *cr)
{
    const tus_metadata_pair *name = metadata_either(md, "filename", "name");
    const tus_metadata_pair *type = metadata_either(md, "filetype", "type");
    const tus_metadata_pair *hook = tus_metadata_get(md, "webhook_url");
    if (name && name->value_len) {
        cr->filename = name->value;
        cr->filename_len = name->value_len;
    } else if (!cr->partial) {
        cr->filename = TUS_DEFAULT_NAME;
        cr->filename_len = strlen(TUS_DEFAULT_NAME);
    }
    if (type && type->value_len) {
        if (!content_type_ok(type)) {
            http_reply_error(req, 400, "Upload-Metadata: %s is not a media type", type->key);
            return false;
        }
        cr->content_type = type->value;
    }
    if (hook && hook->value_len) {
        if (strlen(hook->value) != hook->value_len) {
            http_reply_error(req, 400, "webhook_url must be an http:// or https:// URL");
            return false;
        }
        cr->webhook_url = hook->value;
    }
    cr->metadata = http_header(req, "Upload-Metadata");
    return true;
}

/* Upload-Length, or Upload-Defer-Length: 1 where storage can take the length later, into
 * *length (-1: deferred). Replies 400 and returns false otherwise. */
static bool read_length(tus_api *api, http_request *req, int64_t *length)
{
    const char *given = http_header(req, "Upload-Length");
    const char *deferred = http_header(req, "Upload-Defer-Length");
    if (given && deferred)
        http_reply_error(req, 400, "Upload-Length and Upload-Defer-Length exclude each other");
    else if (!given && !deferred)
        http_reply_error(req, 400, "Upload-Length (or Upload-Defer-Length: 1) is required");
    else if (deferred && strcmp(deferred, "1") != 0)
        http_reply_error(req, 400, "Upload-Defer-Length must be 1");
    else if (deferred && !(upload_storage_caps(api->uploads) & STORAGE_CAP_DEFER_LENGTH))
        http_reply_error(req, 400, "%s storage needs Upload-Length up front",
                         upload_storage_name(api->uploads));
    else if (given && tus_parse_size(given, length) != 0)
        http_reply_error(req, 400, "Upload-Length must be a whole number of bytes");
    else {
        if (deferred)
            *length = -1;
        return true;
    }
    return false;
}

/* A final upload: its partial uploads joined by storage, complete at once. */
static void create_final(tus_api *api, http_request *req, upload_create_request *cr,
                         const tus_concat *concat)
{
    if (has_body(req) && is_chunk(req)) {
        http_reply_error(req, 403, "A final upload takes no bytes: it is its partial uploads'");
        return;
    }
    const char **ids = calloc((size_t)concat->n, sizeof *ids);
    if (!ids) {
        http_reply_error(req, 500, "Out of memory");
        return;
    }
    for (int i = 0; i < concat->n; i++)
        ids[i] = concat->ids[i];
    meta_upload u;
    cu_error err;
    if (upload_concat(api->uploads, cr, ids, concat->n, &u, &err) != 0) {
        reply_error(req, &err);
    } else {
        char url[TUS_PATH_MAX + 300 + CU_UUID_LEN + 1];
        upload_url(api, req, u.id, url, sizeof url);
        http_add_header(req, "Location", url);
        http_reply_empty(req, 201);
        meta_upload_clear(&u);
    }
    free(ids);
}

static void handle_create(void *ctx, http_request *req)
{
    tus_api *api = ctx;
    tus_concat concat;
    tus_metadata md;
    cu_error err;
    if (tus_concat_parse(http_header(req, "Upload-Concat"), api->collection, &concat, &err) != 0) {
        reply_error(req, &err);
        return;
    }
    if (tus_metadata_parse(http_header(req, "Upload-Metadata"), &md, &err) != 0) {
        reply_error(req, &err);
        tus_concat_clear(&concat);
        return;
    }
    upload_create_request cr = {.protocol = "tus",
                                .owner = http_principal(req),
                                .layout = UPLOAD_LAYOUT_STREAM,
                                .partial = concat.kind == TUS_CONCAT_PARTIAL};
    upload_write_request wr = {0};
    meta_upload u;
    if (concat.kind != TUS_CONCAT_NONE && !(upload_storage_caps(api->uploads) & STORAGE_CAP_CONCAT))
        http_reply_error(req, 400, "%s storage cannot concatenate uploads",
                         upload_storage_name(api->uploads));
    else if (!read_metadata(req, &md, &cr))
        ; /* answered */
    else if (concat.kind == TUS_CONCAT_FINAL)
        create_final(api, req, &cr, &concat);
    else if (!read_length(api, req, &cr.total_size) || !read_checksum(req, &wr))
        ; /* answered */
    else if (upload_create(api->uploads, &cr, &u, &err) != 0)
        reply_error(req, &err);
    else {
        char url[TUS_PATH_MAX + 300 + CU_UUID_LEN + 1];
        upload_url(api, req, u.id, url, sizeof url);
        http_add_header(req, "Location", url); /* also on a failure below: the upload exists */
        wr.id = u.id;
        meta_upload done;
        if (u.total_size == 0) { /* nothing to send: complete now */
            if (upload_complete(api->uploads, u.id, NULL, &done, &err) != 0) {
                reply_error(req, &err);
            } else {
                http_reply_empty(req, 201);
                meta_upload_clear(&done);
            }
        } else if (is_chunk(req) && has_body(req)) {
            take_body(api, req, &wr, &create_ops); /* creation-with-upload */
        } else {
            add_expiry(req, &u);
            http_reply_empty(req, 201);
        }
        meta_upload_clear(&u);
    }
    tus_metadata_clear(&md);
    tus_concat_clear(&concat);
}

/* ---- DELETE (termination) ---- */

static void handle_delete(void *ctx, http_request *req)
{
    tus_api *api = ctx;
    meta_upload u;
    if (!load_upload(api, req, &u))
        return;
    cu_error err;
    /* A finished file is deleted as a file; anything else (pending, or a partial upload
     * waiting for its final) is cancelled. */
    int rc = u.state == UPLOAD_COMPLETE && !u.partial
                 ? upload_file_delete(api->uploads, u.id, auth_scope_owner(req), &err)
                 : upload_cancel(api->uploads, u.id, auth_scope_owner(req), &err);
    if (rc)
        reply_error(req, &err);
    else
        http_reply_empty(req, 204);
    meta_upload_clear(&u);
}

/* ---- the filter ---- */

static bool under_base(const tus_api *api, const char *path)
{
    size_t n = strlen(api->collection);
    return !strncmp(path, api->collection, n) || !strcmp(path, api->collection_bare);
}

static bool filter_request(void *ctx, http_request *req)
{
    tus_api *api = ctx;
    if (!under_base(api, http_path(req)))
        return false;
    const char *method = http_method(req);
    if (!strcmp(method, "OPTIONS")) {
        http_add_header(req, "Tus-Version", TUS_VERSION);
        http_add_header(req, "Tus-Extension", api->extensions);
        http_add_header(req, "Tus-Checksum-Algorithm", TUS_CHECKSUM_ALGORITHMS);
        if (api->cfg->max_file_size > 0)
            add_number(req, "Tus-Max-Size", api->cfg->max_file_size);
        return false; /* the server (or a CORS filter) answers it, with Allow */
    }
    /* Browsers send no Tus-Resumable when they merely look (HEAD, GET), as tusd allows. */
    const char *version = http_header(req, "Tus-Resumable");
    bool looking = !strcmp(method, "HEAD") || !strcmp(method, "GET");
    if ((version || !looking) && (!version || strcmp(version, TUS_VERSION) != 0)) {
        http_add_header(req, "Tus-Version", TUS_VERSION);
        http_reply_error(req, 412, "%s; this server speaks tus %s",
                         version ? "Unsupported Tus-Resumable" : "Tus-Resumable is required",
                         TUS_VERSION);
        return true;
    }
    return false;
}

static void filter_reply(void *ctx, http_request *req, int status)
{
    (void)status;
    if (under_base(ctx, http_path(req)))
        http_add_header(req, "Tus-Resumable", TUS_VERSION);
}

http_filter tus_filter(tus_api *api)
{
    return (http_filter){
        .name = "tus", .request = filter_request, .reply = filter_reply, .ctx = api};
}

/* ---- routes ---- */

/* Tus-Extension: what this server and its storage backend can do. */
static void describe_extensions(tus_api *api)
{
    unsigned caps = upload_storage_caps(api->uploads);
    snprintf(api->extensions, sizeof api->extensions, "%s%s%s%s",
             caps & STORAGE_CAP_APPEND ? "creation,creation-with-upload," : "",
             caps & STORAGE_CAP_DEFER_LENGTH ? "creation-defer-length," : "",
             "termination,checksum,expiration", caps & STORAGE_CAP_CONCAT ? ",concatenation" : "");
}

int tus_api_register(tus_api *api, http_router *router)
{
    const char *base = api->cfg->tus_base_path;
    size_t n = strlen(base);
    if (n < 2 || n >= TUS_PATH_MAX || base[0] != '/' || base[n - 1] != '/')
        return -1;
    snprintf(api->collection, sizeof api->collection, "%s", base);
    snprintf(api->collection_bare, sizeof api->collection_bare, "%.*s", (int)(n - 1), base);
    snprintf(api->item, sizeof api->item, "%s:id", base);
    describe_extensions(api);
    const http_route routes[TUS_ROUTES] = {
        {.method = "POST",
         .pattern = api->collection,
         .body = HTTP_BODY_STREAM,
         .auth = HTTP_AUTH_API_KEY,
         .name = "tus.create",
         .handle = handle_create},
        {.method = "POST",
         .pattern = api->collection_bare,
         .body = HTTP_BODY_STREAM,
         .auth = HTTP_AUTH_API_KEY,
         .name = "tus.create",
         .handle = handle_create},
        {.method = "HEAD",
         .pattern = api->item,
         .auth = HTTP_AUTH_API_KEY,
         .name = "tus.head",
         .handle = handle_head},
        {.method = "PATCH",
         .pattern = api->item,
         .body = HTTP_BODY_STREAM,
         .auth = HTTP_AUTH_API_KEY,
         .name = "tus.patch",
         .handle = handle_patch},
        {.method = "DELETE",
         .pattern = api->item,
         .auth = HTTP_AUTH_API_KEY,
         .name = "tus.terminate",
         .handle = handle_delete},
    };
    for (int i = 0; i < TUS_ROUTES; i++) {
        api->routes[i] = routes[i];
        api->routes[i].ctx = api;
        if (http_router_add(router, &api->routes[i]) != 0)
            return -1;
    }
    return 0;
}
