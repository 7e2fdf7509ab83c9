/* upload.c - the upload lifecycle. */
#include "core/upload.h"

#include "core/filename.h"
#include "base/log.h"
#include "core/token.h"
#include "base/util.h"
#include "core/webhook.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A part being received right now. The table is small (one entry per in-flight part, at
 * most one per connection), so a linear scan under the lock is the simplest right thing. */
typedef struct {
    char upload_id[CU_UUID_LEN + 1];
    int part;
} claim;

struct upload_service {
    upload_deps deps;
    pthread_mutex_t claims_lock;
    claim *claims;
    size_t nclaims, claims_cap;
};

struct part_session {
    upload_service *svc;
    char upload_id[CU_UUID_LEN + 1];
    int part;
    int total_parts;
    int64_t expected;
    int64_t received;
    bool has_digest;
    unsigned char digest[32];
    EVP_MD_CTX *sha;
    storage_writer_t *writer;
};

upload_service *upload_service_new(const upload_deps *deps)
{
    upload_service *svc = calloc(1, sizeof *svc);
    if (!svc)
        return NULL;
    svc->deps = *deps;
    pthread_mutex_init(&svc->claims_lock, NULL);
    return svc;
}

void upload_service_free(upload_service *svc)
{
    if (!svc)
        return;
    pthread_mutex_destroy(&svc->claims_lock);
    free(svc->claims);
    free(svc);
}

const char *upload_storage_name(const upload_service *svc)
{
    return svc->deps.storage->name;
}

int64_t upload_part_size(int64_t total_size, int64_t chunk_size, int part)
{
    int64_t start = (int64_t)part * chunk_size;
    int64_t left = total_size - start;
    return left < chunk_size ? left : chunk_size;
}

static int64_t now_s(void)
{
    return (int64_t)util_now();
}

/* An upload as the blob store sees it; the key lives in the struct, so keep it in scope. */
typedef struct {
    storage_upload up;
    char key[FILENAME_MAX_TOTAL + CU_UUID_LEN + 2];
} upload_view;

/* "dir/<id>_name": where the finished file goes below the storage root. */
static const storage_upload *view_of(const meta_upload *u, upload_view *v)
{
    size_t dir_len;
    const char *base = filename_split(u->filename, &dir_len);
    if (dir_len)
        snprintf(v->key, sizeof v->key, "%.*s/%s_%s", (int)dir_len, u->filename, u->id, base);
    else
        snprintf(v->key, sizeof v->key, "%s_%s", u->id, base);
    v->up = (storage_upload){.id = u->id,
                             .key = v->key,
                             .storage_ref = u->storage_ref,
                             .total_size = u->total_size,
                             .part_size = u->chunk_size};
    return &v->up;
}

/* ---- claims ---- */

static bool claim_take(upload_service *svc, const char *id, int part)
{
    bool ok = true;
    pthread_mutex_lock(&svc->claims_lock);
    for (size_t i = 0; i < svc->nclaims; i++)
        if (svc->claims[i].part == part && !strcmp(svc->claims[i].upload_id, id))
            ok = false;
    if (ok && svc->nclaims == svc->claims_cap) {
        size_t cap = svc->claims_cap ? svc->claims_cap * 2 : 16;
        claim *grown = realloc(svc->claims, cap * sizeof *grown);
        if (grown) {
            svc->claims = grown;
            svc->claims_cap = cap;
        } else {
            ok = false;
        }
    }
    if (ok) {
        claim *c = &svc->claims[svc->nclaims++];
        memcpy(c->upload_id, id, sizeof c->upload_id);
        c->part = part;
    }
    pthread_mutex_unlock(&svc->claims_lock);
    return ok;
}

