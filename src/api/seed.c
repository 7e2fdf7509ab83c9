/* seed.c - the seed API on the engine.
 *
 * The seed protocol's uploads are slots of CHUNK_SIZE_MB: part n is the slot at offset
 * n × chunk size. Each part has its own HS256 token naming its upload, number, size and
 * expiry; the module signs them at init (storing each one's SHA-256 with its slot, so that
 * only tokens this server issued are taken even if the secret leaked) and checks them on
 * every part, before the engine sees the write. */
#include "api/seed.h"

#include "api/auth.h"
#include "api/digest.h"
#include "api/file_reply.h"
#include "api/seed_init.h"
#include "api/seed_path.h"
#include "api/token.h"
#include "base/log.h"
#include "base/util.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- init ---- */

/* The part tokens of a new upload and their digests (what its slots keep). */
typedef struct {
    int n;
    char **tokens;
    char (*digests)[CU_SHA256_HEX_LEN + 1];
    const char **tags;
} part_tokens;

static void tokens_free(part_tokens *t)
{
    for (int i = 0; t->tokens && i < t->n; i++)
        free(t->tokens[i]);
    free(t->tokens);
    free(t->digests);
    free(t->tags);
    memset(t, 0, sizeof *t);
}

/* Signs one token per slot of an upload of total_size bytes. */
static int tokens_issue(const seed_api *api, const char *id, int64_t total_size, int64_t expires_at,
                        part_tokens *t, cu_error *err)
{
    const cu_config *cfg = api->cfg;
    int64_t n = upload_slot_count(total_size, cfg->chunk_size, false);
    t->n = (int)n;
    t->tokens = calloc((size_t)n + 1, sizeof *t->tokens);
    t->digests = calloc((size_t)n + 1, sizeof *t->digests);
    t->tags = calloc((size_t)n + 1, sizeof *t->tags);
    if (!t->tokens || !t->digests || !t->tags)
        return cu_fail_oom(err);
    for (int i = 0; i < t->n; i++) {
        int64_t start = (int64_t)i * cfg->chunk_size;
        token_claims claims = {.part_number = i,
                               .expected_size = total_size - start < cfg->chunk_size
                                                    ? total_size - start
                                                    : cfg->chunk_size,
                               .exp = expires_at};
        snprintf(claims.upload_id, sizeof claims.upload_id, "%s", id);
        if (!(t->tokens[i] = token_issue(cfg->jwt_secret, &claims)))
            return cu_fail(err, CU_EIO, "Cannot sign part tokens");
        util_sha256_hex(t->tokens[i], strlen(t->tokens[i]), t->digests[i]);
        t->tags[i] = t->digests[i];
    }
    return 0;
}

static void handle_init(void *ctx, http_request *req)
{
    seed_api *api = ctx;
    size_t len;
    const char *body = http_body(req, &len);
    seed_init_body in;
    part_tokens tokens = {0};
    cu_error err;
    if (seed_init_parse(body, len, &in, &err) != 0) {
        http_reply_cu_error(req, &err);
        return;
    }
    char id[CU_UUID_LEN + 1];
    if (util_uuid_v4(id) != 0) {
        http_reply_error(req, 500, "No randomness available");
        goto out;
    }
    int64_t expires_at = (int64_t)(util_now() + api->cfg->upload_ttl_seconds);
    upload_create_request cr = {
        .id = id,
        .protocol = "seed",
        .owner = http_principal(req),
        .filename = in.filename,
        .filename_len = in.filename_len,
        .total_size = in.total_size,
        .layout = UPLOAD_LAYOUT_SLOTS,
        .slot_size = api->cfg->chunk_size,
        .webhook_url = in.webhook_url,
        .checksum_sha256 = in.checksum_sha256,
        .content_type = in.content_type,
        .expires_at = expires_at,
    };
    /* Everything is checked before any token is signed: a refused size costs nothing. */
    if (upload_validate(api->uploads, &cr, &err) != 0 ||
        tokens_issue(api, id, cr.total_size, expires_at, &tokens, &err) != 0) {
        http_reply_cu_error(req, &err);
        goto out;
    }
    cr.slot_tags = tokens.tags;
    meta_upload u;
    if (upload_create(api->uploads, &cr, &u, &err) != 0) {
        http_reply_cu_error(req, &err);
        goto out;
    }
    json_t *parts = json_array();
    for (int i = 0; parts && i < u.total_parts; i++)
        json_array_append_new(parts, json_pack("{s:i, s:s, s:s}", "part", i, "token",
                                               tokens.tokens[i], "status", "pending"));
    char expires[21];
    util_rfc3339(u.expires_at, expires);
    json_t *reply = json_pack("{s:s, s:s, s:I, s:i, s:I, s:o, s:s}", "file_id", u.id, "filename",
                              file_reply_name(&u), "total_size", (json_int_t)u.total_size,
                              "total_parts", u.total_parts, "chunk_size", (json_int_t)u.chunk_size,
                              "parts", parts, "expires_at", expires);
    http_reply_json(req, 200, reply);
    meta_upload_clear(&u);
out:
    tokens_free(&tokens);
    seed_init_body_clear(&in);
}

