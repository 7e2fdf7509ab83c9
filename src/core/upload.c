/* upload.c - the engine. */
#include "core/upload.h"

#include "base/filetype.h"
#include "base/log.h"
#include "base/util.h"
#include "core/filename.h"
#include "core/webhook.h"

#include <assert.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_OBSERVERS 8

struct upload_service {
    upload_deps deps;
    upload_locks *own_locks; /* made here when deps gave none */
    upload_observer observers[MAX_OBSERVERS];
    int nobservers;
    /* Completions in progress in this process (ids), so that concurrent callers wait for the
     * one under way and answer with its outcome. */
    pthread_mutex_t finish_lock;
    pthread_cond_t finish_done;
    char (*finishing)[CU_UUID_LEN + 1];
    size_t nfinishing, finishing_cap;
};

struct upload_write {
    upload_service *svc;
    char id[CU_UUID_LEN + 1];
    int slot; /* UPLOAD_LOCK_WHOLE for a stream */
    upload_claim *claim;
    bool holding; /* inside a step of the claim (upload_lock_hold) */
    bool stream;
    int64_t offset;   /* where the bytes go */
    int64_t expected; /* slot: exactly this many; stream: at most this many, -1 unbounded */
    int64_t received;
    upload_digest_alg alg;
    unsigned char digest[64];
    EVP_MD_CTX *sha;   /* always: the bytes' SHA-256 (recorded, and sent on by S3) */
    EVP_MD_CTX *other; /* the expected digest's algorithm, when it is not SHA-256 */
    storage_writer_t *writer;
    int64_t size_limit; /* a stream of unknown length: MAX_FILE_SIZE bounds it (else 0) */
    /* ALLOWED_TYPES: a write at offset 0 gathers the file's first bytes (at most
     * SNIFF_WINDOW) and has them judged before it stores more, or at its end. */
    bool sniffing;            /* this write's bytes must be judged before they are kept */
    bool judged;              /* they were: their type is in kind */
    bool enforce;             /* the type decides (a partial upload's is only recorded) */
    bool refused;             /* the type was refused: the upload failed, the writer is gone */
    unsigned char *sniff_buf; /* the bytes so far, until judged */
    size_t sniff_len, sniff_window;
    char *declared; /* the upload's declared content type, or NULL */
    char kind[FILETYPE_MAX];
};

upload_service *upload_service_new(const upload_deps *deps)
{
    assert(!deps->cfg->allowed_type_list || deps->sniffer);
    upload_service *svc = calloc(1, sizeof *svc);
    if (!svc)
        return NULL;
    svc->deps = *deps;
    pthread_mutex_init(&svc->finish_lock, NULL);
    pthread_cond_init(&svc->finish_done, NULL);
    if (!svc->deps.locks) {
        svc->own_locks = svc->deps.locks = upload_locks_memory();
        if (!svc->own_locks) {
            free(svc);
            return NULL;
        }
    }
    return svc;
}

void upload_service_free(upload_service *svc)
{
    if (!svc)
        return;
    upload_locks_destroy(svc->own_locks);
    pthread_mutex_destroy(&svc->finish_lock);
    pthread_cond_destroy(&svc->finish_done);
    free(svc->finishing);
    free(svc);
}

int upload_observe(upload_service *svc, const upload_observer *o)
{
    if (svc->nobservers == MAX_OBSERVERS)
        return -1;
    svc->observers[svc->nobservers++] = *o;
    return 0;
}

const char *upload_storage_name(const upload_service *svc)
{
    return svc->deps.storage->name;
}

unsigned upload_storage_caps(const upload_service *svc)
{
    return storage_caps(svc->deps.storage);
}

int upload_check_ready(upload_service *svc, cu_error *err)
{
    return meta_check(svc->deps.meta, err);
}

static void emit(upload_service *svc, upload_event_kind kind, const meta_upload *u, int slot,
                 int64_t bytes, bool webhook_queued)
{
    upload_event ev = {
        .kind = kind, .upload = u, .slot = slot, .bytes = bytes, .webhook_queued = webhook_queued};
    for (int i = 0; i < svc->nobservers; i++)
        svc->observers[i].on_event(svc->observers[i].ctx, &ev);
}

static int64_t now_s(void)
{
    return (int64_t)util_now();
}

/* ---- slots ---- */

int64_t upload_slot_count(int64_t total_size, int64_t slot_size, bool last_slot_absorbs)
{
    assert(slot_size > 0 && total_size >= 0);
    if (last_slot_absorbs)
        return total_size / slot_size > 0 ? total_size / slot_size : 1;
    return total_size / slot_size + (total_size % slot_size != 0);
}

int64_t upload_slot_size(const meta_upload *u, int slot)
{
    assert(u->layout == UPLOAD_LAYOUT_SLOTS && slot >= 0 && slot < u->total_parts);
    int64_t start = (int64_t)slot * u->chunk_size;
    if (slot == u->total_parts - 1)
        return u->total_size - start; /* the last: whatever is left (flow's may be larger) */
    return u->chunk_size;
}

/* ---- how storage sees an upload ---- */

/* An upload as the blob store sees it; the key lives in the struct, so keep it in scope. */
typedef struct {
    storage_upload up;
    char key[FILENAME_MAX_TOTAL + CU_UUID_LEN + 32];
} upload_view;

/* The key where the finished file goes: "dir/<id>_name"; partial uploads, which never become
 * files, are staged under ".partials/<id>" (S3 needs a key from the start). */
