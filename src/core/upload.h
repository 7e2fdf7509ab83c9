/* upload.h - the upload lifecycle, independent of protocol and of storage.
 *
 *   init -> parts (any order, in parallel) -> complete          (pending -> finalizing -> complete)
 *        \-> cancel / expiry                                     (pending -> cancelled / expired)
 *
 * The service owns the rules: sizes, tokens, which part may be written when, and that one
 * part is written by one request at a time. It talks to the metadata store and the blob
 * store only through their interfaces. All functions are thread-safe. */
#ifndef CU_UPLOAD_H
#define CU_UPLOAD_H

#include "base/config.h"
#include "base/error.h"
#include "meta/meta.h"
#include "storage/storage.h"

typedef struct upload_service upload_service;

typedef struct {
    const cu_config *cfg;
    meta_t *meta;
    storage_t *storage;
    /* Called after an upload completes with a webhook queued (wakes the deliverer). */
    void (*on_webhook_queued)(void *ctx);
    void *on_webhook_queued_ctx;
} upload_deps;

upload_service *upload_service_new(const upload_deps *deps);
void upload_service_free(upload_service *svc);
const char *upload_storage_name(const upload_service *svc);

typedef struct {
    const char *filename;
    size_t filename_len;
    int64_t total_size;
    const char *webhook_url;     /* or NULL */
    const char *checksum_sha256; /* or NULL: 64 hex digits */
} upload_init_request;

typedef struct {
    meta_upload upload;
    char **tokens; /* upload.total_parts of them */
} upload_init_result;

int upload_init(upload_service *svc, const upload_init_request *req, upload_init_result *out,
                cu_error *err);
void upload_init_result_clear(upload_init_result *r);

/* The upload and its parts for a status reply. Cancelled and expired uploads are CU_EGONE. */
int upload_status(upload_service *svc, const char *id, meta_upload *out, meta_part **parts,
                  int *nparts, cu_error *err);

/* A part upload in progress: begin (headers only), write (each body piece), then end or
 * abandon. The session holds the part's claim, so a second request for the same part is
 * refused until this one ends. */
typedef struct part_session part_session;

typedef struct {
    const char *upload_id;
    int64_t part_number;
    const char *token;           /* NULL when the request had none */
    int64_t content_length;      /* -1 when not declared (chunked transfer) */
    const unsigned char *digest; /* expected SHA-256 of the part (32 bytes), or NULL */
} part_request;

typedef struct {
    char upload_id[CU_UUID_LEN + 1];
    int part_number;
    char checksum_sha256[CU_SHA256_HEX_LEN + 1];
    int uploaded_parts;
    int total_parts;
} part_result;

int upload_part_begin(upload_service *svc, const part_request *req, part_session **out,
                      cu_error *err);
int upload_part_write(part_session *ps, const void *buf, size_t len, cu_error *err);
/* Verifies size and digest, makes the bytes durable and records the part. Frees ps. */
int upload_part_end(part_session *ps, part_result *out, cu_error *err);
/* Drops a part whose body did not arrive whole; the part stays pending. Frees ps. */
void upload_part_abandon(part_session *ps);

/* Completes an upload (idempotent: a complete upload answers with its record again). */
int upload_complete(upload_service *svc, const char *id, meta_upload *out, cu_error *err);
/* Cancels a pending upload and removes its data. */
int upload_cancel(upload_service *svc, const char *id, cu_error *err);
/* Expires pending uploads past their expiry time (*expired counts them), and retries
 * removing the data of ended uploads whose removal failed before. */
int upload_expire_due(upload_service *svc, int *expired, cu_error *err);

/* Size of part `part` of an upload of total_size bytes in chunk_size parts. */
int64_t upload_part_size(int64_t total_size, int64_t chunk_size, int part);

#endif