static void claim_release(upload_service *svc, const char *id, int part)
{
    pthread_mutex_lock(&svc->claims_lock);
    for (size_t i = 0; i < svc->nclaims; i++) {
        if (svc->claims[i].part == part && !strcmp(svc->claims[i].upload_id, id)) {
            svc->claims[i] = svc->claims[--svc->nclaims];
            break;
        }
    }
    pthread_mutex_unlock(&svc->claims_lock);
}

/* ---- init ---- */

static bool valid_webhook_url(const char *url)
{
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
        return false;
    size_t len = strlen(url);
    if (len > 2048 || len <= 8)
        return false;
    for (const unsigned char *p = (const unsigned char *)url; *p; p++)
        if (*p <= 0x20 || *p == 0x7f)
            return false;
    return true;
}

int upload_init(upload_service *svc, const upload_init_request *req, upload_init_result *out,
                cu_error *err)
{
    const cu_config *cfg = svc->deps.cfg;
    memset(out, 0, sizeof *out);
    const storage_t *st = svc->deps.storage;
    int rc = filename_check(req->filename, req->filename_len, err);
    if (rc == 0)
        rc = filename_check_for_storage(req->filename, st->forbidden_name_chars,
                                        st->allows_trailing_dot_space, st->name, err);
    if (rc)
        return rc;
    if (req->total_size < 0)
        return cu_fail(err, CU_EINVAL, "total_size must not be negative");
    if (cfg->max_file_size > 0 && req->total_size > cfg->max_file_size)
        return cu_fail(err, CU_ETOOLARGE, "total_size %lld is above the limit of %lld bytes",
                       (long long)req->total_size, (long long)cfg->max_file_size);
    int64_t parts = req->total_size / cfg->chunk_size + (req->total_size % cfg->chunk_size != 0);
    if (parts > cfg->max_parts)
        return cu_fail(err, CU_EINVAL,
                       "total_size %lld needs %lld parts of %lld bytes; at most %d parts are "
                       "allowed, so the largest file is %lld bytes",
                       (long long)req->total_size, (long long)parts, (long long)cfg->chunk_size,
                       cfg->max_parts, (long long)((int64_t)cfg->max_parts * cfg->chunk_size));
    if (req->webhook_url && !valid_webhook_url(req->webhook_url))
        return cu_fail(err, CU_EINVAL, "webhook_url must be an http:// or https:// URL");
    unsigned char digest[32];
    if (req->checksum_sha256 && util_unhex_sha256(req->checksum_sha256, digest) != 0)
        return cu_fail(err, CU_EINVAL, "checksum_sha256 must be 64 hex digits");
    if (req->checksum_sha256 && !(storage_caps(svc->deps.storage) & STORAGE_CAP_STAGE_READ))
        return cu_fail(err, CU_EINVAL,
                       "checksum_sha256 (of the whole file) is not available with %s storage; "
                       "send per-part digests (Content-Digest or X-Checksum-SHA256) instead",
                       svc->deps.storage->name);

    meta_upload *u = &out->upload;
    if (util_uuid_v4(u->id) != 0)
        return cu_fail(err, CU_EIO, "No randomness available");
    snprintf(u->protocol, sizeof u->protocol, "seed");
    u->filename = strndup(req->filename, req->filename_len);
    u->total_size = req->total_size;
    u->chunk_size = cfg->chunk_size;
    u->total_parts = (int)parts;
    u->state = UPLOAD_PENDING;
    if (req->checksum_sha256) {
        u->checksum_sha256 = malloc(CU_SHA256_HEX_LEN + 1);
        if (u->checksum_sha256)
            util_hex(digest, sizeof digest, u->checksum_sha256);
    }
    u->webhook_url = req->webhook_url ? strdup(req->webhook_url) : NULL;
    double now = util_now();
    u->created_at = (int64_t)now;
    u->expires_at = (int64_t)(now + cfg->upload_ttl_seconds);
    if (u->expires_at <= u->created_at)
        u->expires_at = u->created_at + 1;

    meta_part *prows = calloc((size_t)parts + 1, sizeof *prows);
    out->tokens = calloc((size_t)parts + 1, sizeof *out->tokens);
    if (!u->filename || !prows || !out->tokens) {
        free(prows);
        upload_init_result_clear(out);
        return cu_fail(err, CU_EIO, "Out of memory");
    }
    for (int i = 0; i < (int)parts; i++) {
        token_claims claims = {.part_number = i,
                               .expected_size = upload_part_size(u->total_size, u->chunk_size, i),
                               .exp = u->expires_at};
        memcpy(claims.upload_id, u->id, sizeof u->id);
        out->tokens[i] = token_issue(cfg->jwt_secret, &claims);
        if (!out->tokens[i]) {
            free(prows);
            upload_init_result_clear(out);
            return cu_fail(err, CU_EIO, "Cannot sign part tokens");
        }
        prows[i].part = i;
        prows[i].size = claims.expected_size;
        util_sha256_hex(out->tokens[i], strlen(out->tokens[i]), prows[i].token_sha256);
    }

    /* Data first, then the record: a crash in between leaves an orphan staging file, never a
     * record that points at nothing. */
    upload_view view;
    rc = storage_stage_create(svc->deps.storage, view_of(u, &view), &u->storage_ref, err);
    if (rc == 0) {
        rc = meta_upload_create(svc->deps.meta, u, prows, (int)parts, err);
        if (rc)
            storage_abort(svc->deps.storage, view_of(u, &view), NULL);
    }
    free(prows);
    if (rc) {
        upload_init_result_clear(out);
        return rc;
    }
    log_info("upload %s created: %s, %lld bytes, %d parts", u->id, u->filename,
             (long long)u->total_size, u->total_parts);
    return 0;
}