/* The upload id of the path into id. Replies 404 and returns false when it is not a UUID. */
static bool route_id(http_request *req, char id[CU_UUID_LEN + 1])
{
    cu_error err;
    if (seed_path_upload_id(http_param(req, "id"), id, &err) != 0) {
        http_reply_cu_error(req, &err);
        return false;
    }
    return true;
}

/* ---- parts ---- */

static int part_data(void *state, const char *buf, size_t len, cu_error *err)
{
    return upload_write_data(state, buf, len, err);
}

static void part_end(void *state, http_request *req)
{
    upload_write_result res;
    cu_error err;
    if (upload_write_end(state, &res, &err) != 0) {
        if (err.code == CU_ECHECKSUM) /* the seed answers a part's bad digest with 400 */
            err.code = CU_EINVAL;
        http_reply_cu_error(req, &err);
        return;
    }
    http_reply_json(req, 200,
                    json_pack("{s:s, s:i, s:s, s:s, s:i, s:i}", "upload_id", res.upload.id,
                              "part_number", res.slot, "status", "uploaded", "checksum_sha256",
                              res.checksum_sha256, "uploaded_parts", res.upload.uploaded_parts,
                              "total_parts", res.upload.total_parts));
    upload_write_result_clear(&res);
}

static void part_abort(void *state)
{
    upload_write_abort(state);
}

static const http_stream_ops part_stream_ops = {
    .data = part_data, .end = part_end, .abort = part_abort};

/* The part token: its signature, its upload, and that it is the one issued for this part of
 * this size, still valid. The upload's state is checked first, as the client needs to know
 * that before anything about its token. */
static int check_part_token(seed_api *api, const char *token, const char *id, int64_t n,
                            cu_error *err)
{
    if (!token || !*token)
        return cu_fail(err, CU_EAUTH, "Missing part token (Authorization: Bearer <token>)");
    token_claims claims;
    int rc = token_verify(api->cfg->jwt_secret, token, &claims, err);
    if (rc)
        return rc;
    if (strcmp(claims.upload_id, id) != 0)
        return cu_fail(err, CU_EAUTH, "Part token is for another upload");
    meta_upload u;
    if ((rc = upload_get(api->uploads, id, NULL, &u, err)) != 0)
        return rc;
    if ((rc = upload_check_writable(&u, err)) != 0)
        goto out;
    if (n < 0 || n >= u.total_parts) {
        rc = cu_fail(err, CU_EINVAL,
                     "Part number %lld is out of range: this upload has parts 0 to %d",
                     (long long)n, u.total_parts - 1);
        goto out;
    }
    rc = token_check_claims(&claims, id, n, upload_slot_size(&u, (int)n), (int64_t)util_now(), err);
    if (rc)
        goto out;
    meta_part part;
    if ((rc = upload_slot_get(api->uploads, id, (int)n, &part, err)) != 0)
        goto out;
    char digest[CU_SHA256_HEX_LEN + 1];
    util_sha256_hex(token, strlen(token), digest);
    if (CRYPTO_memcmp(digest, part.token_sha256, CU_SHA256_HEX_LEN) != 0)
        rc = cu_fail(err, CU_EAUTH, "Part token was not issued for this part");
    free(part.storage_ref);
out:
    meta_upload_clear(&u);
    return rc;
}

static void handle_part(void *ctx, http_request *req)
{
    seed_api *api = ctx;
    char id[CU_UUID_LEN + 1];
    if (!route_id(req, id))
        return;
    int64_t n;
    cu_error err;
    if (seed_path_part_number(http_param(req, "n"), &n, &err) != 0) {
        http_reply_cu_error(req, &err);
        return;
    }
    unsigned char digest[32];
    bool has_digest;
    if (digest_parse_part(http_header(req, "Content-Digest"), http_header(req, "X-Checksum-SHA256"),
                          digest, &has_digest, &err) != 0) {
        http_reply_cu_error(req, &err);
        return;
    }
    if (check_part_token(api, auth_bearer(req), id, n, &err) != 0) {
        http_reply_cu_error(req, &err);
        return;
    }
    upload_write_request wr = {.id = id,
                               .slot = (int)n,
                               .length = http_content_length(req),
                               .digest_alg =
                                   has_digest ? UPLOAD_DIGEST_SHA256 : UPLOAD_DIGEST_NONE};
    if (has_digest)
        memcpy(wr.digest, digest, sizeof digest);
    upload_write *w;
    if (upload_write_begin(api->uploads, &wr, &w, &err) != 0) {
        http_reply_cu_error(req, &err);
        return;
    }
    http_want_stream(req, &part_stream_ops, w);
}

