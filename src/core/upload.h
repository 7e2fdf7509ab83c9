/* upload.h - the engine: every protocol's uploads as byte ranges to fill.
 *
 *   create -> writes (slots in any order, or appends to a stream) -> complete
 *          \-> cancel / expiry                 (pending -> finalizing -> complete -> deleted)
 *                                              (pending -> cancelled / expired)
 *
 * An upload is a range of total_size bytes (or a size the client declares later), filled
 * either in fixed slots at n × chunk_size (the seed API, flow.js) or as one stream whose
 * durable offset grows (tus). A write is begin (offset and length, checked and claimed) ->
 * data... -> end or abort; the engine tracks what is stored and records it in one
 * transaction with the state check. It knows no protocol and no credential: protocols
 * check their own tokens, then call the engine, which talks to storage and metadata only
 * through their interfaces. Observers hear what happened (created, progress, finished,
 * terminated, expired, failed). All functions are thread-safe.
 *
 * Kinds of file (ALLOWED_EXTENSIONS, ALLOWED_TYPES) are every protocol's rule, so they are
 * checked here: the name's extension and the declared type at creation, and what libmagic
 * finds in the first SNIFF_WINDOW bytes of the write at offset 0 (slot 0, or a stream's first
 * write) as they arrive, before the rest is stored. A file of a refused type is CU_EMEDIATYPE
 * (415): its upload ends as UPLOAD_FAILED, its data is removed, and every later request about
 * it is answered with the same code and the reason. A partial upload's first bytes are only
 * recorded; its concatenation is judged by the first piece's. MAX_FILE_SIZE holds at creation,
 * at a declared length, and as a stream of unknown length grows. */
#ifndef CU_UPLOAD_H
#define CU_UPLOAD_H

#include "base/config.h"
#include "base/error.h"
#include "core/lock.h"
#include "core/sniff.h"
#include "meta/meta.h"
#include "storage/storage.h"

typedef struct upload_service upload_service;

typedef enum {
    UPLOAD_EVENT_CREATED,
    UPLOAD_EVENT_PROGRESS,   /* a slot stored, or a stream's durable offset moved */
    UPLOAD_EVENT_FINISHED,   /* complete: the file is in place */
    UPLOAD_EVENT_TERMINATED, /* cancelled, or a finished file deleted */
    UPLOAD_EVENT_EXPIRED,
    UPLOAD_EVENT_FAILED /* its content was refused: ended, its data removed */
} upload_event_kind;

typedef struct {
    upload_event_kind kind;
    const meta_upload *upload; /* the record after the event */
    int slot;                  /* PROGRESS of a slot: which; else -1 */
    int64_t bytes;             /* PROGRESS: bytes this write stored */
    bool webhook_queued;       /* FINISHED: a webhook delivery was queued with it */
} upload_event;

typedef struct {
    void (*on_event)(void *ctx, const upload_event *ev);
    void *ctx;
} upload_observer;

typedef struct {
    const cu_config *cfg;
    meta_t *meta;
    storage_t *storage;
    upload_locks *locks;      /* NULL: claims in memory */
    content_sniffer *sniffer; /* required when ALLOWED_TYPES is set (and used only then) */
} upload_deps;

upload_service *upload_service_new(const upload_deps *deps);
void upload_service_free(upload_service *svc);
/* Registers an observer (before the service is used; at most 8). Returns 0 or -1. */
int upload_observe(upload_service *svc, const upload_observer *o);
const char *upload_storage_name(const upload_service *svc);
/* The storage backend's capabilities (storage_caps). */
unsigned upload_storage_caps(const upload_service *svc);

/* Whether the service can take requests now: its metadata store can be read and written
 * (CU_EBUSY when another process holds it, CU_EIO when it is unusable). */
int upload_check_ready(upload_service *svc, cu_error *err);

/* ---- creating ---- */