void upload_init_result_clear(upload_init_result *r)
{
    if (r->tokens) {
        for (int i = 0; i < r->upload.total_parts; i++)
            free(r->tokens[i]);
        free(r->tokens);
    }
    meta_upload_clear(&r->upload);
    r->tokens = NULL;
}

/* ---- reading ---- */

static bool is_past_expiry(const meta_upload *u)
{
    return u->state == UPLOAD_PENDING && u->expires_at <= now_s();
}

/* Refuses requests on uploads that ended without completing. */
static int check_not_ended(const meta_upload *u, cu_error *err)
{
    if (u->state == UPLOAD_EXPIRED || is_past_expiry(u))
        return cu_fail(err, CU_EGONE, "Upload expired");
    if (u->state == UPLOAD_CANCELLED)
        return cu_fail(err, CU_EGONE, "Upload was cancelled");
    return 0;
}

int upload_status(upload_service *svc, const char *id, meta_upload *out, meta_part **parts,
                  int *nparts, cu_error *err)
{
    *parts = NULL;
    *nparts = 0;
    int rc = meta_upload_get(svc->deps.meta, id, out, err);
    if (rc)
        return rc;
    rc = check_not_ended(out, err);
    if (rc == 0)
        rc = meta_parts_list(svc->deps.meta, id, parts, nparts, err);
    if (rc)
        meta_upload_clear(out);
    return rc;
}

/* ---- parts ---- */

/* Why a part cannot be written to an upload in this state (0 when it can). */
static int check_accepts_parts(const meta_upload *u, cu_error *err)
{
    if (u->state == UPLOAD_EXPIRED || is_past_expiry(u))
        return cu_fail(err, CU_EGONE, "Upload expired");
    switch (u->state) {
    case UPLOAD_PENDING:
        return 0;
    case UPLOAD_CANCELLED:
        return cu_fail(err, CU_ECONFLICT, "Upload was cancelled");
    case UPLOAD_COMPLETE:
    case UPLOAD_FINALIZING:
        return cu_fail(err, CU_ECONFLICT, "Upload is already complete");
    default:
        return cu_fail(err, CU_ECONFLICT, "Upload is %s", upload_state_name(u->state));
    }
}

