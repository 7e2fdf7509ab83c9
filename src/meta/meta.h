/* meta.h - the metadata store: uploads, their parts, and the webhook outbox.
 *
 * One interface, several databases (SQLite now; PostgreSQL for scale-out). Callers hold a
 * meta_t and call the meta_* functions; a backend fills in struct meta_ops. Every function
 * is safe to call from any thread: the backend serialises what must be serialised.
 * Functions return 0 or a negative cu_code with a message in err. */
#ifndef CU_META_H
#define CU_META_H

#include "base/error.h"
#include "base/util.h"

#include <stdbool.h>
#include <stdint.h>

typedef enum {
    UPLOAD_PENDING,    /* accepting parts */
    UPLOAD_FINALIZING, /* complete is moving the data into place */
    UPLOAD_COMPLETE,
    UPLOAD_FAILED,
    UPLOAD_CANCELLED,
    UPLOAD_EXPIRED
} upload_state;

const char *upload_state_name(upload_state s);
int upload_state_parse(const char *name); /* -1 when unknown */

typedef struct {
    char id[CU_UUID_LEN + 1];
    char protocol[16];  /* "seed" */
    char *filename;     /* as given at init, may carry a directory */
    int64_t total_size; /* -1 while unknown */
    int64_t chunk_size;
    int total_parts;
    int uploaded_parts;
    upload_state state;
    char *checksum_sha256; /* expected whole-file digest (hex) or NULL */
    char *webhook_url;     /* or NULL */
    char *storage_ref;     /* backend's handle for the staging object, or NULL */
    char *final_path;      /* once complete */
    int64_t created_at, expires_at, completed_at;
} meta_upload;

typedef enum { PART_PENDING, PART_UPLOADED } part_state;

typedef struct {
    int part;
    part_state state;
    int64_t size;
    char checksum_sha256[CU_SHA256_HEX_LEN + 1]; /* "" while pending */
    char token_sha256[CU_SHA256_HEX_LEN + 1];
    char *storage_ref; /* backend's handle for the stored part (e.g. an S3 ETag) or NULL */
} meta_part;

typedef struct {
    int64_t id;
    char upload_id[CU_UUID_LEN + 1];
    char *url;
    char *body;
    int attempts;
} meta_webhook;

typedef struct meta meta_t;

struct meta_ops {
    int (*upload_create)(meta_t *, const meta_upload *, const meta_part *parts, int n, cu_error *);
    int (*upload_get)(meta_t *, const char *id, meta_upload *out, cu_error *);
    int (*parts_list)(meta_t *, const char *id, meta_part **out, int *n, cu_error *);
    int (*part_get)(meta_t *, const char *id, int part, meta_part *out, cu_error *);
    int (*part_mark_uploaded)(meta_t *, const char *id, int part, int64_t size,
                              const char *checksum, const char *storage_ref, int *uploaded,
                              cu_error *);
    int (*upload_transition)(meta_t *, const char *id, upload_state from, upload_state to,
                             cu_error *);
    int (*upload_complete)(meta_t *, const char *id, const char *final_path, int64_t completed_at,
                           const char *webhook_body, cu_error *);
    int (*upload_end)(meta_t *, const char *id, upload_state from, upload_state to, cu_error *);
    int (*uploads_due)(meta_t *, int64_t now, int limit, meta_upload **out, int *n, cu_error *);
    int (*uploads_to_purge)(meta_t *, int limit, meta_upload **out, int *n, cu_error *);
    int (*upload_mark_purged)(meta_t *, const char *id, cu_error *);
    int (*webhooks_due)(meta_t *, int64_t now, int limit, meta_webhook **out, int *n, cu_error *);
    int (*webhook_next_due)(meta_t *, int64_t *when, cu_error *);
    int (*webhook_result)(meta_t *, int64_t id, bool delivered, int64_t next_attempt_at,
                          bool give_up, const char *error, cu_error *);
    void (*close)(meta_t *);
};

struct meta {
    const struct meta_ops *ops;
};

/* Opens (creating if needed) the SQLite database at path. fsync: commits reach the disk
 * before they return (synchronous=FULL) rather than at checkpoints. */
int meta_sqlite_open(const char *path, bool fsync, meta_t **out, cu_error *err);

/* Creates an upload and its parts in one transaction. */
int meta_upload_create(meta_t *m, const meta_upload *u, const meta_part *parts, int n, cu_error *e);
/* Loads one upload (CU_ENOTFOUND when unknown). Release with meta_upload_clear. */
int meta_upload_get(meta_t *m, const char *id, meta_upload *out, cu_error *e);
/* All parts of an upload, in order (free with meta_parts_free). */
int meta_parts_list(meta_t *m, const char *id, meta_part **out, int *n, cu_error *e);
int meta_part_get(meta_t *m, const char *id, int part, meta_part *out, cu_error *e);
/* Marks a pending part of a pending upload uploaded, in one transaction; *uploaded gets the
 * upload's count of uploaded parts. CU_ECONFLICT when the part or the upload is not pending. */
int meta_part_mark_uploaded(meta_t *m, const char *id, int part, int64_t size, const char *checksum,
                            const char *storage_ref, int *uploaded, cu_error *e);
/* Moves an upload from state `from` to `to`; CU_ECONFLICT when it is not in `from`. */
int meta_upload_transition(meta_t *m, const char *id, upload_state from, upload_state to,
                           cu_error *e);
/* FINALIZING -> COMPLETE with its final path; queues webhook_body (when not NULL) for
 * delivery in the same transaction. */
int meta_upload_complete(meta_t *m, const char *id, const char *final_path, int64_t completed_at,
                         const char *webhook_body, cu_error *e);
/* Ends an upload that will never complete (from -> CANCELLED or EXPIRED): forgets its parts
 * and tokens, keeps the upload row so that later requests learn what happened. */
int meta_upload_end(meta_t *m, const char *id, upload_state from, upload_state to, cu_error *e);
/* Pending uploads whose expires_at <= now (at most limit). Free with meta_uploads_free. */
int meta_uploads_due(meta_t *m, int64_t now, int limit, meta_upload **out, int *n, cu_error *e);
/* Ended uploads (cancelled or expired) whose data has not been removed yet: removal
 * failed or was cut short, and is to be tried again. Free with meta_uploads_free. */
int meta_uploads_to_purge(meta_t *m, int limit, meta_upload **out, int *n, cu_error *e);
/* Records that an ended upload's data is gone. */
int meta_upload_mark_purged(meta_t *m, const char *id, cu_error *e);
/* Webhook deliveries due at now (at most limit). Free with meta_webhooks_free. */
int meta_webhooks_due(meta_t *m, int64_t now, int limit, meta_webhook **out, int *n, cu_error *e);
/* When the next undelivered webhook is due (CU_ENOTFOUND when none). */
int meta_webhook_next_due(meta_t *m, int64_t *when, cu_error *e);
/* Records one delivery attempt. */
int meta_webhook_result(meta_t *m, int64_t id, bool delivered, int64_t next_attempt_at,
                        bool give_up, const char *error, cu_error *e);
void meta_close(meta_t *m);

void meta_upload_clear(meta_upload *u);
void meta_uploads_free(meta_upload *u, int n);
void meta_parts_free(meta_part *p, int n);
void meta_webhooks_free(meta_webhook *w, int n);

#endif
