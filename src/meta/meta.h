/* meta.h - the metadata store: uploads, their slots and chunks, and the webhook outbox.
 *
 * One interface, several databases (SQLite now; PostgreSQL for scale-out): nothing here is
 * particular to one of them. Callers hold a meta_t and call the meta_* functions; a
 * backend fills in struct meta_ops. Every operation is one transaction at the level of
 * intent ("record this slot if the upload is still pending"), with its state check inside
 * the statement, so concurrent callers (threads now, processes later) cannot interleave
 * halfway. Every function is safe to call from any thread. Functions return 0 or a
 * negative cu_code with a message in e: CU_ENOTFOUND for an unknown id, CU_ECONFLICT when
 * the state check failed, CU_EBUSY when the database stayed locked, CU_EIO otherwise. */
#ifndef CU_META_H
#define CU_META_H

#include "base/error.h"
#include "base/util.h"

#include <stdbool.h>
#include <stdint.h>

typedef enum {
    UPLOAD_PENDING,    /* accepting data */
    UPLOAD_FINALIZING, /* completion is moving the data into place */
    UPLOAD_COMPLETE,
    UPLOAD_FAILED,
    UPLOAD_CANCELLED,
    UPLOAD_EXPIRED,
    UPLOAD_DELETED /* was complete; the file has been deleted */
} upload_state;

const char *upload_state_name(upload_state s);
int upload_state_parse(const char *name); /* -1 when unknown */

/* How an upload's bytes arrive. */
typedef enum {
    UPLOAD_LAYOUT_SLOTS, /* fixed slots at n × chunk_size, in any order (seed, flow.js) */
    UPLOAD_LAYOUT_STREAM /* one contiguous range growing from 0 (tus) */
} upload_layout;

typedef struct {
    char id[CU_UUID_LEN + 1];
    char protocol[16];  /* "seed", "tus", "flow", "single" */
    char *owner;        /* who created it (a principal), or NULL */
    char *client_key;   /* an identifier the client chose (flow.js), or NULL */
    char *filename;     /* as given, may carry a directory */
    char *content_type; /* as declared, or NULL */
    char *metadata;     /* the protocol's own metadata, stored as given, or NULL */
    int64_t total_size; /* -1 while the client has not declared it */
    int64_t chunk_size; /* slots: the slot size; stream: the storage's part size */
    upload_layout layout;
    int total_parts;        /* slots: how many; stream: 0 */
    int uploaded_parts;     /* slots stored */
    int64_t durable_offset; /* stream: bytes stored contiguously from 0 */
    upload_state state;
    char *checksum_sha256; /* expected whole-file digest (hex) or NULL */
    char *webhook_url;     /* or NULL */
    char *storage_ref;     /* backend's handle for the staging object, or NULL */
    char *final_path;      /* once complete */
    char *sha256;          /* once complete: the file's SHA-256 (hex) when known (it matched
                              checksum_sha256, or arrived in one write), else NULL */
    char *concat_of;       /* a final concatenation: the partial uploads' ids, space-separated */
    bool partial;          /* a piece of a concatenation, never a file of its own */
    int64_t created_at, expires_at, completed_at;
    char *detected_type;  /* what its first bytes are (libmagic, an essence), or NULL when they
                             were not sniffed */
    int failure_code;     /* FAILED: why, as a cu_code (CU_EMEDIATYPE: a refused type) */
    char *failure_reason; /* FAILED: why, for the client */
    int64_t completed_seq; /* once complete: its place in the order of completions (1, 2, ...) */
} meta_upload;

typedef enum { PART_PENDING, PART_UPLOADED } part_state;

/* A slot of a slots upload, or a storage chunk of a stream upload. */
typedef struct {
    int part;
    part_state state;
    int64_t size;
    char checksum_sha256[CU_SHA256_HEX_LEN + 1]; /* "" while pending, or unknown */
    char token_sha256[CU_SHA256_HEX_LEN + 1];    /* a credential's digest the protocol stored
                                                    with the slot (the seed's token), or "" */
    char *storage_ref; /* backend's handle for the stored piece (e.g. an S3 ETag) or NULL */
} meta_part;