int upload_part_begin(upload_service *svc, const part_request *req, part_session **out,
                      cu_error *err)
{
    const cu_config *cfg = svc->deps.cfg;
    *out = NULL;
    if (!req->token || !*req->token)
        return cu_fail(err, CU_EAUTH, "Missing part token (Authorization: Bearer <token>)");
    token_claims claims;
    int rc = token_verify(cfg->jwt_secret, req->token, &claims, err);
    if (rc)
        return rc;
    if (strcmp(claims.upload_id, req->upload_id) != 0)
        return cu_fail(err, CU_EAUTH, "Part token is for another upload");

    meta_upload u;
    rc = meta_upload_get(svc->deps.meta, req->upload_id, &u, err);
    if (rc)
        return rc;
    meta_part part = {0};
    rc = check_accepts_parts(&u, err);
    if (rc)
        goto out;
    if (req->part_number < 0 || req->part_number >= u.total_parts) {
        rc = cu_fail(err, CU_EINVAL,
                     "Part number %lld is out of range: this upload has parts 0 to %d",
                     (long long)req->part_number, u.total_parts - 1);
        goto out;
    }
    int n = (int)req->part_number;
    int64_t expected = upload_part_size(u.total_size, u.chunk_size, n);
    rc = token_check_claims(&claims, req->upload_id, n, expected, now_s(), err);
    if (rc)
        goto out;
    rc = meta_part_get(svc->deps.meta, req->upload_id, n, &part, err);
    if (rc)
        goto out;
    char token_sha[CU_SHA256_HEX_LEN + 1];
    util_sha256_hex(req->token, strlen(req->token), token_sha);
    if (CRYPTO_memcmp(token_sha, part.token_sha256, CU_SHA256_HEX_LEN) != 0) {
        rc = cu_fail(err, CU_EAUTH, "Part token was not issued for this part");
        goto out;
    }
    if (part.state == PART_UPLOADED) {
        rc = cu_fail(err, CU_ECONFLICT, "Part %d already uploaded", n);
        goto out;
    }
    if (req->content_length > expected) {
        rc = cu_fail(err, CU_ETOOLARGE, "Part %d must be %lld bytes, Content-Length is %lld", n,
                     (long long)expected, (long long)req->content_length);
        goto out;
    }
    if (req->content_length >= 0 && req->content_length < expected) {
        rc = cu_fail(err, CU_EINVAL, "Part %d must be %lld bytes, Content-Length is %lld", n,
                     (long long)expected, (long long)req->content_length);
        goto out;
    }
    if (!claim_take(svc, req->upload_id, n)) {
        rc = cu_fail(err, CU_ECONFLICT, "Part %d is being uploaded by another request", n);
        goto out;
    }

    part_session *ps = calloc(1, sizeof *ps);
    if (!ps) {
        claim_release(svc, req->upload_id, n);
        rc = cu_fail(err, CU_EIO, "Out of memory");
        goto out;
    }
    ps->svc = svc;
    memcpy(ps->upload_id, u.id, sizeof ps->upload_id);
    ps->part = n;
    ps->total_parts = u.total_parts;
    ps->expected = expected;
    if (req->digest) {
        ps->has_digest = true;
        memcpy(ps->digest, req->digest, sizeof ps->digest);
    }
    ps->sha = EVP_MD_CTX_new();
    upload_view view;
    if (!ps->sha || EVP_DigestInit_ex(ps->sha, EVP_sha256(), NULL) != 1) {
        rc = cu_fail(err, CU_EIO, "Out of memory");
    } else {
        rc = storage_writer_open(svc->deps.storage, view_of(&u, &view), (int64_t)n * u.chunk_size,
                                 expected, &ps->writer, err);
    }
    if (rc) {
        upload_part_abandon(ps);
        goto out;
    }
    *out = ps;
out:
    free(part.storage_ref);
    meta_upload_clear(&u);
    return rc;
}

