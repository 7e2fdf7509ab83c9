/* files.c - listing, downloading, linking and deleting finished files.
 *
 * A download is decided from the headers alone (preconditions, then Range) and then sent
 * without holding the file: local files go out with sendfile from a descriptor the storage
 * reader hands over (zero copy), other backends through a reader callback that pulls 64 KiB
 * at a time from storage (an S3 ranged GET paused while the client is slow, libsmbclient
 * reads), so memory stays the same for a 1 KB file and a 1 TB one. */
#include "api/files.h"

#include "api/auth.h"
#include "api/download.h"
#include "api/files_query.h"
#include "api/seed_path.h"
#include "base/log.h"
#include "base/util.h"
#include "core/filename.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The file id of the path into id; replies 404 and returns false when it is not one. */
static bool route_file_id(http_request *req, char id[CU_UUID_LEN + 1])
{
    cu_error err;
    if (seed_path_upload_id(http_param(req, "id"), id, &err) != 0) {
        http_reply_error(req, 404, "File not found");
        return false;
    }
    return true;
}

/* ---- listing ---- */

static json_t *file_entry(const files_api *api, const meta_upload *u)
{
    size_t dir_len;
    const char *base = filename_split(u->filename, &dir_len);
    char created[21], completed[21];
    util_rfc3339(u->created_at, created);
    util_rfc3339(u->completed_at, completed);
    return json_pack(
        "{s:s, s:s, s:s#, s:I, s:s, s:o, s:s, s:s, s:s, s:s}", "file_id", u->id, "filename", base,
        "directory", u->filename, (int)dir_len, "size", (json_int_t)u->total_size, "content_type",
        download_content_type(upload_content_type(u)), "sha256",
        u->sha256 ? json_string(u->sha256) : json_null(), "created_at", created, "completed_at",
        completed, "storage_backend", upload_storage_name(api->uploads), "final_path",
        u->final_path ? u->final_path : "");
}

static void handle_list(void *ctx, http_request *req)
{
    files_api *api = ctx;
    files_query fq;
    cu_error err;
    if (files_query_parse(http_query(req, "limit"), http_query(req, "cursor"),
                          http_query(req, "prefix"), auth_scope_owner(req), &fq, &err) != 0) {
        http_reply_cu_error(req, &err);
        return;
    }
    int limit = fq.q.limit;
    fq.q.limit = limit + 1; /* one more than shown: whether another page follows */
    meta_upload *list = NULL;
    int n = 0;
    if (upload_files_list(api->uploads, &fq.q, &list, &n, &err) != 0) {
        http_reply_cu_error(req, &err);
        return;
    }
    json_t *files = json_array();
    for (int i = 0; files && i < n && i < limit; i++)
        if (json_array_append_new(files, file_entry(api, &list[i])) != 0) {
            json_decref(files);
            files = NULL;
        }
    json_t *next = json_null();
    if (n > limit) {
        char cursor[FILES_CURSOR_LEN];
        files_query_cursor(&list[limit - 1], cursor);
        next = json_string(cursor);
    }
    meta_uploads_free(list, n);
    http_reply_json(req, 200,
                    files ? json_pack("{s:o, s:o}", "files", files, "next_cursor", next) : NULL);
}

/* ---- downloading ---- */

typedef struct {
    storage_reader_t *reader;
    char id[CU_UUID_LEN + 1];
} body_state;

static ssize_t body_read(void *state, uint64_t pos, char *buf, size_t cap)
{
    body_state *b = state;
    cu_error err;
    ssize_t n = storage_read(b->reader, buf, cap, &err);
    if (n < 0) {
        log_warn("file %s: a download broke off at byte %llu: %s", b->id, (unsigned long long)pos,
                 err.msg);
        return -1;
    }
    return n;
}

static void body_free(void *state)
{
    body_state *b = state;
    storage_reader_close(b->reader);
    free(b);
}

/* A HEAD reply's body is never produced: the reader is there for the length. */
static ssize_t head_read(void *state, uint64_t pos, char *buf, size_t cap)
{
    (void)state, (void)pos, (void)buf, (void)cap;
    return -1;
}

/* Adds every header the reply needs; false when one could not be added (the reply is then a
 * 500 anyway). */
static bool add_headers(http_request *req, const char *const *pairs, int n)
{
    bool ok = true;
    for (int i = 0; i + 1 < n; i += 2)
        ok &= http_add_header(req, pairs[i], pairs[i + 1]) == 0;
    return ok;
}

/* Answers a download of file u (GET or HEAD): preconditions, then a redirect to storage or a
 * range of the file. not_after: the signed link's expiry (0 for the API key), which a
 * presigned URL never outlives. */