static const storage_upload *view_of(const meta_upload *u, upload_view *v)
{
    size_t dir_len;
    const char *base = filename_split(u->filename, &dir_len);
    if (u->partial)
        snprintf(v->key, sizeof v->key, ".partials/%s", u->id);
    else if (dir_len)
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

/* ---- kinds of file ---- */

/* ALLOWED_EXTENSIONS and ALLOWED_TYPES on what a create request says of its file: its name and
 * the type the client declares. */
static int check_declared_kind(const cu_config *cfg, const upload_create_request *req,
                               cu_error *err)
{
    if (cfg->allowed_extension_list &&
        !filetype_extensions_match(cfg->allowed_extension_list, req->filename, req->filename_len))
        return cu_fail(err, CU_EMEDIATYPE,
                       "The file name's extension is not allowed here (allowed: %s)",
                       cfg->allowed_extensions);
    if (!cfg->allowed_type_list || !req->content_type || !*req->content_type)
        return 0;
    char essence[FILETYPE_MAX];
    if (filetype_essence(req->content_type, strlen(req->content_type), essence) != 0)
        return cu_fail(err, CU_EMEDIATYPE,
                       "The declared content type \"%.100s\" is not a media type",
                       req->content_type);
    /* "Some bytes": what clients declare when they do not know. The sniffed type decides. */
    if (!strcmp(essence, "application/octet-stream"))
        return 0;
    if (!filetype_patterns_match(cfg->allowed_type_list, essence))
        return cu_fail(err, CU_EMEDIATYPE, "Files of type %s are not allowed here (allowed: %s)",
                       essence, cfg->allowed_types);
    return 0;
}

/* Whether a file whose first bytes libmagic found to be `sniffed` may be kept, given the type
 * its client declared (or NULL); kind gets the type it is recorded with. The declared type is
 * only what the client says, so the finding decides, with one refinement: libmagic says
 * text/plain for text it knows nothing more about, which a declared text type names better (a
 * CSV declared text/csv is text/csv, and allowed only if text/csv is). */
static bool content_allowed(const cu_config *cfg, const char *sniffed, const char *declared,
                            char kind[FILETYPE_MAX])
{
    snprintf(kind, FILETYPE_MAX, "%s", sniffed);
    char essence[FILETYPE_MAX];
    if (!strcmp(sniffed, "text/plain") && declared &&
        filetype_essence(declared, strlen(declared), essence) == 0 && !strncmp(essence, "text/", 5))
        snprintf(kind, FILETYPE_MAX, "%s", essence);
    return filetype_patterns_match(cfg->allowed_type_list, kind);
}

/* The reason a file of type kind is refused, in err (CU_EMEDIATYPE). */
static int kind_refused(const cu_config *cfg, const char *kind, cu_error *err)
{
    return cu_fail(err, CU_EMEDIATYPE,
                   "The file's content is %s, which is not allowed here (allowed: %s)", kind,
                   cfg->allowed_types);
}

/* Whether files are sniffed (ALLOWED_TYPES is set). */
static bool sniffs(const upload_service *svc)
{
    return svc->deps.cfg->allowed_type_list != NULL;
}

const char *upload_content_type(const meta_upload *u)
{
    if (u->detected_type)
        return u->detected_type;
    if (u->content_type && *u->content_type)
        return u->content_type;
    return "application/octet-stream";
}

static int end_upload(upload_service *svc, meta_upload *u, upload_state from, upload_state to,
                      const cu_error *why, cu_error *err);

/* Ends upload id (in state from) as failed because of why (a refused type) and removes its
 * data; returns why's code with why's message and what became of the upload in err. */
static int fail_upload(upload_service *svc, const char *id, upload_state from, const cu_error *why,
                       cu_error *err)
{
    cu_error reason = *why, e2;
    meta_upload u = {0};
    int rc = meta_upload_get(svc->deps.meta, id, &u, &e2);
    if (rc == 0)
        rc = end_upload(svc, &u, from, UPLOAD_FAILED, &reason, &e2);
    meta_upload_clear(&u);
    if (rc) {
        log_warn("upload %s: recording that it failed (%s): %s", id, reason.msg, e2.msg);
        return cu_fail(err, reason.code, "%s", reason.msg);
    }
    log_info("upload %s failed: %s", id, reason.msg);
    return cu_fail(err, reason.code, "%s; the upload failed and its data is removed", reason.msg);
}

/* The answer about an upload that failed: the code and reason it failed with. */
static int failure_of(const meta_upload *u, cu_error *err)
{
    assert(u->state == UPLOAD_FAILED);
    return cu_fail(err, u->failure_code < 0 ? u->failure_code : CU_ECONFLICT, "Upload failed: %s",
                   u->failure_reason ? u->failure_reason : "no reason was recorded");
}

/* ---- creating ---- */

/* The checks of a create request that need no storage: name, sizes, URL, digest. Fills the
 * record's layout fields. */
static int check_create(upload_service *svc, const upload_create_request *req, meta_upload *u,
                        int64_t *nslots, cu_error *err)
{
    const cu_config *cfg = svc->deps.cfg;
    const storage_t *st = svc->deps.storage;
    int rc = req->partial ? 0 : filename_check(req->filename, req->filename_len, err);
    if (rc == 0 && !req->partial)
        rc = filename_check_for_storage(req->filename, st->forbidden_name_chars,
                                        st->allows_trailing_dot_space, st->name, err);
    if (rc == 0 && !req->partial)
        rc = check_declared_kind(cfg, req, err);
    if (rc)
        return rc;
    if (req->total_size < -1)
        return cu_fail(err, CU_EINVAL, "total_size must not be negative");
    if (req->total_size < 0 && req->layout != UPLOAD_LAYOUT_STREAM)
        return cu_fail(err, CU_EINVAL, "The size of the file is required");
    if (req->total_size < 0 && !(storage_caps(st) & STORAGE_CAP_DEFER_LENGTH))
        return cu_fail(err, CU_ENOTSUP, "%s storage needs the file's size up front", st->name);
    if (req->layout == UPLOAD_LAYOUT_STREAM && !(storage_caps(st) & STORAGE_CAP_APPEND))
        return cu_fail(err, CU_ENOTSUP, "%s storage cannot take appends", st->name);
    if (cfg->max_file_size > 0 && req->total_size > cfg->max_file_size)
        return cu_fail(err, CU_ETOOLARGE, "total_size %lld is above the limit of %lld bytes",
                       (long long)req->total_size, (long long)cfg->max_file_size);
    int64_t slot_size = req->slot_size > 0 ? req->slot_size : cfg->chunk_size;
    *nslots = 0;
    if (req->layout == UPLOAD_LAYOUT_SLOTS) {
        if (st->min_part_size && slot_size < st->min_part_size &&
            req->total_size > slot_size * (req->last_slot_absorbs ? 2 : 1))
            return cu_fail(err, CU_EINVAL,
                           "Chunks of %lld bytes are below %s storage's smallest part (%lld "
                           "bytes)",
                           (long long)slot_size, st->name, (long long)st->min_part_size);
        *nslots = upload_slot_count(req->total_size, slot_size, req->last_slot_absorbs);
        if (*nslots > cfg->max_parts)
            return cu_fail(err, CU_EINVAL,
                           "total_size %lld needs %lld parts of %lld bytes; at most %d parts are "
                           "allowed, so the largest file is %lld bytes",
                           (long long)req->total_size, (long long)*nslots, (long long)slot_size,
                           cfg->max_parts, (long long)((int64_t)cfg->max_parts * slot_size));
    }
    /* Space and quota before anything is created or signed: a request for a petabyte is
     * refused at once. The quota is checked again, exactly, when the record is written. */
    if (req->total_size > 0 && (storage_caps(st) & STORAGE_CAP_SPACE)) {
        int64_t free_bytes;
        int src = storage_available(svc->deps.storage, &free_bytes, err);
        if (src)
            return src;
        if (req->total_size > free_bytes)
            return cu_fail(err, CU_ENOSPC,
                           "Not enough space: %lld bytes free, the upload needs %lld",
                           (long long)free_bytes, (long long)req->total_size);
    }
    meta_limits limits = {.max_open = cfg->max_open_uploads,
                          .max_reserved = cfg->max_reserved_bytes};
    if (limits.max_open || limits.max_reserved) {
        int open = 0;
        int64_t reserved = 0;
        int qrc = meta_owner_usage(svc->deps.meta, req->owner, &open, &reserved, err);
        if (qrc == 0)
            qrc = meta_limits_check(&limits, open, reserved, 1, req->total_size, err);
        if (qrc)
            return qrc;
    }
    if (req->webhook_url && (rc = webhook_url_check(cfg, req->webhook_url, err)) != 0)
        return rc;
    unsigned char digest[32];
    if (req->checksum_sha256 && util_unhex_sha256(req->checksum_sha256, digest) != 0)
        return cu_fail(err, CU_EINVAL, "checksum_sha256 must be 64 hex digits");
    if (req->checksum_sha256 && !(storage_caps(st) & STORAGE_CAP_STAGE_READ))
        return cu_fail(err, CU_EINVAL,
                       "checksum_sha256 (of the whole file) is not available with %s storage; "
                       "send per-part digests (Content-Digest or X-Checksum-SHA256) instead",
                       st->name);

    if (req->id)
        snprintf(u->id, sizeof u->id, "%s", req->id);
    else if (util_uuid_v4(u->id) != 0)
        return cu_fail(err, CU_EIO, "No randomness available");
    snprintf(u->protocol, sizeof u->protocol, "%s", req->protocol);
    u->layout = req->layout;
    u->total_size = req->total_size;
    u->chunk_size = slot_size;
    u->total_parts = (int)*nslots;
    u->state = UPLOAD_PENDING;
    u->partial = req->partial;
    double now = util_now();
    u->created_at = (int64_t)now;
    u->expires_at = (int64_t)(now + cfg->upload_ttl_seconds);
    if (u->expires_at <= u->created_at)
        u->expires_at = u->created_at + 1;
    if (req->expires_at)
        u->expires_at = req->expires_at;
    bool oom = false;
#define DUP(field, value)                                                                          \
    do {                                                                                           \
        if (value && !(u->field = strdup(value)))                                                  \
            oom = true;                                                                            \
    } while (0)
    if (!(u->filename = strndup(req->filename ? req->filename : "", req->filename_len)))
        oom = true;
    DUP(owner, req->owner);
    DUP(content_type, req->content_type);
    DUP(metadata, req->metadata);
    DUP(client_key, req->client_key);
    DUP(webhook_url, req->webhook_url);
    DUP(concat_of, req->concat_of);
#undef DUP
    if (req->checksum_sha256 && (u->checksum_sha256 = malloc(CU_SHA256_HEX_LEN + 1)))
        util_hex(digest, sizeof digest, u->checksum_sha256);
    else if (req->checksum_sha256)
        oom = true;
    return oom ? cu_fail_oom(err) : 0;
}

int upload_validate(upload_service *svc, const upload_create_request *req, cu_error *err)
{
    meta_upload scratch = {0};
    int64_t nslots;
    int rc = check_create(svc, req, &scratch, &nslots, err);
    meta_upload_clear(&scratch);
    return rc;
}

int upload_create(upload_service *svc, const upload_create_request *req, meta_upload *out,
                  cu_error *err)
{
    memset(out, 0, sizeof *out);
    int64_t nslots = 0;
    int rc = check_create(svc, req, out, &nslots, err);
    meta_part *rows = NULL;
    if (rc == 0 && nslots > 0 && !(rows = calloc((size_t)nslots, sizeof *rows)))
        rc = cu_fail_oom(err);
    for (int i = 0; rc == 0 && i < (int)nslots; i++) {
        rows[i].part = i;
        rows[i].size = upload_slot_size(out, i);
        if (req->slot_tags && req->slot_tags[i])
            snprintf(rows[i].token_sha256, sizeof rows[i].token_sha256, "%s", req->slot_tags[i]);
    }
    /* Data first, then the record: a crash in between leaves orphan staging data (swept
     * later), never a record that points at nothing. */
    upload_view view;
    if (rc == 0)
        rc = storage_stage_create(svc->deps.storage, view_of(out, &view), &out->storage_ref, err);
    if (rc == 0) {
        meta_limits limits = {.max_open = svc->deps.cfg->max_open_uploads,
                              .max_reserved = svc->deps.cfg->max_reserved_bytes};
        rc = meta_upload_create(svc->deps.meta, out, rows, (int)nslots, &limits, err);
        if (rc)
            storage_abort(svc->deps.storage, view_of(out, &view), NULL);
    }
    free(rows);
    if (rc) {
        meta_upload_clear(out);
        return rc;
    }
    char name[FILENAME_MAX_TOTAL * 4 + 8];
    log_info("upload %s created (%s): %s, %lld bytes%s", out->id, out->protocol,
             log_escape(out->filename, name, sizeof name), (long long)out->total_size,
             out->partial ? ", partial" : "");
    emit(svc, UPLOAD_EVENT_CREATED, out, -1, 0, false);
    return 0;
}

/* ---- reading ---- */

/* Whether u has outlived its expiry without being reaped yet: a pending upload, or a complete
 * partial upload that no concatenation took (a piece is kept only until its upload's expiry). */
static bool is_past_expiry(const meta_upload *u)
{
    bool live = u->state == UPLOAD_PENDING || (u->partial && u->state == UPLOAD_COMPLETE);
    return live && u->expires_at <= now_s();
}

/* The record of upload id; *out is all zeroes when there is none to give (a store promises
 * nothing of *out after a failure), so the caller may clear it either way. */
static int load_record(upload_service *svc, const char *id, meta_upload *out, cu_error *err)
{
    int rc = meta_upload_get(svc->deps.meta, id, out, err);
    if (rc)
        memset(out, 0, sizeof *out);
    return rc;
}

/* An upload the caller may see: an owner-bound caller sees only its own. */
static int get_visible(upload_service *svc, const char *id, const char *owner, meta_upload *out,
                       cu_error *err)
{
    int rc = load_record(svc, id, out, err);
    if (rc == 0 && owner && (!out->owner || strcmp(owner, out->owner) != 0)) {
        meta_upload_clear(out);
        rc = cu_fail(err, CU_ENOTFOUND, "Upload not found");
    }
    return rc;
}

int upload_get(upload_service *svc, const char *id, const char *owner, meta_upload *out,
               cu_error *err)
{
    return get_visible(svc, id, owner, out, err);
}

int upload_find(upload_service *svc, const char *owner, const char *protocol,
                const char *client_key, meta_upload *out, cu_error *err)
{
    int rc = meta_upload_find(svc->deps.meta, owner, protocol, client_key, out, err);
    if (rc)
        memset(out, 0, sizeof *out);
    return rc;
}

/* Refuses requests on uploads that ended without completing. */
static int check_not_ended(const meta_upload *u, cu_error *err)
{
    if (u->state == UPLOAD_EXPIRED || is_past_expiry(u))
        return cu_fail(err, CU_EGONE, "Upload expired");
    if (u->state == UPLOAD_CANCELLED)
        return cu_fail(err, CU_EGONE, "Upload was cancelled");
    if (u->state == UPLOAD_DELETED) /* as for a file that never was: deleted is deleted */
        return cu_fail(err, CU_ENOTFOUND, "File not found (it was deleted)");
    if (u->state == UPLOAD_FAILED)
        return failure_of(u, err);
    return 0;
}

int upload_status(upload_service *svc, const char *id, const char *owner, meta_upload *out,
                  meta_part **parts, int *nparts, cu_error *err)
{
    int rc = meta_upload_with_parts(svc->deps.meta, id, out, parts, nparts, err);
    if (rc) {
        memset(out, 0, sizeof *out);
        *parts = NULL;
        *nparts = 0;
        return rc;
    }
    if (owner && (!out->owner || strcmp(owner, out->owner) != 0))
        rc = cu_fail(err, CU_ENOTFOUND, "Upload not found");
    if (rc == 0)
        rc = check_not_ended(out, err);
    if (rc) {
        meta_parts_free(*parts, *nparts);
        *parts = NULL;
        *nparts = 0;
        meta_upload_clear(out);
    }
    return rc;
}

int upload_slot_get(upload_service *svc, const char *id, int slot, meta_part *out, cu_error *err)
{
    int rc = meta_part_get(svc->deps.meta, id, slot, out, err);
    if (rc)
        memset(out, 0, sizeof *out);
    return rc;
}

int upload_check_writable(const meta_upload *u, cu_error *err)
{
    if (u->state == UPLOAD_EXPIRED || is_past_expiry(u))
        return cu_fail(err, CU_EGONE, "Upload expired");
    switch (u->state) {
    case UPLOAD_PENDING:
        return 0;
    case UPLOAD_CANCELLED:
        return cu_fail(err, CU_ECONFLICT, "Upload was cancelled");
    case UPLOAD_FAILED:
        return failure_of(u, err);
    case UPLOAD_COMPLETE:
    case UPLOAD_FINALIZING:
    case UPLOAD_DELETED:
        return cu_fail(err, CU_ECONFLICT, "Upload is already complete");
    default:
        return cu_fail(err, CU_ECONFLICT, "Upload is %s", upload_state_name(u->state));
    }
}

/* ---- writing ---- */

static const EVP_MD *digest_md(upload_digest_alg alg)
{
    switch (alg) {
    case UPLOAD_DIGEST_SHA1:
        return EVP_sha1();
    case UPLOAD_DIGEST_MD5:
        return EVP_md5();
    default:
        return NULL;
    }
}

static void write_free(upload_write *w)
{
    EVP_MD_CTX_free(w->sha);
    EVP_MD_CTX_free(w->other);
    free(w->sniff_buf);
    free(w->declared);
    free(w);
}

/* The most bytes a stream upload whose length is not declared yet may hold: the smaller of
 * MAX_FILE_SIZE and MAX_RESERVED_BYTES where they are set, else no limit (-1). */
static int64_t deferred_limit(const cu_config *cfg)
{
    int64_t a = cfg->max_file_size, b = cfg->max_reserved_bytes;
    if (a > 0 && b > 0)
        return a < b ? a : b;
    return a > 0 ? a : b > 0 ? b : -1;
}

/* The checks that depend only on what never changes in an upload (its layout and sizes),
 * made before the claim so that a bad request never holds one. */
static int check_range(const cu_config *cfg, const meta_upload *u, const upload_write_request *req,
                       int64_t *offset, int64_t *expected, cu_error *err)
{
    if (u->layout == UPLOAD_LAYOUT_SLOTS) {
        if (req->slot < 0 || req->slot >= u->total_parts)
            return cu_fail(err, CU_EINVAL,
                           "Part number %d is out of range: this upload has parts 0 to %d",
                           req->slot, u->total_parts - 1);
        *offset = (int64_t)req->slot * u->chunk_size;
        *expected = upload_slot_size(u, req->slot);
        if (req->length > *expected)
            return cu_fail(err, CU_ETOOLARGE, "Part %d must be %lld bytes, Content-Length is %lld",
                           req->slot, (long long)*expected, (long long)req->length);
        if (req->length >= 0 && req->length < *expected)
            return cu_fail(err, CU_EINVAL, "Part %d must be %lld bytes, Content-Length is %lld",
                           req->slot, (long long)*expected, (long long)req->length);
        return 0;
    }
    *offset = req->offset;
    /* Before its length is declared, an upload may still not grow past the limits a declared
     * one is held to. */
    int64_t end = u->total_size >= 0 ? u->total_size : deferred_limit(cfg);
    *expected = end >= 0 ? end - req->offset : -1;
    if (end >= 0 && (req->offset > end || req->length > end - req->offset))
        return cu_fail(err, CU_ETOOLARGE, "%lld bytes at offset %lld go past %s (%lld)",
                       (long long)req->length, (long long)req->offset,
                       u->total_size >= 0 ? "the upload's end" : "the largest upload allowed",
                       (long long)end);
    if (req->length >= 0)
        *expected = req->length;
    return 0;
}

/* Makes w gather the first bytes of the file for judging (it writes at offset 0 of u). */
static int sniff_prepare(upload_write *w, const meta_upload *u, cu_error *err)
{
    assert(w->offset == 0);
    int64_t window = w->expected >= 0 && w->expected < SNIFF_WINDOW ? w->expected : SNIFF_WINDOW;
    if (window == 0)
        return 0; /* no bytes: an empty file is judged at its completion */
    w->sniffing = true;
    w->enforce = !u->partial;
    w->sniff_window = (size_t)window;
    if (!(w->sniff_buf = malloc(w->sniff_window)) ||
        (u->content_type && !(w->declared = strdup(u->content_type))))
        return cu_fail_oom(err);
    return 0;
}

/* Run by a request taking over w's claim: whatever w's writer still has in flight lands
 * before the new writer's first byte. */
static void write_fence(void *ctx)
{
    upload_write *w = ctx;
    if (w->writer)
        storage_writer_fence(w->writer);
}

int upload_write_begin(upload_service *svc, const upload_write_request *req, upload_write **out,
                       cu_error *err)
{
    *out = NULL;
    meta_upload u;
    int rc = get_visible(svc, req->id, req->owner, &u, err);
    if (rc)
        return rc;
    bool stream = u.layout == UPLOAD_LAYOUT_STREAM;
    int64_t offset = 0, expected = 0;
    /* The state is checked again once the claim is held; this first look only puts the
     * more useful answer first (an upload that ended, rather than a size). */
    rc = upload_check_writable(&u, err);
    if (rc == 0)
        rc = check_range(svc->deps.cfg, &u, req, &offset, &expected, err);
    int64_t deferred = deferred_limit(svc->deps.cfg);
    int64_t size_limit = stream && u.total_size < 0 && deferred > 0 ? deferred : 0;
    meta_upload_clear(&u);
    if (rc)
        return rc;

    /* Claim first, then read the state: whoever holds the claim sees every write that came
     * before it, so two requests never both find a slot pending. */
    int slot = stream ? UPLOAD_LOCK_WHOLE : req->slot;
    upload_claim *claim = NULL;
    upload_stall_rule stall = {.seconds = svc->deps.cfg->part_stall_seconds,
                               .min_bytes = svc->deps.cfg->part_stall_min_bytes};
    rc = upload_lock_acquire(svc->deps.locks, req->id, slot, &stall, &claim, err);
    if (rc)
        return rc;
    upload_write *w = calloc(1, sizeof *w);
    if (!w) {
        upload_lock_release(svc->deps.locks, claim);
        return cu_fail_oom(err);
    }
    w->claim = claim;
    w->svc = svc;
    snprintf(w->id, sizeof w->id, "%s", req->id);
    w->slot = slot;
    w->stream = stream;
    w->offset = offset;
    w->expected = expected;
    w->size_limit = size_limit;
    w->alg = req->digest_alg;
    memcpy(w->digest, req->digest, sizeof w->digest);
    rc = load_record(svc, req->id, &u, err);
    if (rc)
        goto fail;
    rc = upload_check_writable(&u, err);
    if (rc == 0 && !stream) {
        meta_part part = {0};
        rc = meta_part_get(svc->deps.meta, req->id, req->slot, &part, err);
        if (rc == 0) {
            if (part.state == PART_UPLOADED)
                rc = cu_fail(err, CU_ECONFLICT, "Part %d already uploaded", req->slot);
            free(part.storage_ref);
        }
    }
    if (rc == 0 && stream && u.durable_offset != req->offset)
        rc = cu_fail(err, CU_ECONFLICT, "The upload is at offset %lld, not %lld",
                     (long long)u.durable_offset, (long long)req->offset);
    if (rc == 0 && sniffs(svc) && offset == 0)
        rc = sniff_prepare(w, &u, err);
    if (rc == 0 && !(w->sha = EVP_MD_CTX_new()))
        rc = cu_fail_oom(err);
    if (rc == 0 && EVP_DigestInit_ex(w->sha, EVP_sha256(), NULL) != 1)
        rc = cu_fail(err, CU_EIO, "Cannot hash");
    if (rc == 0 && digest_md(w->alg) &&
        (!(w->other = EVP_MD_CTX_new()) ||
         EVP_DigestInit_ex(w->other, digest_md(w->alg), NULL) != 1))
        rc = cu_fail_oom(err);
    upload_view view;
    if (rc == 0 && stream)
        rc = storage_append_open(svc->deps.storage, view_of(&u, &view), offset, &w->writer, err);
    else if (rc == 0)
        rc = storage_writer_open(svc->deps.storage, view_of(&u, &view), offset, expected,
                                 &w->writer, err);
    meta_upload_clear(&u);
    if (rc)
        goto fail;
    upload_lock_fence(svc->deps.locks, w->claim, write_fence, w);
    *out = w;
    return 0;
fail:
    upload_lock_release(svc->deps.locks, w->claim);
    write_free(w);
    return rc;
}

/* Begins a step under the write's claim; refused when a newer request took it over. */
static int write_hold(upload_write *w, cu_error *err)
{
    assert(!w->holding);
    if (!upload_lock_hold(w->svc->deps.locks, w->claim))
        return cu_fail(err, CU_ECONFLICT,
                       "This request stalled and a newer one took the upload over; it wrote "
                       "nothing more");
    w->holding = true;
    return 0;
}

/* Ends a step that moved `bytes` bytes. */
static void write_unhold_after(upload_write *w, int64_t bytes)
{
    if (w->holding) {
        upload_lock_unhold(w->svc->deps.locks, w->claim, bytes);
        w->holding = false;
    }
}

static void write_unhold(upload_write *w)
{
    write_unhold_after(w, 0);
}

/* Has libmagic judge the first bytes gathered so far: 0 when they may stay (their type in
 * w->kind), else CU_EMEDIATYPE: the upload has failed, its data is removed, and w stores
 * nothing more. A partial upload's type is only recorded (its concatenation is judged). */
static int write_judge(upload_write *w, cu_error *err)
{
    assert(w->sniffing && !w->judged && w->sniff_buf);
    upload_service *svc = w->svc;
    char sniffed[FILETYPE_MAX];
    int rc = sniff_type(svc->deps.sniffer, w->sniff_buf, w->sniff_len, sniffed, err);
    free(w->sniff_buf);
    w->sniff_buf = NULL;
    if (rc)
        return rc;
    w->judged = true;
    if (!w->enforce) {
        snprintf(w->kind, sizeof w->kind, "%s", sniffed);
        return 0;
    }
    if (content_allowed(svc->deps.cfg, sniffed, w->declared, w->kind))
        return 0;
    /* The writer goes first: no backend is asked to remove what it is still writing. */
    storage_writer_abort(w->writer);
    w->writer = NULL;
    w->refused = true;
    cu_error why;
    kind_refused(svc->deps.cfg, w->kind, &why);
    return fail_upload(svc, w->id, UPLOAD_PENDING, &why, err);
}

int upload_write_data(upload_write *w, const void *buf, size_t len, cu_error *err)
{
    if (w->refused)
        return cu_fail(err, CU_EMEDIATYPE, "The upload failed: its content is not allowed");
    if (w->expected >= 0 && (int64_t)len > w->expected - w->received) {
        if (w->stream && w->size_limit)
            return cu_fail(err, CU_ETOOLARGE,
                           "The body goes past the largest file allowed (%lld bytes)",
                           (long long)w->size_limit);
        return w->stream
                   ? cu_fail(err, CU_ETOOLARGE, "The body goes past the upload's end")
                   : cu_fail(err, CU_ETOOLARGE, "Part %d must be %lld bytes, the body is longer",
                             w->slot, (long long)w->expected);
    }
    /* Under the claim: a write that a newer one took over judges nothing. */
    int rc = write_hold(w, err);
    if (rc)
        return rc;
    if (w->sniffing && !w->judged) {
        size_t take = w->sniff_window - w->sniff_len < len ? w->sniff_window - w->sniff_len : len;
        memcpy(w->sniff_buf + w->sniff_len, buf, take);
        w->sniff_len += take;
        /* Judged as soon as the window is full, before the rest is stored; with a digest to
         * check, only at the end, once the bytes are known to be the client's. */
        if (w->sniff_len == w->sniff_window && w->alg == UPLOAD_DIGEST_NONE)
            rc = write_judge(w, err);
    }
    if (rc == 0)
        rc = storage_writer_write(w->writer, buf, len, err);
    write_unhold_after(w, rc ? 0 : (int64_t)len);
    if (rc)
        return rc;
    EVP_DigestUpdate(w->sha, buf, len);
    if (w->other)
        EVP_DigestUpdate(w->other, buf, len);
    w->received += (int64_t)len;
    return 0;
}

void upload_write_result_clear(upload_write_result *r)
{
    meta_upload_clear(&r->upload);
}

static void write_release(upload_write *w)
{
    write_unhold(w);
    upload_lock_release(w->svc->deps.locks, w->claim);
    write_free(w);
}

/* Records that a stream's durable offset moved from `from` by what storage made durable,
 * with the chunks storage completed on the way, in one transaction. */
static int record_stream(upload_service *svc, const char *id, int64_t from,
                         const storage_written *written, cu_error *err)
{
    int n = written->nchunks;
    meta_part *chunks = n ? calloc((size_t)n, sizeof *chunks) : NULL;
    if (n && !chunks)
        return cu_fail_oom(err);
    for (int i = 0; i < n; i++)
        chunks[i] = (meta_part){.part = written->chunks[i].index,
                                .size = written->chunks[i].size,
                                .storage_ref = written->chunks[i].ref};
    int rc = meta_stream_advance(svc->deps.meta, id, from, from + written->durable, chunks, n, err);
    free(chunks);
    return rc;
}

void upload_write_abort(upload_write *w)
{
    if (!w)
        return;
    upload_service *svc = w->svc;
    cu_error held;
    bool taken_over = write_hold(w, &held) != 0;
    if (taken_over)
        log_info("upload %s: a stalled write gave way to a newer one", w->id);
    /* The first bytes of a file stay only once judged: what arrived of them is judged now. */
    cu_error judged_err;
    bool keep = !taken_over && w->stream && w->alg == UPLOAD_DIGEST_NONE && w->writer;
    if (keep && w->sniffing && !w->judged)
        keep = w->sniff_buf && w->sniff_len > 0 && write_judge(w, &judged_err) == 0;
    if (keep && w->judged && meta_upload_set_type(svc->deps.meta, w->id, w->kind, &judged_err))
        keep = false;
    if (keep) {
        /* Keep what arrived: a cut-off stream write resumes from its durable end. */
        storage_written written;
        cu_error err;
        int rc = storage_writer_finish(w->writer, NULL, &written, &err);
        w->writer = NULL;
        if (written.durable > 0) {
            if (record_stream(svc, w->id, w->offset, &written, &err) != 0)
                log_warn("upload %s: keeping an interrupted write: %s", w->id, err.msg);
            else
                log_info("upload %s: interrupted write kept %lld bytes (now at %lld)", w->id,
                         (long long)written.durable, (long long)(w->offset + written.durable));
        } else if (rc) {
            log_warn("upload %s: interrupted write: %s", w->id, err.msg);
        }
        storage_written_clear(&written);
    } else {
        storage_writer_abort(w->writer);
        w->writer = NULL;
    }
    write_release(w);
}

/* Compares the digest the client declared with the bytes' own. */
static int check_digest(upload_write *w, const unsigned char sha256[32], cu_error *err)
{
    if (w->alg == UPLOAD_DIGEST_NONE)
        return 0;
    unsigned char other[64];
    const unsigned char *got = sha256;
    unsigned int len = 32;
    if (w->other) {
        EVP_DigestFinal_ex(w->other, other, &len);
        got = other;
    }
    if (CRYPTO_memcmp(got, w->digest, len) == 0)
        return 0;
    char want_hex[129], got_hex[129];
    util_hex(w->digest, len, want_hex);
    util_hex(got, len, got_hex);
    if (w->stream)
        return cu_fail(err, CU_ECHECKSUM, "Checksum mismatch: expected %s, got %s", want_hex,
                       got_hex);
    return cu_fail(err, CU_ECHECKSUM, "Checksum mismatch for part %d: expected %s, got %s", w->slot,
                   want_hex, got_hex);
}

static int complete_with(upload_service *svc, const char *id, const char *owner,
                         const char *known_sha256, meta_upload *out, cu_error *err);

/* A write that could not be stored because its upload ended meanwhile (it failed, was
 * cancelled, expired): that is what the client needs to hear, rather than rc. */
static int explain_ended(upload_service *svc, const char *id, int rc, cu_error *err)
{
    meta_upload u;
    cu_error why;
    if (meta_upload_get(svc->deps.meta, id, &u, &why) != 0)
        return rc;
    if (check_not_ended(&u, &why) != 0) {
        *err = why;
        rc = why.code;
    }
    meta_upload_clear(&u);
    return rc;
}

int upload_write_end(upload_write *w, upload_write_result *out, cu_error *err)
{
    upload_service *svc = w->svc;
    memset(out, 0, sizeof *out);
    int hrc = write_hold(w, err);
    if (hrc) {
        storage_writer_abort(w->writer);
        w->writer = NULL;
        write_release(w);
        return hrc;
    }
    if (!w->stream && w->received != w->expected) {
        int rc = cu_fail(err, CU_EINVAL, "Part %d must be %lld bytes, got %lld", w->slot,
                         (long long)w->expected, (long long)w->received);
        write_unhold(w);
        upload_write_abort(w);
        return rc;
    }
    unsigned char md[32];
    EVP_DigestFinal_ex(w->sha, md, NULL);
    util_hex(md, sizeof md, out->checksum_sha256);
    int rc = check_digest(w, md, err);
    if (rc) {
        /* The bytes are not recorded: a slot stays pending, a stream keeps its offset, and
         * what was written past it is overwritten by the next write. */
        storage_writer_abort(w->writer);
        w->writer = NULL;
        write_release(w);
        return rc;
    }
    /* A file shorter than the window: its first bytes are all of it, judged now. */
    if (w->refused)
        rc = cu_fail(err, CU_EMEDIATYPE, "The upload failed: its content is not allowed");
    else if (w->sniffing && !w->judged && w->sniff_len > 0)
        rc = w->sniff_buf ? write_judge(w, err)
                          : cu_fail(err, CU_EIO, "The file's first bytes could not be checked");
    if (rc) {
        storage_writer_abort(w->writer);
        w->writer = NULL;
        write_release(w);
        return rc;
    }
    storage_written written;
    rc = storage_writer_finish(w->writer, md, &written, err);
    w->writer = NULL;
    if (rc == 0 && written.durable != w->received)
        rc = cu_fail(err, CU_EIO, "Storage kept %lld of %lld bytes", (long long)written.durable,
                     (long long)w->received);
    if (rc == 0 && w->judged)
        rc = meta_upload_set_type(svc->deps.meta, w->id, w->kind, err);
    int uploaded = 0;
    if (rc == 0 && !w->stream) {
        const char *ref = written.nchunks ? written.chunks[0].ref : NULL;
        rc = meta_part_store(svc->deps.meta, w->id, w->slot, w->received, out->checksum_sha256, ref,
                             &uploaded, err);
    } else if (rc == 0) {
        rc = record_stream(svc, w->id, w->offset, &written, err);
    }
    storage_written_clear(&written);
    if (rc)
        rc = explain_ended(svc, w->id, rc, err);
    out->slot = w->stream ? -1 : w->slot;
    out->bytes = w->received;
    if (rc == 0)
        rc = load_record(svc, w->id, &out->upload, err);
    /* The count this write's own transaction made: a read afterwards may already include a
     * concurrent part's store, and two replies would then report the same count. */
    if (rc == 0 && !w->stream)
        out->upload.uploaded_parts = uploaded;
    if (rc == 0) {
        log_debug("upload %s: stored %lld bytes at %lld", w->id, (long long)w->received,
                  (long long)w->offset);
        emit(svc, UPLOAD_EVENT_PROGRESS, &out->upload, out->slot, w->received, false);
    }
    /* A stream that is now whole completes while the claim still keeps other writers out;
     * when this one write brought every byte, its digest is the file's. */
    meta_upload *u = &out->upload;
    if (rc == 0 && w->stream && u->total_size >= 0 && u->durable_offset == u->total_size &&
        u->state == UPLOAD_PENDING) {
        bool whole = w->offset == 0 && w->received == u->total_size;
        meta_upload done;
        rc = complete_with(svc, w->id, NULL, whole ? out->checksum_sha256 : NULL, &done, err);
        if (rc == 0) {
            meta_upload_clear(u);
            *u = done;
            out->completed = true;
        }
    }
    write_release(w);
    if (rc)
        upload_write_result_clear(out);
    return rc;
}

int upload_declare_length(upload_service *svc, const char *id, int64_t total_size, cu_error *err)
{
    const cu_config *cfg = svc->deps.cfg;
    meta_upload u;
    int rc = load_record(svc, id, &u, err);
    if (rc)
        return rc;
    if ((rc = upload_check_writable(&u, err)) != 0)
        goto out;
    if (u.total_size >= 0) {
        rc = u.total_size == total_size
                 ? 0
                 : cu_fail(err, CU_ECONFLICT, "The upload's length is %lld already",
                           (long long)u.total_size);
        goto out;
    }
    if (total_size < u.durable_offset) {
        rc = cu_fail(err, CU_EINVAL, "%lld bytes are stored already, more than %lld",
                     (long long)u.durable_offset, (long long)total_size);
        goto out;
    }
    if (cfg->max_file_size > 0 && total_size > cfg->max_file_size) {
        rc = cu_fail(err, CU_ETOOLARGE, "%lld bytes is above the limit of %lld bytes",
                     (long long)total_size, (long long)cfg->max_file_size);
        goto out;
    }
    upload_view view;
    rc = storage_declare_length(svc->deps.storage, view_of(&u, &view), total_size, err);
    meta_limits limits = {.max_reserved = cfg->max_reserved_bytes};
    if (rc == 0)
        rc = meta_declare_length(svc->deps.meta, id, total_size, &limits, err);
out:
    meta_upload_clear(&u);
    return rc;
}

/* ---- complete, cancel, expire ---- */

/* Checks the staged bytes against the digest declared at creation: known_sha256 when the
 * caller hashed them all on their way in, else by reading them back. */
static int verify_whole_file(upload_service *svc, const meta_upload *u, const char *known_sha256,
                             cu_error *err)
{
    unsigned char want[32], got[32];
    if (util_unhex_sha256(u->checksum_sha256, want) != 0)
        return cu_fail(err, CU_EIO, "Stored checksum is unreadable");
    upload_view view;
    int rc = known_sha256 ? (util_unhex_sha256(known_sha256, got) == 0
                                 ? 0
                                 : cu_fail(err, CU_EIO, "Computed checksum is unreadable"))
                          : storage_stage_sha256(svc->deps.storage, view_of(u, &view), got, err);
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

/* The pieces storage reported for u, in order, for finish. */
static int chunks_of(upload_service *svc, const char *id, meta_part **parts, int *n,
                     storage_chunk **chunks, cu_error *err)
{
    meta_upload scratch;
    int rc = meta_upload_with_parts(svc->deps.meta, id, &scratch, parts, n, err);
    if (rc) {
        *parts = NULL;
        *n = 0;
        return rc;
    }
    meta_upload_clear(&scratch);
    *chunks = calloc((size_t)*n + 1, sizeof **chunks);
    if (!*chunks) {
        meta_parts_free(*parts, *n);
        *parts = NULL;
        return cu_fail_oom(err);
    }
    for (int i = 0; i < *n; i++)
        (*chunks)[i] = (storage_chunk){
            .index = (*parts)[i].part, .size = (*parts)[i].size, .ref = (*parts)[i].storage_ref};
    return 0;
}

/* Moves a FINALIZING upload into place and records it complete, with the file's digest
 * when it is known (hex, or NULL). A partial upload stays staged (it is a source for a
 * concatenation, not a file). */
static int finalize(upload_service *svc, meta_upload *u, const char *known_sha256, cu_error *err)
{
    assert(u->state == UPLOAD_FINALIZING);
    meta_part *parts = NULL;
    storage_chunk *chunks = NULL;
    int nparts = 0;
    char *final_path = NULL, *body = NULL;
    int rc = 0;
    if (!u->partial) {
        rc = chunks_of(svc, u->id, &parts, &nparts, &chunks, err);
        upload_view view;
        if (rc == 0)
            rc = storage_finish(svc->deps.storage, view_of(u, &view), chunks, nparts, &final_path,
                                err);
        if (rc) /* e.g. a file in the way: give the upload back to the client, intact */
            meta_upload_transition(svc->deps.meta, u->id, UPLOAD_FINALIZING, UPLOAD_PENDING, NULL);
    }
    if (rc == 0) {
        int64_t completed_at = now_s();
        free(u->final_path);
        u->final_path = final_path; /* the record owns it from here */
        final_path = NULL;
        u->completed_at = completed_at;
        free(u->sha256);
        u->sha256 = known_sha256 ? strdup(known_sha256) : NULL;
        if (u->webhook_url && !u->partial) {
            body = webhook_payload(u, upload_storage_name(svc));
            if (!body)
                log_error("upload %s: cannot build its webhook (out of memory); none is sent",
                          u->id);
        }
        rc = meta_upload_complete(svc->deps.meta, u->id, u->final_path ? u->final_path : "",
                                  completed_at, u->sha256, body, err);
        if (rc == CU_ECONFLICT) {
            /* A concurrent completion recorded it first: answer with its record. */
            char id[CU_UUID_LEN + 1];
            memcpy(id, u->id, sizeof id);
            meta_upload_clear(u);
            rc = load_record(svc, id, u, err);
            if (rc == 0 && u->state != UPLOAD_COMPLETE)
                rc = cu_fail(err, CU_ECONFLICT, "Upload is %s", upload_state_name(u->state));
            free(body);
            body = NULL;
        }
    }
    if (rc == 0 && u->state == UPLOAD_FINALIZING) {
        u->state = UPLOAD_COMPLETE;
        char path[FILENAME_MAX_TOTAL * 4 + 512];
        log_info("upload %s complete: %s", u->id,
                 u->partial ? "(partial)" : log_escape(u->final_path, path, sizeof path));
        emit(svc, UPLOAD_EVENT_FINISHED, u, -1, 0, body != NULL);
    }
    free(body);
    free(chunks);
    meta_parts_free(parts, nparts);
    free(final_path);
    return rc;
}

/* Whether every byte of u is stored. */
static int check_all_stored(const meta_upload *u, cu_error *err)
{
    if (u->layout == UPLOAD_LAYOUT_SLOTS) {
        if (u->uploaded_parts < u->total_parts)
            return cu_fail(err, CU_EINVAL, "Not all parts uploaded: %d/%d complete",
                           u->uploaded_parts, u->total_parts);
        return 0;
    }
    if (u->total_size < 0)
        return cu_fail(err, CU_EINVAL, "The upload's length is not declared yet");
    if (u->durable_offset < u->total_size)
        return cu_fail(err, CU_EINVAL, "Not all bytes uploaded: %lld of %lld",
                       (long long)u->durable_offset, (long long)u->total_size);
    return 0;
}

/* With ALLOWED_TYPES, a file's type was judged when its first bytes arrived; an empty file
 * has none and is judged here. A file whose first bytes were stored before ALLOWED_TYPES was
 * set cannot be judged without reading it back, so it fails as a refused one does. */
static int check_content_judged(upload_service *svc, meta_upload *u, cu_error *err)
{
    if (!sniffs(svc) || u->partial || u->detected_type)
        return 0;
    cu_error why;
    char sniffed[FILETYPE_MAX], kind[FILETYPE_MAX];
    if (u->total_size > 0) {
        cu_fail(&why, CU_EMEDIATYPE,
                "The file's first bytes were stored before its type was checked (ALLOWED_TYPES) "
                "and cannot be checked now");
        return fail_upload(svc, u->id, UPLOAD_PENDING, &why, err);
    }
    int rc = sniff_type(svc->deps.sniffer, "", 0, sniffed, err);
    if (rc)
        return rc;
    if (!content_allowed(svc->deps.cfg, sniffed, u->content_type, kind)) {
        kind_refused(svc->deps.cfg, kind, &why);
        return fail_upload(svc, u->id, UPLOAD_PENDING, &why, err);
    }
    if ((rc = meta_upload_set_type(svc->deps.meta, u->id, kind, err)) == 0 &&
        !(u->detected_type = strdup(kind)))
        rc = cu_fail_oom(err);
    return rc;
}

/* One attempt at completing: the state decides what is left to do. known_sha256 is the
 * file's digest when the caller hashed every byte (else NULL). */
static int complete_once(upload_service *svc, const char *id, const char *owner,
                         const char *known_sha256, meta_upload *out, cu_error *err)
{
    int rc = get_visible(svc, id, owner, out, err);
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
    case UPLOAD_DELETED:
        rc = cu_fail(err, CU_EGONE, "The file was deleted");
        goto fail;
    case UPLOAD_FAILED:
        rc = failure_of(out, err);
        goto fail;
    case UPLOAD_FINALIZING:
        /* An earlier completion stopped halfway (crash, storage error): finish it. */
        break;
    case UPLOAD_PENDING:
        if (is_past_expiry(out)) {
            rc = cu_fail(err, CU_EGONE, "Upload expired");
            goto fail;
        }
        if ((rc = check_all_stored(out, err)) != 0)
            goto fail;
        if ((rc = check_content_judged(svc, out, err)) != 0)
            goto fail;
        if (out->checksum_sha256 && (rc = verify_whole_file(svc, out, known_sha256, err)) != 0)
            goto fail;
        rc = meta_upload_transition(svc->deps.meta, id, UPLOAD_PENDING, UPLOAD_FINALIZING, err);
        if (rc == CU_ECONFLICT) {
            /* Another process got there first (within this one, callers queue up in
             * upload_complete): answer with whatever it became. */
            meta_upload_clear(out);
            rc = load_record(svc, id, out, err);
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
    /* A declared digest was verified on the way from pending to finalizing. */
    rc = finalize(svc, out, known_sha256 ? known_sha256 : out->checksum_sha256, err);
    if (rc == 0)
        return 0;
fail:
    meta_upload_clear(out);
    return rc;
}

static bool finishing_has(const upload_service *svc, const char *id)
{
    for (size_t i = 0; i < svc->nfinishing; i++)
        if (!strcmp(svc->finishing[i], id))
            return true;
    return false;
}

int upload_complete(upload_service *svc, const char *id, const char *owner, meta_upload *out,
                    cu_error *err)
{
    return complete_with(svc, id, owner, NULL, out, err);
}

static int complete_with(upload_service *svc, const char *id, const char *owner,
                         const char *known_sha256, meta_upload *out, cu_error *err)
{
    /* A caller that finds a completion of the same upload under way waits for it, then looks
     * again: complete (the same answer as the first caller's) or pending again (it failed:
     * this caller tries itself). */
    pthread_mutex_lock(&svc->finish_lock);
    while (finishing_has(svc, id))
        pthread_cond_wait(&svc->finish_done, &svc->finish_lock);
    bool registered = false;
    if (svc->nfinishing == svc->finishing_cap) {
        size_t cap = svc->finishing_cap ? svc->finishing_cap * 2 : 8;
        void *grown = realloc(svc->finishing, cap * sizeof *svc->finishing);
        if (grown) {
            svc->finishing = grown;
            svc->finishing_cap = cap;
        }
    }
    if (svc->nfinishing < svc->finishing_cap) {
        snprintf(svc->finishing[svc->nfinishing++], CU_UUID_LEN + 1, "%s", id);
        registered = true;
    }
    pthread_mutex_unlock(&svc->finish_lock);
    int rc = complete_once(svc, id, owner, known_sha256, out, err);
    if (registered) {
        pthread_mutex_lock(&svc->finish_lock);
        for (size_t i = 0; i < svc->nfinishing; i++) {
            if (!strcmp(svc->finishing[i], id)) {
                memcpy(svc->finishing[i], svc->finishing[--svc->nfinishing], CU_UUID_LEN + 1);
                break;
            }
        }
        pthread_cond_broadcast(&svc->finish_done);
        pthread_mutex_unlock(&svc->finish_lock);
    }
    return rc;
}

/* Removes an ended upload's data and records that it is gone; on failure the record says
 * so and the reaper tries again later. A deleted file leaves storage as a file; anything
 * else as a staging object. */
static void purge(upload_service *svc, meta_upload *u)
{
    upload_view view;
    cu_error err;
    const storage_upload *su = view_of(u, &view);
    int rc = u->state == UPLOAD_DELETED && !u->partial
                 ? storage_remove(svc->deps.storage, su->key, &err)
                 : storage_abort(svc->deps.storage, su, &err);
    if (rc != 0)
        log_warn("upload %s: removing its data failed, will retry: %s", u->id, err.msg);
    else if (meta_upload_mark_purged(svc->deps.meta, u->id, &err) != 0)
        log_warn("upload %s: %s", u->id, err.msg);
}

/* Ends an upload (cancel, expiry, deletion, failure for the reason why): first the record, so
 * no write or completion can start any more, then the data. */
static int end_upload(upload_service *svc, meta_upload *u, upload_state from, upload_state to,
                      const cu_error *why, cu_error *err)
{
    assert((to == UPLOAD_FAILED) == (why != NULL));
    int rc = why ? meta_upload_fail(svc->deps.meta, u->id, from, why->code, why->msg, err)
                 : meta_upload_end(svc->deps.meta, u->id, from, to, err);
    if (rc == 0) {
        u->state = to;
        purge(svc, u);
        emit(svc,
             to == UPLOAD_EXPIRED  ? UPLOAD_EVENT_EXPIRED
             : to == UPLOAD_FAILED ? UPLOAD_EVENT_FAILED
                                   : UPLOAD_EVENT_TERMINATED,
             u, -1, 0, false);
    }
    return rc;
}

int upload_cancel(upload_service *svc, const char *id, const char *owner, cu_error *err)
{
    meta_upload u;
    int rc = get_visible(svc, id, owner, &u, err);
    if (rc)
        return rc;
    if (u.state == UPLOAD_EXPIRED || is_past_expiry(&u))
        rc = cu_fail(err, CU_EGONE, "Upload expired");
    else if (u.state == UPLOAD_CANCELLED)
        rc = cu_fail(err, CU_ECONFLICT, "Upload was already cancelled");
    else if (u.state == UPLOAD_FAILED)
        rc = failure_of(&u, err);
    else if (u.state == UPLOAD_COMPLETE && u.partial) /* a piece never joined: not a file */
        rc = end_upload(svc, &u, UPLOAD_COMPLETE, UPLOAD_CANCELLED, NULL, err);
    else if (u.state == UPLOAD_COMPLETE || u.state == UPLOAD_FINALIZING ||
             u.state == UPLOAD_DELETED)
        rc = cu_fail(err, CU_ECONFLICT, "Upload is already complete");
    else if (u.state != UPLOAD_PENDING)
        rc = cu_fail(err, CU_ECONFLICT, "Upload is %s", upload_state_name(u.state));
    else
        rc = end_upload(svc, &u, UPLOAD_PENDING, UPLOAD_CANCELLED, NULL, err);
    if (rc == CU_ECONFLICT && (u.state == UPLOAD_PENDING || u.partial))
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
            if (end_upload(svc, &due[i], due[i].state, UPLOAD_EXPIRED, NULL, NULL) == 0) {
                log_info("upload %s expired (%d/%d parts, %lld bytes had arrived)", due[i].id,
                         due[i].uploaded_parts, due[i].total_parts,
                         (long long)due[i].durable_offset);
                ended++;
            }
        }
        meta_uploads_free(due, n);
        *expired += ended;
        if (n < 64 || ended == 0)
            return 0;
    }
}

typedef struct {
    upload_service *svc;
    int64_t before;
    int removed;
} sweep_state;

static int sweep_one(void *ctx, const storage_staged *st)
{
    sweep_state *sw = ctx;
    if (st->changed_at > sw->before)
        return 0; /* young: perhaps an init between staging and recording right now */
    meta_upload u;
    cu_error err;
    int rc = load_record(sw->svc, st->id, &u, &err);
    if (rc == 0) {
        meta_upload_clear(&u); /* owned: its record's life takes care of it */
        return 0;
    }
    if (rc != CU_ENOTFOUND)
        return 0; /* the database cannot say: leave it for the next sweep */
    storage_upload su = {.id = st->id,
                         .key = st->key ? st->key : "",
                         .storage_ref = st->storage_ref,
                         .total_size = -1,
                         .part_size = sw->svc->deps.cfg->chunk_size};
    if (storage_abort(sw->svc->deps.storage, &su, &err) != 0) {
        log_warn("sweep: removing staging data of unknown upload %s failed: %s", st->id, err.msg);
        return 0;
    }
    log_info("sweep: removed staging data no upload owns (%s)", st->id);
    sw->removed++;
    return 0;
}

int upload_sweep_orphans(upload_service *svc, int *removed, cu_error *err)
{
    sweep_state sw = {.svc = svc,
                      .before = (int64_t)(util_now() - svc->deps.cfg->orphan_grace_seconds)};
    *removed = 0;
    int rc = storage_list_staged(svc->deps.storage, sweep_one, &sw, err);
    *removed = sw.removed;
    return rc;
}

int upload_prune(upload_service *svc, int *uploads, int *webhooks, cu_error *err)
{
    int64_t before = (int64_t)(util_now() - svc->deps.cfg->retention_seconds);
    int rc = meta_prune(svc->deps.meta, before, uploads, webhooks, err);
    if (rc == 0 && (*uploads || *webhooks))
        log_info("pruned %d ended upload(s) and %d webhook delivery record(s) older than %g hours",
                 *uploads, *webhooks, svc->deps.cfg->retention_seconds / 3600);
    return rc;
}

/* ---- concatenation ---- */

/* The type of a concatenation of parts: its first non-empty piece's first bytes, sniffed when
 * they arrived (no bytes at all are an empty file). A refused first piece fails, and its data
 * is removed. */
static int concat_kind(upload_service *svc, const upload_create_request *req,
                       const meta_upload *parts, int n, char kind[FILETYPE_MAX], cu_error *err)
{
    const cu_config *cfg = svc->deps.cfg;
    cu_error why;
    for (int i = 0; i < n; i++) {
        if (parts[i].total_size == 0)
            continue;
        if (!parts[i].detected_type)
            cu_fail(&why, CU_EMEDIATYPE,
                    "The first bytes of partial upload %s were stored before their type was "
                    "checked (ALLOWED_TYPES) and cannot be checked now",
                    parts[i].id);
        else if (content_allowed(cfg, parts[i].detected_type, req->content_type, kind))
            return 0;
        else
            kind_refused(cfg, kind, &why);
        return fail_upload(svc, parts[i].id, UPLOAD_COMPLETE, &why, err);
    }
    char sniffed[FILETYPE_MAX];
    int rc = sniff_type(svc->deps.sniffer, "", 0, sniffed, err);
    if (rc == 0 && !content_allowed(cfg, sniffed, req->content_type, kind))
        rc = kind_refused(cfg, kind, err);
    return rc;
}

int upload_concat(upload_service *svc, const upload_create_request *req,
                  const char *const *partial_ids, int n, meta_upload *out, cu_error *err)
{
    memset(out, 0, sizeof *out);
    if (n <= 0)
        return cu_fail(err, CU_EINVAL, "A concatenation needs at least one partial upload");
    if (!(upload_storage_caps(svc) & STORAGE_CAP_CONCAT))
        return cu_fail(err, CU_ENOTSUP, "%s storage cannot concatenate uploads",
                       upload_storage_name(svc));
    meta_upload *parts = calloc((size_t)n, sizeof *parts);
    meta_part **rows = calloc((size_t)n, sizeof *rows);
    int *nrows = calloc((size_t)n, sizeof *nrows);
    storage_source *srcs = calloc((size_t)n, sizeof *srcs);
    storage_chunk **chunks = calloc((size_t)n, sizeof *chunks);
    upload_view *views = calloc((size_t)n, sizeof *views);
    size_t ids_len = 1;
    int rc = parts && rows && nrows && srcs && chunks && views ? 0 : cu_fail_oom(err);
    int64_t total = 0;
    int loaded = 0;
    for (int i = 0; rc == 0 && i < n; i++, loaded++) {
        rc = get_visible(svc, partial_ids[i], req->owner, &parts[i], err);
        if (rc == CU_ENOTFOUND)
            cu_fail(err, CU_EINVAL, "Partial upload %s not found", partial_ids[i]);
        if (rc)
            break;
        if (!parts[i].partial)
            rc = cu_fail(err, CU_EINVAL, "Upload %s is not a partial upload", partial_ids[i]);
        else if (parts[i].state != UPLOAD_COMPLETE)
            rc = cu_fail(err, CU_EINVAL, "Partial upload %s is not complete", partial_ids[i]);
        else if (is_past_expiry(&parts[i]))
            rc = cu_fail(err, CU_EINVAL, "Partial upload %s expired", partial_ids[i]);
        if (rc == 0)
            rc = chunks_of(svc, parts[i].id, &rows[i], &nrows[i], &chunks[i], err);
        if (rc == 0) {
            srcs[i] = (storage_source){
                .upload = *view_of(&parts[i], &views[i]), .chunks = chunks[i], .nchunks = nrows[i]};
            total += parts[i].total_size;
            ids_len += strlen(parts[i].id) + 1;
        }
    }
    char *ids = rc == 0 ? calloc(1, ids_len) : NULL;
    if (rc == 0 && !ids)
        rc = cu_fail_oom(err);
    for (int i = 0; ids && i < n; i++) {
        strcat(ids, parts[i].id);
        if (i + 1 < n)
            strcat(ids, " ");
    }
    upload_create_request final = *req;
    final.layout = UPLOAD_LAYOUT_STREAM;
    final.total_size = total;
    final.partial = false;
    final.concat_of = ids;
    char kind[FILETYPE_MAX] = "";
    if (rc == 0 && sniffs(svc) && (rc = check_declared_kind(svc->deps.cfg, &final, err)) == 0)
        rc = concat_kind(svc, &final, parts, n, kind, err);
    if (rc == 0)
        rc = upload_create(svc, &final, out, err);
    bool created = rc == 0;
    if (rc == 0 && kind[0] &&
        (rc = meta_upload_set_type(svc->deps.meta, out->id, kind, err)) == 0 &&
        !(out->detected_type = strdup(kind)))
        rc = cu_fail_oom(err);
    storage_written written = {0};
    if (rc == 0) {
        upload_view view;
        rc = storage_concat(svc->deps.storage, view_of(out, &view), srcs, n, &written, err);
    }
    if (rc == 0 && written.durable != total)
        rc = cu_fail(err, CU_EIO, "Storage joined %lld of %lld bytes", (long long)written.durable,
                     (long long)total);
    if (rc == 0)
        rc = record_stream(svc, out->id, 0, &written, err);
    storage_written_clear(&written);
    if (rc == 0)
        rc =
            meta_upload_transition(svc->deps.meta, out->id, UPLOAD_PENDING, UPLOAD_FINALIZING, err);
    if (rc == 0) {
        out->state = UPLOAD_FINALIZING;
        out->durable_offset = total;
        rc = finalize(svc, out, NULL, err);
    }
    if (rc == 0) {
        /* The partial uploads were only ever pieces of this file: remove them. */
        for (int i = 0; i < n; i++) {
            cu_error e2;
            if (end_upload(svc, &parts[i], UPLOAD_COMPLETE, UPLOAD_DELETED, NULL, &e2) != 0)
                log_warn("upload %s: removing partial upload %s: %s", out->id, parts[i].id, e2.msg);
        }
    } else if (created) {
        cu_error e2;
        upload_cancel(svc, out->id, NULL, &e2); /* the partial uploads stay for a retry */
        meta_upload_clear(out);
    }
    free(ids);
    for (int i = 0; i < loaded; i++) {
        free(chunks ? chunks[i] : NULL);
        meta_parts_free(rows ? rows[i] : NULL, nrows ? nrows[i] : 0);
        meta_upload_clear(&parts[i]);
    }
    free(parts);
    free(rows);
    free(nrows);
    free(srcs);
    free(chunks);
    free(views);
    return rc;
}

/* ---- finished files ---- */

int upload_file_get(upload_service *svc, const char *id, const char *owner, meta_upload *out,
                    cu_error *err)
{
    int rc = get_visible(svc, id, owner, out, err);
    if (rc == 0 && (out->state != UPLOAD_COMPLETE || out->partial)) {
        meta_upload_clear(out);
        rc = cu_fail(err, CU_ENOTFOUND, "File not found");
    }
    return rc;
}

int upload_file_stat(upload_service *svc, const meta_upload *u, storage_file_info *out,
                     cu_error *err)
{
    upload_view view;
    return storage_stat(svc->deps.storage, view_of(u, &view)->key, out, err);
}

int upload_file_open(upload_service *svc, const meta_upload *u, int64_t offset, int64_t length,
                     storage_reader_t **out, cu_error *err)
{
    assert(u->state == UPLOAD_COMPLETE && offset >= 0 && offset + length <= u->total_size);
    upload_view view;
    return storage_read_open(svc->deps.storage, view_of(u, &view)->key, offset, length, out, err);
}

int upload_file_presign(upload_service *svc, const meta_upload *u, int64_t expires_in,
                        const char *content_type, const char *content_disposition, char **url,
                        cu_error *err)
{
    assert(u->state == UPLOAD_COMPLETE);
    upload_view view;
    return storage_presign_get(svc->deps.storage, view_of(u, &view)->key, expires_in, content_type,
                               content_disposition, url, err);
}

int upload_file_delete(upload_service *svc, const char *id, const char *owner, cu_error *err)
{
    if (!(upload_storage_caps(svc) & STORAGE_CAP_REMOVE))
        return cu_fail(err, CU_ENOTSUP, "%s storage cannot remove files", upload_storage_name(svc));
    meta_upload u;
    int rc = upload_file_get(svc, id, owner, &u, err);
    if (rc == 0)
        rc = end_upload(svc, &u, UPLOAD_COMPLETE, UPLOAD_DELETED, NULL, err);
    if (rc == 0)
        log_info("file %s deleted", id);
    meta_upload_clear(&u);
    return rc;
}

int upload_files_list(upload_service *svc, const meta_file_query *q, meta_upload **out, int *n,
                      cu_error *err)
{
    return meta_files_list(svc->deps.meta, q, out, n, err);
}