int upload_part_write(part_session *ps, const void *buf, size_t len, cu_error *err)
{
    if ((int64_t)len > ps->expected - ps->received)
        return cu_fail(err, CU_ETOOLARGE, "Part %d must be %lld bytes, the body is longer",
                       ps->part, (long long)ps->expected);
    int rc = storage_writer_write(ps->writer, buf, len, err);
    if (rc)
        return rc;
    EVP_DigestUpdate(ps->sha, buf, len);
    ps->received += (int64_t)len;
    return 0;
}

static void session_free(part_session *ps)
{
    claim_release(ps->svc, ps->upload_id, ps->part);
    EVP_MD_CTX_free(ps->sha);
    free(ps);
}

void upload_part_abandon(part_session *ps)
{
    if (!ps)
        return;
    storage_writer_abort(ps->writer);
    session_free(ps);
}

int upload_part_end(part_session *ps, part_result *out, cu_error *err)
{
    if (ps->received != ps->expected) {
        int rc = cu_fail(err, CU_EINVAL, "Part %d must be %lld bytes, got %lld", ps->part,
                         (long long)ps->expected, (long long)ps->received);
        upload_part_abandon(ps);
        return rc;
    }
    unsigned char md[32];
    EVP_DigestFinal_ex(ps->sha, md, NULL);
    memset(out, 0, sizeof *out);
    util_hex(md, sizeof md, out->checksum_sha256);
    if (ps->has_digest && CRYPTO_memcmp(md, ps->digest, sizeof md) != 0) {
        char want[CU_SHA256_HEX_LEN + 1];
        util_hex(ps->digest, sizeof ps->digest, want);
        int rc = cu_fail(err, CU_EINVAL, "Checksum mismatch for part %d: expected %s, got %s",
                         ps->part, want, out->checksum_sha256);
        upload_part_abandon(ps);
        return rc;
    }
    storage_written written;
    storage_writer_t *w = ps->writer;
    ps->writer = NULL;
    int rc = storage_writer_finish(w, md, &written, err);
    if (rc == 0)
        rc = meta_part_mark_uploaded(
            ps->svc->deps.meta, ps->upload_id, ps->part, ps->received, out->checksum_sha256,
            written.nchunks ? written.chunks[0].ref : NULL, &out->uploaded_parts, err);
    storage_written_clear(&written);
    if (rc == 0) {
        memcpy(out->upload_id, ps->upload_id, sizeof out->upload_id);
        out->part_number = ps->part;
        out->total_parts = ps->total_parts;
        log_debug("upload %s part %d stored (%lld bytes, %d/%d)", ps->upload_id, ps->part,
                  (long long)ps->received, out->uploaded_parts, ps->total_parts);
    }
    session_free(ps);
    return rc;
}

/* ---- complete, cancel, expire ---- */

static int verify_whole_file(upload_service *svc, const meta_upload *u, cu_error *err)
{
    unsigned char want[32], got[32];
    if (util_unhex_sha256(u->checksum_sha256, want) != 0)
        return cu_fail(err, CU_EIO, "Stored checksum is unreadable");
    upload_view view;
    int rc = storage_stage_sha256(svc->deps.storage, view_of(u, &view), got, err);
    if (rc)
        return rc;
    if (CRYPTO_memcmp(want, got, sizeof got) != 0) {
        char got_hex[CU_SHA256_HEX_LEN + 1];
        util_hex(got, sizeof got, got_hex);
        return cu_fail(err, CU_ECHECKSUM,
                       "Checksum mismatch: the file's SHA-256 is %s, init declared %s; the "
                       "upload stays pending",
                       got_hex, u->checksum_sha256);
    }
    return 0;
}