typedef struct {
    const char *id;       /* NULL: the engine makes one (a protocol that signs the id into
                             credentials makes it first, with util_uuid_v4) */
    const char *protocol; /* "seed", "tus", "flow", "single" */
    const char *owner;    /* who creates it, or NULL */
    const char *filename; /* may carry a directory; checked against the filename policy */
    size_t filename_len;
    const char *content_type; /* or NULL */
    const char *metadata;     /* the protocol's own, kept as given, or NULL */
    const char *client_key;   /* an identifier the client chose, or NULL */
    int64_t total_size;       /* -1: declared later (stream layout only) */
    upload_layout layout;
    int64_t slot_size;            /* slots: their size (0: CHUNK_SIZE_MB) */
    bool last_slot_absorbs;       /* slots: the last one also takes the remainder (flow.js: up to
                                     twice the slot size less a byte) */
    const char *webhook_url;      /* or NULL */
    const char *checksum_sha256;  /* whole-file digest to verify at completion, or NULL */
    const char *const *slot_tags; /* one per slot, stored with it (the seed's token digests) */
    bool partial;                 /* a piece of a later concatenation, never a file itself */
    const char *concat_of;        /* set by upload_concat: the partial uploads' ids */
    int64_t expires_at;           /* 0: UPLOAD_TTL_HOURS from now (a protocol that signs the
                                     expiry into credentials fixes it first) */
} upload_create_request;

/* How many slots an upload of total_size bytes has. */
int64_t upload_slot_count(int64_t total_size, int64_t slot_size, bool last_slot_absorbs);
/* The size of slot `slot` of u. */
int64_t upload_slot_size(const meta_upload *u, int slot);

/* Checks a create request as upload_create does, without creating anything (so that a
 * protocol refuses before it spends work on credentials). */
int upload_validate(upload_service *svc, const upload_create_request *req, cu_error *err);
/* Checks a request and creates the upload and its staging object. *out is its record
 * (release with meta_upload_clear). A name or declared type that ALLOWED_EXTENSIONS or
 * ALLOWED_TYPES refuses is CU_EMEDIATYPE; a declared application/octet-stream says nothing
 * (clients send it for "some bytes") and is left to the sniffed type. */
int upload_create(upload_service *svc, const upload_create_request *req, meta_upload *out,
                  cu_error *err);

/* ---- reading ---- */

/* The file's content type: what libmagic found (when ALLOWED_TYPES is set), else what the
 * client declared, else application/octet-stream. */
const char *upload_content_type(const meta_upload *u);

/* An upload in any state (CU_ENOTFOUND when unknown, or when owner is set and differs). */
int upload_get(upload_service *svc, const char *id, const char *owner, meta_upload *out,
               cu_error *err);
/* Why data cannot be written to u now (0 when it can): CU_EGONE for an expired upload,
 * CU_ECONFLICT for a cancelled or complete one. */
int upload_check_writable(const meta_upload *u, cu_error *err);
/* The live upload of owner that a client names by its own key. */
int upload_find(upload_service *svc, const char *owner, const char *protocol,
                const char *client_key, meta_upload *out, cu_error *err);
/* The upload and its slots for a progress report; cancelled and expired ones are CU_EGONE,
 * a deleted file is CU_ENOTFOUND (as if it never was). */
int upload_status(upload_service *svc, const char *id, const char *owner, meta_upload *out,
                  meta_part **parts, int *nparts, cu_error *err);
int upload_slot_get(upload_service *svc, const char *id, int slot, meta_part *out, cu_error *err);

/* ---- writing ---- */

typedef enum {
    UPLOAD_DIGEST_NONE,
    UPLOAD_DIGEST_SHA256,
    UPLOAD_DIGEST_SHA1,
    UPLOAD_DIGEST_MD5
} upload_digest_alg;

typedef struct {
    const char *id;
    const char *owner;            /* NULL: the protocol authorized the write by its own means */
    int slot;                     /* slots: which slot; ignored for a stream */
    int64_t offset;               /* stream: where the client believes the upload stands */
    int64_t length;               /* bytes to come, -1 when unknown (chunked); a slot takes exactly
                                     its size */
    upload_digest_alg digest_alg; /* an expected digest of these bytes, or NONE */
    unsigned char digest[64];
} upload_write_request;

typedef struct upload_write upload_write;

typedef struct {
    meta_upload upload; /* the record after the write (release with meta_upload_clear) */
    int slot;
    int64_t bytes;                               /* stored by this write */
    char checksum_sha256[CU_SHA256_HEX_LEN + 1]; /* of these bytes */
    bool completed;                              /* the write made the upload complete */
} upload_write_result;