static void serve_file(files_api *api, http_request *req, const meta_upload *u, int64_t not_after)
{
    int64_t size = u->total_size, modified = u->completed_at;
    char etag[35], last_modified[30];
    download_etag(u->id, size, u->completed_at, etag);
    download_date_format(modified, last_modified);
    size_t dir_len;
    const char *name = filename_split(u->filename, &dir_len);
    size_t dcap = DOWNLOAD_DISPOSITION_CAP(strlen(name));
    char *disposition = malloc(dcap);
    if (!disposition) {
        http_reply_error(req, 500, "Out of memory");
        return;
    }
    download_disposition(name, disposition, dcap);
    const char *type = download_content_type(upload_content_type(u));
    /* The validators go with every answer, 304 and errors included. */
    const char *validators[] = {"ETag", etag, "Last-Modified", last_modified};
    add_headers(req, validators, 4);

    download_conditions cond = {.if_match = http_header(req, "If-Match"),
                                .if_none_match = http_header(req, "If-None-Match"),
                                .if_modified_since = http_header(req, "If-Modified-Since"),
                                .if_unmodified_since = http_header(req, "If-Unmodified-Since")};
    download_verdict verdict = download_evaluate(&cond, etag, modified);
    /* A cache may keep the file but must ask again (a 304 is cheap), and never share it. */
    const char *caching = "private, no-cache";
    if (verdict == DOWNLOAD_NOT_MODIFIED) {
        http_add_header(req, "Cache-Control", caching);
        /* Any Content-Length a 304 carries must be the file's (RFC 9110 section 8.6), and an
         * empty reply would say 0: the reply has the file's length and no body is sent. */
        http_reply_stream(req, 304, NULL, size, head_read, NULL, NULL);
        goto out;
    }
    if (verdict == DOWNLOAD_PRECONDITION_FAILED) {
        http_reply_error(req, 412, "Precondition failed: the file is %s, last modified %s", etag,
                         last_modified);
        goto out;
    }

    cu_error err;
    if (api->cfg->s3_download_redirect && !http_is_head(req) &&
        (upload_storage_caps(api->uploads) & STORAGE_CAP_PRESIGN)) {
        int64_t expires_in = FILES_PRESIGN_SECONDS, now = (int64_t)util_now();
        if (not_after && not_after - now < expires_in)
            expires_in = not_after - now > 0 ? not_after - now : 1;
        char *url = NULL;
        if (upload_file_presign(api->uploads, u, expires_in, type, disposition, &url, &err) != 0) {
            http_reply_cu_error(req, &err);
            goto out;
        }
        http_add_header(req, "Location", url);
        http_reply_json(req, 302,
                        json_pack("{s:s, s:I}", "url", url, "expires_in", (json_int_t)expires_in));
        free(url);
        goto out;
    }

    const char *headers[] = {"Accept-Ranges",           "bytes",
                             "Content-Disposition",     disposition,
                             "X-Content-Type-Options",  "nosniff",
                             "Content-Security-Policy", "default-src 'none'; sandbox"};
    add_headers(req, headers, 8);
    const char *range_header = http_header(req, "Range");
    download_range range = {.kind = DOWNLOAD_RANGE_NONE};
    if (range_header && download_if_range(http_header(req, "If-Range"), etag, modified))
        range = download_range_parse(range_header, size);
    char content_range[80];
    int status = 200;
    int64_t offset = 0, length = size;
    if (range.kind == DOWNLOAD_RANGE_UNSATISFIABLE) {
        snprintf(content_range, sizeof content_range, "bytes */%lld", (long long)size);
        http_add_header(req, "Content-Range", content_range);
        http_reply_error(req, 416, "Range not satisfiable: the file has %lld bytes",
                         (long long)size);
        goto out;
    }
    if (range.kind == DOWNLOAD_RANGE_SINGLE) {
        status = 206;
        offset = range.offset;
        length = range.length;
        snprintf(content_range, sizeof content_range, "bytes %lld-%lld/%lld", (long long)offset,
                 (long long)(offset + length - 1), (long long)size);
        http_add_header(req, "Content-Range", content_range);
    }
    http_add_header(req, "Cache-Control", caching);
    if (http_is_head(req)) {
        http_reply_stream(req, status, type, length, head_read, NULL, NULL);
        goto out;
    }
    storage_reader_t *reader = NULL;
    if (upload_file_open(api->uploads, u, offset, length, &reader, &err) != 0) {
        if (err.code == CU_ENOTFOUND)
            log_error("file %s: recorded complete, but storage has no file at %s", u->id,
                      u->final_path ? u->final_path : "?");
        http_reply_cu_error(req, &err);
        goto out;
    }
    int fd = -1;
    int64_t fd_offset = 0;
    if (storage_reader_fd(reader, &fd, &fd_offset) == 0 && (fd = dup(fd)) >= 0) {
        storage_reader_close(reader); /* the reply owns its own descriptor now */
        http_reply_fd(req, status, type, fd, fd_offset, length);
        goto out;
    }
    body_state *b = calloc(1, sizeof *b);
    if (!b) {
        storage_reader_close(reader);
        http_reply_error(req, 500, "Out of memory");
        goto out;
    }
    b->reader = reader;
    snprintf(b->id, sizeof b->id, "%s", u->id);
    http_reply_stream(req, status, type, length, body_read, b, body_free);
out:
    free(disposition);
}