/* Moves a FINALIZING upload into place and records it complete. */
static int finalize(upload_service *svc, meta_upload *u, cu_error *err)
{
    meta_part *parts = NULL;
    int nparts = 0;
    char *final_path = NULL, *body = NULL;
    storage_chunk *refs = NULL;
    int rc = meta_parts_list(svc->deps.meta, u->id, &parts, &nparts, err);
    if (rc == 0) {
        refs = calloc((size_t)nparts + 1, sizeof *refs);
        for (int i = 0; refs && i < nparts; i++)
            refs[i] = (storage_chunk){
                .index = parts[i].part, .size = parts[i].size, .ref = parts[i].storage_ref};
        upload_view view;
        rc = refs ? storage_finish(svc->deps.storage, view_of(u, &view), refs, nparts, &final_path,
                                   err)
                  : cu_fail(err, CU_EIO, "Out of memory");
        if (rc) /* e.g. a file in the way: give the upload back to the client, intact */
            meta_upload_transition(svc->deps.meta, u->id, UPLOAD_FINALIZING, UPLOAD_PENDING, NULL);
    }
    if (rc == 0) {
        int64_t completed_at = now_s();
        free(u->final_path);
        u->final_path = strdup(final_path);
        u->completed_at = completed_at;
        if (u->webhook_url)
            body = webhook_payload(u, upload_storage_name(svc));
        rc = meta_upload_complete(svc->deps.meta, u->id, final_path, completed_at, body, err);
        if (rc == CU_ECONFLICT) {
            /* A concurrent completion recorded it first: answer with its record. */
            char id[CU_UUID_LEN + 1];
            memcpy(id, u->id, sizeof id);
            meta_upload_clear(u);
            rc = meta_upload_get(svc->deps.meta, id, u, err);
            if (rc == 0 && u->state != UPLOAD_COMPLETE)
                rc = cu_fail(err, CU_ECONFLICT, "Upload is %s", upload_state_name(u->state));
            free(body);
            body = NULL;
        }
    }
    if (rc == 0 && u->state == UPLOAD_FINALIZING) {
        u->state = UPLOAD_COMPLETE;
        log_info("upload %s complete: %s", u->id, final_path);
        if (body && svc->deps.on_webhook_queued)
            svc->deps.on_webhook_queued(svc->deps.on_webhook_queued_ctx);
    }
    free(body);
    free(refs);
    meta_parts_free(parts, nparts);
    free(final_path);
    return rc;
}

int upload_complete(upload_service *svc, const char *id, meta_upload *out, cu_error *err)
{
    int rc = meta_upload_get(svc->deps.meta, id, out, err);
    if (rc)
        return rc;
    switch (out->state) {
    case UPLOAD_COMPLETE:
        return 0;
    case UPLOAD_CANCELLED:
        rc = cu_fail(err, CU_ECONFLICT, "Upload was cancelled");
        goto fail;
    case UPLOAD_EXPIRED:
        rc = cu_fail(err, CU_EGONE, "Upload expired");
        goto fail;
    case UPLOAD_FAILED:
        rc = cu_fail(err, CU_ECONFLICT, "Upload failed");
        goto fail;
    case UPLOAD_FINALIZING:
        /* An earlier completion stopped halfway (crash, storage error): finish it. */
        break;
    case UPLOAD_PENDING:
        if (is_past_expiry(out)) {
            rc = cu_fail(err, CU_EGONE, "Upload expired");
            goto fail;
        }
        if (out->uploaded_parts < out->total_parts) {
            rc = cu_fail(err, CU_EINVAL, "Not all parts uploaded: %d/%d complete",
                         out->uploaded_parts, out->total_parts);
            goto fail;
        }
        if (out->checksum_sha256 && (rc = verify_whole_file(svc, out, err)) != 0)
            goto fail;
        rc = meta_upload_transition(svc->deps.meta, id, UPLOAD_PENDING, UPLOAD_FINALIZING, err);
        if (rc == CU_ECONFLICT) {
            /* Someone else got there first: answer with whatever it became. */
            meta_upload_clear(out);
            rc = meta_upload_get(svc->deps.meta, id, out, err);
            if (rc == 0 && out->state != UPLOAD_COMPLETE)
                rc = cu_fail(err, CU_ECONFLICT, "Upload is %s", upload_state_name(out->state));
            if (rc)
                goto fail;
            return 0;
        }
        if (rc)
            goto fail;
        out->state = UPLOAD_FINALIZING;
        break;
    }
    rc = finalize(svc, out, err);
    if (rc == 0)
        return 0;
fail:
    meta_upload_clear(out);
    return rc;
}