/* A webhook delivery in the outbox. */
typedef struct {
    int64_t id;
    char upload_id[CU_UUID_LEN + 1];
    char *url;
    char *body;
    int attempts;
    int64_t next_attempt_at; /* when it falls due */
    int64_t claimed_until;   /* 0, or the lease of the claim that holds it (meta_webhook_claim) */
} meta_webhook;

/* Which finished files a listing wants. */
typedef struct {
    const char *owner;  /* only this owner's, or NULL for all */
    const char *prefix; /* only names that start with it ("a/b/": the directory a/b and
                           those below it), or NULL */
    int limit;          /* at most this many */
    int64_t after_seq;  /* the cursor: files completed before the one numbered after_seq
                           (meta_upload.completed_seq); 0: from the newest */
} meta_file_query;

/* What one owner may hold open at once (0: no limit), checked in the transaction that
 * would go past it. */
typedef struct {
    int max_open;         /* pending or finalizing uploads */
    int64_t max_reserved; /* bytes those uploads declared */
} meta_limits;

/* Whether an owner holding `open` uploads and `reserved` bytes may open `adding` more and
 * reserve `more` bytes under limits: 0, CU_ELIMIT or CU_ENOSPC with the figures in e. Backends
 * call it inside their transaction; callers may call it ahead, to refuse early. */
int meta_limits_check(const meta_limits *limits, int open, int64_t reserved, int adding,
                      int64_t more, cu_error *e);

typedef struct meta meta_t;

struct meta_ops {
    int (*upload_create)(meta_t *, const meta_upload *, const meta_part *parts, int n,
                         const meta_limits *limits, cu_error *);
    int (*upload_get)(meta_t *, const char *id, meta_upload *out, cu_error *);
    int (*upload_find)(meta_t *, const char *owner, const char *protocol, const char *client_key,
                       meta_upload *out, cu_error *);
    int (*upload_with_parts)(meta_t *, const char *id, meta_upload *out, meta_part **parts, int *n,
                             cu_error *);
    int (*part_get)(meta_t *, const char *id, int part, meta_part *out, cu_error *);
    int (*part_store)(meta_t *, const char *id, int part, int64_t size, const char *checksum,
                      const char *storage_ref, int *uploaded, cu_error *);
    int (*stream_advance)(meta_t *, const char *id, int64_t from, int64_t to,
                          const meta_part *chunks, int n, cu_error *);
    int (*declare_length)(meta_t *, const char *id, int64_t total_size, const meta_limits *limits,
                          cu_error *);
    int (*owner_usage)(meta_t *, const char *owner, int *open, int64_t *reserved, cu_error *);
    int (*prune)(meta_t *, int64_t ended_before, int *uploads, int *webhooks, cu_error *);
    int (*check)(meta_t *, cu_error *);
    int (*upload_transition)(meta_t *, const char *id, upload_state from, upload_state to,
                             cu_error *);
    int (*upload_complete)(meta_t *, const char *id, const char *final_path, int64_t completed_at,
                           const char *sha256, const char *webhook_body, cu_error *);
    int (*upload_end)(meta_t *, const char *id, upload_state from, upload_state to, cu_error *);
    int (*upload_fail)(meta_t *, const char *id, upload_state from, int code, const char *reason,
                       cu_error *);
    int (*upload_set_type)(meta_t *, const char *id, const char *detected_type, cu_error *);
    int (*uploads_due)(meta_t *, int64_t now, int limit, meta_upload **out, int *n, cu_error *);
    int (*uploads_to_purge)(meta_t *, int limit, meta_upload **out, int *n, cu_error *);
    int (*upload_mark_purged)(meta_t *, const char *id, cu_error *);
    int (*files_list)(meta_t *, const meta_file_query *q, meta_upload **out, int *n, cu_error *);
    int (*webhooks_due)(meta_t *, int64_t now, const meta_webhook *after, int limit,
                        meta_webhook **out, int *n, cu_error *);
    int (*webhook_next_due)(meta_t *, int64_t after, int64_t *when, cu_error *);
    int (*webhook_claim)(meta_t *, int64_t id, int64_t now, int64_t lease_until, int *attempts,
                         cu_error *);
    int (*webhook_release)(meta_t *, int64_t id, int64_t lease_until, cu_error *);
    int (*webhook_result)(meta_t *, int64_t id, int64_t lease_until, bool delivered,
                          int64_t next_attempt_at, bool give_up, const char *error, cu_error *);
    void (*close)(meta_t *);
};