static void handle_download(void *ctx, http_request *req)
{
    files_api *api = ctx;
    char id[CU_UUID_LEN + 1];
    if (!route_file_id(req, id))
        return;
    meta_upload u;
    cu_error err;
    if (upload_file_get(api->uploads, id, auth_scope_owner(req), &u, &err) != 0) {
        http_reply_cu_error(req, &err);
        return;
    }
    serve_file(api, req, &u, 0);
    meta_upload_clear(&u);
}

/* ---- signed links ---- */

static void handle_link(void *ctx, http_request *req)
{
    files_api *api = ctx;
    char id[CU_UUID_LEN + 1];
    if (!route_file_id(req, id))
        return;
    size_t len;
    const char *body = http_body(req, &len);
    int64_t expires_in;
    cu_error err;
    if (file_link_parse_request(body, len, &expires_in, &err) != 0) {
        http_reply_cu_error(req, &err);
        return;
    }
    meta_upload u;
    if (upload_file_get(api->uploads, id, auth_scope_owner(req), &u, &err) != 0) {
        http_reply_cu_error(req, &err);
        return;
    }
    meta_upload_clear(&u);
    char origin[300];
    if (http_origin(req, origin, sizeof origin) != 0) {
        http_reply_error(req, 400, "A link needs the request's Host header to name this server");
        return;
    }
    int64_t expires = (int64_t)util_now() + expires_in;
    char sig[FILE_LINK_SIG_LEN + 1], url[512], when[21];
    file_link_sign(api->link_key, id, expires, sig);
    snprintf(url, sizeof url, "%s/api/files/%s/download?expires=%lld&signature=%s", origin, id,
             (long long)expires, sig);
    util_rfc3339(expires, when);
    http_reply_json(req, 200,
                    json_pack("{s:s, s:s, s:s, s:I}", "file_id", id, "url", url, "expires_at", when,
                              "expires_in", (json_int_t)expires_in));
}

static void handle_signed_download(void *ctx, http_request *req)
{
    files_api *api = ctx;
    char id[CU_UUID_LEN + 1];
    if (!route_file_id(req, id))
        return;
    const char *expires = http_query(req, "expires");
    cu_error err;
    /* The signature first: without one, nothing is said about the file. */
    if (file_link_verify(api->link_key, id, expires, http_query(req, "signature"),
                         (int64_t)util_now(), &err) != 0) {
        http_reply_cu_error(req, &err);
        return;
    }
    meta_upload u;
    if (upload_file_get(api->uploads, id, NULL, &u, &err) != 0) {
        http_reply_cu_error(req, &err);
        return;
    }
    int64_t not_after = 0;
    util_parse_i64(expires, &not_after); /* verified above */
    serve_file(api, req, &u, not_after);
    meta_upload_clear(&u);
}

/* ---- deleting ---- */

static void handle_delete(void *ctx, http_request *req)
{
    files_api *api = ctx;
    char id[CU_UUID_LEN + 1];
    if (!route_file_id(req, id))
        return;
    cu_error err;
    if (upload_file_delete(api->uploads, id, auth_scope_owner(req), &err) != 0) {
        http_reply_cu_error(req, &err);
        return;
    }
    http_reply_json(req, 200, json_pack("{s:s, s:s}", "file_id", id, "message", "File deleted"));
}

static const http_route files_routes[FILES_ROUTES] = {
    {.method = "GET",
     .pattern = "/api/files",
     .auth = HTTP_AUTH_API_KEY,
     .name = "files.list",
     .handle = handle_list},
    {.method = "GET",
     .pattern = "/api/files/:id",
     .auth = HTTP_AUTH_API_KEY,
     .name = "files.download",
     .handle = handle_download},
    {.method = "DELETE",
     .pattern = "/api/files/:id",
     .auth = HTTP_AUTH_API_KEY,
     .name = "files.delete",
     .handle = handle_delete},
    {.method = "POST",
     .pattern = "/api/files/:id/link",
     .body = HTTP_BODY_JSON,
     .auth = HTTP_AUTH_API_KEY,
     .name = "files.link",
     .handle = handle_link},
    /* The link's signature is its credential, checked by the handler. */
    {.method = "GET",
     .pattern = "/api/files/:id/download",
     .name = "files.signed_download",
     .handle = handle_signed_download},
    {.method = "POST",
     .pattern = "/api/files/upload",
     .body = HTTP_BODY_STREAM,
     .auth = HTTP_AUTH_API_KEY,
     .name = "files.upload",
     .handle = files_upload_handle},
};

int files_api_register(files_api *api, http_router *router)
{
    file_link_key(api->cfg->jwt_secret, api->link_key);
    if (api->cfg->s3_download_redirect &&
        !(upload_storage_caps(api->uploads) & STORAGE_CAP_PRESIGN))
        log_warn("S3_DOWNLOAD_REDIRECT has no effect with %s storage: downloads are streamed",
                 upload_storage_name(api->uploads));
    return http_router_add_module(router, api->routes, files_routes, FILES_ROUTES, api);
}