/* Removes an ended upload's data and records that it is gone; on failure the record says
 * so and the reaper tries again later. */
static void purge(upload_service *svc, meta_upload *u)
{
    upload_view view;
    cu_error err;
    if (storage_abort(svc->deps.storage, view_of(u, &view), &err) != 0)
        log_warn("upload %s: removing its data failed, will retry: %s", u->id, err.msg);
    else if (meta_upload_mark_purged(svc->deps.meta, u->id, &err) != 0)
        log_warn("upload %s: %s", u->id, err.msg);
}

/* Ends a pending upload (cancel or expiry): first the record, so no part or completion can
 * start any more, then the data. */
static int end_upload(upload_service *svc, meta_upload *u, upload_state to, cu_error *err)
{
    int rc = meta_upload_end(svc->deps.meta, u->id, UPLOAD_PENDING, to, err);
    if (rc == 0)
        purge(svc, u);
    return rc;
}

int upload_cancel(upload_service *svc, const char *id, cu_error *err)
{
    meta_upload u;
    int rc = meta_upload_get(svc->deps.meta, id, &u, err);
    if (rc)
        return rc;
    if (u.state == UPLOAD_EXPIRED || is_past_expiry(&u))
        rc = cu_fail(err, CU_EGONE, "Upload expired");
    else if (u.state == UPLOAD_CANCELLED)
        rc = cu_fail(err, CU_ECONFLICT, "Upload was already cancelled");
    else if (u.state == UPLOAD_COMPLETE || u.state == UPLOAD_FINALIZING)
        rc = cu_fail(err, CU_ECONFLICT, "Upload is already complete");
    else if (u.state != UPLOAD_PENDING)
        rc = cu_fail(err, CU_ECONFLICT, "Upload is %s", upload_state_name(u.state));
    else
        rc = end_upload(svc, &u, UPLOAD_CANCELLED, err);
    if (rc == CU_ECONFLICT && u.state == UPLOAD_PENDING)
        cu_fail(err, CU_ECONFLICT, "Upload changed state while being cancelled; try again");
    if (rc == 0)
        log_info("upload %s cancelled", id);
    meta_upload_clear(&u);
    return rc;
}

int upload_expire_due(upload_service *svc, int *expired, cu_error *err)
{
    *expired = 0;
    /* First the data an earlier removal left behind (storage was down, or the server
     * stopped between ending an upload and removing its data). */
    meta_upload *left = NULL;
    int nleft = 0;
    int rc = meta_uploads_to_purge(svc->deps.meta, 64, &left, &nleft, err);
    for (int i = 0; rc == 0 && i < nleft; i++)
        purge(svc, &left[i]);
    meta_uploads_free(left, nleft);
    if (rc)
        return rc;
    for (;;) {
        meta_upload *due = NULL;
        int n = 0;
        rc = meta_uploads_due(svc->deps.meta, now_s(), 64, &due, &n, err);
        if (rc) {
            meta_uploads_free(due, n);
            return rc;
        }
        int ended = 0;
        for (int i = 0; i < n; i++) {
            if (end_upload(svc, &due[i], UPLOAD_EXPIRED, NULL) == 0) {
                log_info("upload %s expired (%d/%d parts had arrived)", due[i].id,
                         due[i].uploaded_parts, due[i].total_parts);
                ended++;
            }
        }
        meta_uploads_free(due, n);
        *expired += ended;
        if (n < 64 || ended == 0)
            return 0;
    }
}