/* Checks and claims what the write needs, and opens storage: everything that can be refused
 * is refused here, before any body byte. */
int upload_write_begin(upload_service *svc, const upload_write_request *req, upload_write **out,
                       cu_error *err);
/* Stores the next bytes. CU_EMEDIATYPE when the file's first bytes are of a refused type: the
 * upload has failed and its data is gone (then call upload_write_abort). */
int upload_write_data(upload_write *w, const void *buf, size_t len, cu_error *err);
/* Verifies size and digest, makes the bytes durable and records them; a stream write that
 * fills the upload completes it (and when it brought every byte, from offset 0, its SHA-256 is
 * recorded as the file's: meta_upload.sha256). The length of an upload created without one
 * may be declared while its write runs (upload_declare_length), so that a body of unknown
 * size completes the upload when it ends. Frees w. */
int upload_write_end(upload_write *w, upload_write_result *out, cu_error *err);
/* A write whose body did not arrive whole (client gone). A slot stays pending; a stream
 * keeps every byte that became durable (unless a digest was expected: then none). Frees w. */
void upload_write_abort(upload_write *w);
void upload_write_result_clear(upload_write_result *r);

/* Sets the size of a stream upload created without one. */
int upload_declare_length(upload_service *svc, const char *id, int64_t total_size, cu_error *err);

/* ---- finishing ---- */

/* Completes an upload whose bytes are all stored (idempotent: a complete upload answers
 * with its record again). */
int upload_complete(upload_service *svc, const char *id, const char *owner, meta_upload *out,
                    cu_error *err);
/* Cancels a pending upload, or a complete partial upload no concatenation took, and removes
 * its data. */
int upload_cancel(upload_service *svc, const char *id, const char *owner, cu_error *err);
/* Expires pending uploads past their expiry time, and complete partial uploads no
 * concatenation took by theirs (*expired counts them), and retries removing the data of
 * ended uploads whose removal failed before. */
int upload_expire_due(upload_service *svc, int *expired, cu_error *err);

/* Removes staging objects no upload record owns, older than ORPHAN_GRACE_SECONDS (*removed
 * counts them); CU_ENOTSUP when the backend cannot list them. */
int upload_sweep_orphans(upload_service *svc, int *removed, cu_error *err);
/* Forgets the records of uploads that ended longer than RETENTION_HOURS ago. */
int upload_prune(upload_service *svc, int *uploads, int *webhooks, cu_error *err);

/* Creates an upload from complete partial uploads (req->partial false, layout and sizes
 * ignored: the result is their bytes in order), assembled by storage without passing
 * through this process where it can, and completes it; the partial uploads are removed. */
int upload_concat(upload_service *svc, const upload_create_request *req,
                  const char *const *partial_ids, int n, meta_upload *out, cu_error *err);

/* ---- finished files ---- */

/* A complete file (never a partial upload); CU_ENOTFOUND otherwise. */
int upload_file_get(upload_service *svc, const char *id, const char *owner, meta_upload *out,
                    cu_error *err);
/* Size and modification time of a complete file, from storage. */
int upload_file_stat(upload_service *svc, const meta_upload *u, storage_file_info *out,
                     cu_error *err);
/* A reader of length bytes at offset of a complete file. */
int upload_file_open(upload_service *svc, const meta_upload *u, int64_t offset, int64_t length,
                     storage_reader_t **out, cu_error *err);
/* A URL that GETs a complete file (any range of it) straight from storage for
 * expires_in seconds, answered with content_type and content_disposition (may be NULL);
 * CU_ENOTSUP when the backend hands out none (STORAGE_CAP_PRESIGN). Free *url. */
int upload_file_presign(upload_service *svc, const meta_upload *u, int64_t expires_in,
                        const char *content_type, const char *content_disposition, char **url,
                        cu_error *err);
/* Deletes a complete file: its record says so at once, the bytes leave storage. */
int upload_file_delete(upload_service *svc, const char *id, const char *owner, cu_error *err);
/* Complete files, newest first (free with meta_uploads_free). */
int upload_files_list(upload_service *svc, const meta_file_query *q, meta_upload **out, int *n,
                      cu_error *err);

#endif