/* ---- status, complete, cancel ---- */

static void handle_status(void *ctx, http_request *req)
{
    seed_api *api = ctx;
    char id[CU_UUID_LEN + 1];
    if (!route_id(req, id))
        return;
    meta_upload u;
    meta_part *parts;
    int n;
    cu_error err;
    if (upload_status(api->uploads, id, NULL, &u, &parts, &n, &err) != 0) {
        http_reply_cu_error(req, &err);
        return;
    }
    json_t *list = json_array();
    for (int i = 0; list && i < n; i++) {
        bool up = parts[i].state == PART_UPLOADED;
        json_array_append_new(list,
                              json_pack("{s:i, s:s, s:o}", "part", parts[i].part, "status",
                                        up ? "uploaded" : "pending", "checksum_sha256",
                                        up ? json_string(parts[i].checksum_sha256) : json_null()));
    }
    /* A stream upload (tus) has no parts: its progress is its bytes. */
    bool stream = u.layout == UPLOAD_LAYOUT_STREAM;
    double done = stream ? (double)u.durable_offset : (double)u.uploaded_parts;
    double whole = stream ? (double)u.total_size : (double)u.total_parts;
    double percent = u.state == UPLOAD_COMPLETE ? 100.0
                     : whole > 0 ? (double)(int64_t)(done * 10000.0 / whole + 0.5) / 100.0
                     : stream    ? 0.0
                                 : 100.0;
    char created[21], expires[21];
    util_rfc3339(u.created_at, created);
    util_rfc3339(u.expires_at, expires);
    json_t *reply = json_pack(
        "{s:s, s:s, s:I, s:i, s:i, s:f, s:s, s:I, s:s, s:s, s:o}", "file_id", u.id, "filename",
        file_reply_name(&u), "total_size", (json_int_t)u.total_size, "total_parts", u.total_parts,
        "uploaded_parts", u.uploaded_parts, "progress_percent", percent, "status",
        upload_state_name(u.state), "chunk_size", (json_int_t)u.chunk_size, "created_at", created,
        "expires_at", expires, "parts", list);
    if (reply && stream)
        json_object_set_new(reply, "uploaded_bytes", json_integer(u.durable_offset));
    if (reply && u.state == UPLOAD_COMPLETE) {
        json_object_set_new(reply, "final_path", json_string(u.final_path ? u.final_path : ""));
        json_object_set_new(reply, "storage_backend",
                            json_string(upload_storage_name(api->uploads)));
    }
    http_reply_json(req, 200, reply);
    meta_parts_free(parts, n);
    meta_upload_clear(&u);
}

static void handle_complete(void *ctx, http_request *req)
{
    seed_api *api = ctx;
    char id[CU_UUID_LEN + 1];
    if (!route_id(req, id))
        return;
    meta_upload u;
    cu_error err;
    if (upload_complete(api->uploads, id, NULL, &u, &err) != 0) {
        http_reply_cu_error(req, &err);
        return;
    }
    http_reply_json(req, 200, file_reply_complete(&u, upload_storage_name(api->uploads)));
    meta_upload_clear(&u);
}

static void handle_cancel(void *ctx, http_request *req)
{
    seed_api *api = ctx;
    char id[CU_UUID_LEN + 1];
    if (!route_id(req, id))
        return;
    cu_error err;
    if (upload_cancel(api->uploads, id, NULL, &err) != 0) {
        http_reply_cu_error(req, &err);
        return;
    }
    http_reply_json(req, 200,
                    json_pack("{s:s, s:s}", "file_id", id, "message", "Upload cancelled"));
}

/* The seed's routes. Management requests may carry a small body (an SDK sending "{}"): it is
 * read and ignored (HTTP_BODY_NONE). */
static const http_route seed_routes[SEED_ROUTES] = {
    {.method = "POST",
     .pattern = "/upload/init",
     .body = HTTP_BODY_JSON,
     .auth = HTTP_AUTH_API_KEY,
     .name = "seed.init",
     .handle = handle_init},
    {.method = "PUT",
     .pattern = "/upload/:id/part/:n",
     .body = HTTP_BODY_STREAM,
     .name = "seed.part",
     .handle = handle_part},
    {.method = "GET",
     .pattern = "/upload/:id/status",
     .auth = HTTP_AUTH_API_KEY,
     .name = "seed.status",
     .handle = handle_status},
    {.method = "POST",
     .pattern = "/upload/:id/complete",
     .auth = HTTP_AUTH_API_KEY,
     .name = "seed.complete",
     .handle = handle_complete},
    {.method = "DELETE",
     .pattern = "/upload/:id",
     .auth = HTTP_AUTH_API_KEY,
     .name = "seed.cancel",
     .handle = handle_cancel},
};

int seed_api_register(seed_api *api, http_router *router)
{
    return http_router_add_module(router, api->routes, seed_routes, SEED_ROUTES, api);
}