struct meta {
    const struct meta_ops *ops;
};

/* Opens (creating if needed) the SQLite database at path, bringing an older schema up to
 * date. fsync: commits reach the disk before they return rather than at checkpoints. */
int meta_sqlite_open(const char *path, bool fsync, meta_t **out, cu_error *err);
/* The schema version the SQLite backend writes (its newest migration). */
int meta_sqlite_schema_version(void);

/* Creates an upload and its slots (n of them, may be 0) in one transaction; CU_ECONFLICT
 * when the id, or a live upload of the same owner, protocol and client key, exists;
 * CU_ELIMIT when the owner has limits->max_open uploads open, CU_ENOSPC when the new one's
 * size would take the owner past limits->max_reserved (limits may be NULL). */
int meta_upload_create(meta_t *m, const meta_upload *u, const meta_part *parts, int n,
                       const meta_limits *limits, cu_error *e);
/* Loads one upload (CU_ENOTFOUND when unknown). Release with meta_upload_clear. */
int meta_upload_get(meta_t *m, const char *id, meta_upload *out, cu_error *e);
/* The live (pending or finalizing) upload of owner with this protocol and client key. */
int meta_upload_find(meta_t *m, const char *owner, const char *protocol, const char *client_key,
                     meta_upload *out, cu_error *e);
/* An upload and all its slots or chunks, in order, read at one instant (free the parts with
 * meta_parts_free). */
int meta_upload_with_parts(meta_t *m, const char *id, meta_upload *out, meta_part **parts, int *n,
                           cu_error *e);
int meta_part_get(meta_t *m, const char *id, int part, meta_part *out, cu_error *e);
/* Marks a pending slot of a pending upload stored, in one transaction; *uploaded gets the
 * upload's count of stored slots. CU_ECONFLICT when the slot or the upload is not pending. */
int meta_part_store(meta_t *m, const char *id, int part, int64_t size, const char *checksum,
                    const char *storage_ref, int *uploaded, cu_error *e);
/* Moves a pending stream upload's durable offset from `from` to `to` and records the chunks
 * storage completed on the way (replacing ones of the same number), in one transaction;
 * CU_ECONFLICT when the upload is not pending at `from`. */
int meta_stream_advance(meta_t *m, const char *id, int64_t from, int64_t to,
                        const meta_part *chunks, int n, cu_error *e);
/* Sets the size of a pending upload created without one; CU_ECONFLICT when it has one,
 * CU_ENOSPC when it would take its owner past limits->max_reserved. */
int meta_declare_length(meta_t *m, const char *id, int64_t total_size, const meta_limits *limits,
                        cu_error *e);
/* How many uploads owner has open (pending or finalizing) and how many bytes they declared. */
int meta_owner_usage(meta_t *m, const char *owner, int *open, int64_t *reserved, cu_error *e);
/* Forgets uploads that ended (failed, cancelled, expired, deleted: their data removed) before
 * ended_before, and webhook deliveries done or given up before it; keeps the store small. */
int meta_prune(meta_t *m, int64_t ended_before, int *uploads, int *webhooks, cu_error *e);
/* Whether the store can be read and written now (CU_EBUSY, CU_EIO otherwise). */
int meta_check(meta_t *m, cu_error *e);
/* Moves an upload from state `from` to `to`; CU_ECONFLICT when it is not in `from`. */
int meta_upload_transition(meta_t *m, const char *id, upload_state from, upload_state to,
                           cu_error *e);
/* FINALIZING -> COMPLETE with its final path and the file's SHA-256 (hex, or NULL when
 * unknown), numbered after every completion before it (completed_seq); queues webhook_body (when
 * not NULL) for delivery in the same transaction. */
int meta_upload_complete(meta_t *m, const char *id, const char *final_path, int64_t completed_at,
                         const char *sha256, const char *webhook_body, cu_error *e);
/* Ends an upload (from -> CANCELLED, EXPIRED or DELETED): forgets its slots and tokens, keeps
 * the upload row so that later requests learn what happened, and marks its data as still
 * to be removed. */
int meta_upload_end(meta_t *m, const char *id, upload_state from, upload_state to, cu_error *e);
/* Ends an upload as FAILED (from `from`), as meta_upload_end does, keeping why: code (a
 * cu_code) and reason, which later requests about it are answered with. */
int meta_upload_fail(meta_t *m, const char *id, upload_state from, int code, const char *reason,
                     cu_error *e);
/* Records what a pending upload's first bytes are (detected_type); CU_ECONFLICT when it is not
 * pending. */
int meta_upload_set_type(meta_t *m, const char *id, const char *detected_type, cu_error *e);
/* Pending uploads, and complete partial uploads no concatenation took, whose expires_at <= now
 * (at most limit). Free with meta_uploads_free. */
int meta_uploads_due(meta_t *m, int64_t now, int limit, meta_upload **out, int *n, cu_error *e);
/* Ended uploads (failed, cancelled, expired, deleted) whose data has not been removed yet: removal
 * failed or was cut short, and is to be tried again. Free with meta_uploads_free. */
int meta_uploads_to_purge(meta_t *m, int limit, meta_upload **out, int *n, cu_error *e);
/* Records that an ended upload's data is gone. */
int meta_upload_mark_purged(meta_t *m, const char *id, cu_error *e);
/* Completed files (never partial uploads), the last completed first (by completed_seq). */
int meta_files_list(meta_t *m, const meta_file_query *q, meta_upload **out, int *n, cu_error *e);
/* Webhook deliveries due at now and not held by a live claim (at most limit), in order of
 * (next_attempt_at, id), starting after the row `after` (NULL: from the first; only its
 * next_attempt_at and id are read), so a caller can page through all of them. Free with
 * meta_webhooks_free. */
int meta_webhooks_due(meta_t *m, int64_t now, const meta_webhook *after, int limit,
                      meta_webhook **out, int *n, cu_error *e);
/* The earliest time later than `after` at which an undelivered webhook falls due (a claimed
 * one falls due again when its lease runs out); CU_ENOTFOUND when none will. */
int meta_webhook_next_due(meta_t *m, int64_t after, int64_t *when, cu_error *e);
/* Claims delivery id for one attempt until lease_until (> now), if it is due at now,
 * undelivered and held by no live claim: no other worker or process takes it meanwhile,
 * and if its holder dies it falls due again when the lease runs out. *attempts gets its
 * tries so far. CU_ECONFLICT when it cannot be claimed. lease_until names the claim in
 * meta_webhook_release and meta_webhook_result: a later claim of a delivery always has a
 * later lease, so a holder whose lease was taken over is told so (CU_ECONFLICT). */
int meta_webhook_claim(meta_t *m, int64_t id, int64_t now, int64_t lease_until, int *attempts,
                       cu_error *e);
/* Gives a claim back without counting a try (an attempt cut short by shutdown): the
 * delivery is due again at once, at its next_attempt_at. */
int meta_webhook_release(meta_t *m, int64_t id, int64_t lease_until, cu_error *e);
/* Records the claimed attempt's outcome and ends the claim: delivered, or due again at
 * next_attempt_at, or given up. CU_ECONFLICT when the claim is no longer held. */
int meta_webhook_result(meta_t *m, int64_t id, int64_t lease_until, bool delivered,
                        int64_t next_attempt_at, bool give_up, const char *error, cu_error *e);
void meta_close(meta_t *m);

void meta_upload_clear(meta_upload *u);
void meta_uploads_free(meta_upload *u, int n);
void meta_parts_free(meta_part *p, int n);
void meta_webhooks_free(meta_webhook *w, int n);

#endif
