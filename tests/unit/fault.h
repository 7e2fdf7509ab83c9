/* fault.h - a storage backend and a metadata store that fail on purpose.
 *
 * Each wraps a real one (local disk, SQLite) and forwards every call, except that the Nth
 * call counted by a shared fault_ctl fails with CU_EIO (calls that cannot fail, such as
 * aborts and frees, are forwarded and not counted). Running an operation once to count its
 * calls, then again failing at each of them in turn, drives every half-way failure through
 * the engine; the real backends underneath show what state each one left behind. */
#ifndef CU_TEST_FAULT_H
#define CU_TEST_FAULT_H

#include "meta/meta.h"
#include "storage/storage.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    int calls;           /* counted calls so far */
    int fail_at;         /* fail the call with this count (1-based); 0: never */
    char failed[64];     /* the name of the call that was failed, "" when none */
    int finish_delay_ms; /* storage finish sleeps this long first (widens race windows) */
    int fences;          /* writers fenced (storage_writer_fence) */
} fault_ctl;

/* Counts one call named op; true when it is the one to fail. */
static inline bool fault_hit(fault_ctl *c, const char *op)
{
    c->calls++;
    if (c->fail_at && c->calls == c->fail_at) {
        snprintf(c->failed, sizeof c->failed, "%s", op);
        return true;
    }
    return false;
}

#define FAULT(ctl, op, e)                                                                          \
    do {                                                                                           \
        if (fault_hit((ctl), (op)))                                                                \
            return cu_fail((e), CU_EIO, "injected failure in %s", (op));                           \
    } while (0)

/* A failed call leaves its out-parameters as garbage (no store promises anything else), so
 * a caller that reads or frees them after a failure crashes here rather than by luck. */
#define FAULT_OUT(ctl, op, e, out, size)                                                           \
    do {                                                                                           \
        if (fault_hit((ctl), (op))) {                                                              \
            memset((out), 0xA5, (size));                                                           \
            return cu_fail((e), CU_EIO, "injected failure in %s", (op));                           \
        }                                                                                          \
    } while (0)

/* ---- storage ---- */

typedef struct {
    storage_t base;
    storage_t *inner;
    fault_ctl *ctl;
} fault_storage;

typedef struct {
    struct storage_writer base;
    storage_writer_t *inner;
    fault_ctl *ctl;
} fault_writer;

static const struct storage_writer_ops fault_writer_ops;

static inline int fw_wrap(fault_storage *s, storage_writer_t *inner, storage_writer_t **out)
{
    fault_writer *w = calloc(1, sizeof *w);
    w->base.ops = &fault_writer_ops;
    w->inner = inner;
    w->ctl = s->ctl;
    *out = &w->base;
    return 0;
}

static inline int fw_write(storage_writer_t *base, const void *buf, size_t len, cu_error *e)
{
    fault_writer *w = (fault_writer *)base;
    FAULT(w->ctl, "writer_write", e);
    return storage_writer_write(w->inner, buf, len, e);
}

static inline int fw_finish(storage_writer_t *base, const unsigned char *sha, storage_written *out,
                            cu_error *e)
{
    fault_writer *w = (fault_writer *)base;
    storage_writer_t *inner = w->inner;
    fault_ctl *ctl = w->ctl;
    free(w);
    if (fault_hit(ctl, "writer_finish")) {
        storage_writer_abort(inner);
        return cu_fail(e, CU_EIO, "injected failure in writer_finish");
    }
    return storage_writer_finish(inner, sha, out, e);
}

static inline void fw_abort(storage_writer_t *base)
{
    fault_writer *w = (fault_writer *)base;
    storage_writer_abort(w->inner);
    free(w);
}

static inline void fw_fence(storage_writer_t *base)
{
    fault_writer *w = (fault_writer *)base;
    w->ctl->fences++;
    storage_writer_fence(w->inner);
}

static const struct storage_writer_ops fault_writer_ops = {
    .write = fw_write, .finish = fw_finish, .abort = fw_abort, .fence = fw_fence};

static inline int fs_stage_create(storage_t *base, const storage_upload *u, char **ref, cu_error *e)
{
    fault_storage *s = (fault_storage *)base;
    FAULT(s->ctl, "stage_create", e);
    return storage_stage_create(s->inner, u, ref, e);
}

static inline int fs_writer_open(storage_t *base, const storage_upload *u, int64_t off, int64_t len,
                                 storage_writer_t **out, cu_error *e)
{
    fault_storage *s = (fault_storage *)base;
    FAULT(s->ctl, "writer_open", e);
    storage_writer_t *inner;
    int rc = storage_writer_open(s->inner, u, off, len, &inner, e);
    return rc ? rc : fw_wrap(s, inner, out);
}

static inline int fs_finish(storage_t *base, const storage_upload *u, const storage_chunk *c, int n,
                            char **final_path, cu_error *e)
{
    fault_storage *s = (fault_storage *)base;
    FAULT(s->ctl, "finish", e);
    if (s->ctl->finish_delay_ms)
        usleep((useconds_t)s->ctl->finish_delay_ms * 1000);
    return storage_finish(s->inner, u, c, n, final_path, e);
}

static inline int fs_abort(storage_t *base, const storage_upload *u, cu_error *e)
{
    fault_storage *s = (fault_storage *)base;
    FAULT(s->ctl, "abort", e);
    return storage_abort(s->inner, u, e);
}

static inline void fs_destroy(storage_t *base)
{
    fault_storage *s = (fault_storage *)base;
    storage_destroy(s->inner);
    free(s);
}

static inline int fs_append_open(storage_t *base, const storage_upload *u, int64_t off,
                                 storage_writer_t **out, cu_error *e)
{
    fault_storage *s = (fault_storage *)base;
    FAULT(s->ctl, "append_open", e);
    storage_writer_t *inner;
    int rc = storage_append_open(s->inner, u, off, &inner, e);
    return rc ? rc : fw_wrap(s, inner, out);
}

static inline int fs_sha256(storage_t *base, const storage_upload *u, unsigned char out[32],
                            cu_error *e)
{
    fault_storage *s = (fault_storage *)base;
    FAULT(s->ctl, "stage_sha256", e);
    return storage_stage_sha256(s->inner, u, out, e);
}

static inline int fs_remove(storage_t *base, const char *key, cu_error *e)
{
    fault_storage *s = (fault_storage *)base;
    FAULT(s->ctl, "remove", e);
    return storage_remove(s->inner, key, e);
}

static inline int fs_declare_length(storage_t *base, const storage_upload *u, int64_t total,
                                    cu_error *e)
{
    fault_storage *s = (fault_storage *)base;
    FAULT(s->ctl, "declare_length", e);
    return storage_declare_length(s->inner, u, total, e);
}

static inline int fs_stat(storage_t *base, const char *key, storage_file_info *out, cu_error *e)
{
    fault_storage *s = (fault_storage *)base;
    FAULT(s->ctl, "stat", e);
    return storage_stat(s->inner, key, out, e);
}

static inline int fs_read_open(storage_t *base, const char *key, int64_t off, int64_t len,
                               storage_reader_t **out, cu_error *e)
{
    fault_storage *s = (fault_storage *)base;
    FAULT(s->ctl, "read_open", e);
    return storage_read_open(s->inner, key, off, len, out, e);
}

static inline int fs_concat(storage_t *base, const storage_upload *dst, const storage_source *src,
                            int n, storage_written *out, cu_error *e)
{
    fault_storage *s = (fault_storage *)base;
    FAULT(s->ctl, "concat", e);
    return storage_concat(s->inner, dst, src, n, out, e);
}

static const struct storage_read_ops fault_read_ops = {.stat = fs_stat, .open = fs_read_open};
static const struct storage_concat_ops fault_concat_ops = {.concat = fs_concat};

static const struct storage_ops fault_storage_ops = {.stage_create = fs_stage_create,
                                                     .writer_open = fs_writer_open,
                                                     .finish = fs_finish,
                                                     .abort = fs_abort,
                                                     .destroy = fs_destroy};
static const struct storage_append_ops fault_append_ops = {.open = fs_append_open};
static const struct storage_stage_read_ops fault_stage_read_ops = {.sha256 = fs_sha256};
static const struct storage_remove_ops fault_remove_ops = {.remove = fs_remove};
static const struct storage_defer_ops fault_defer_ops = {.declare_length = fs_declare_length};

static inline int fs_available(storage_t *base, int64_t *bytes, cu_error *e)
{
    fault_storage *s = (fault_storage *)base;
    FAULT(s->ctl, "available", e);
    return storage_available(s->inner, bytes, e);
}

static const struct storage_space_ops fault_space_ops = {.available = fs_available};

/* Wraps inner (owned from now on), with the capabilities it has. */
static inline storage_t *fault_storage_wrap(storage_t *inner, fault_ctl *ctl)
{
    fault_storage *s = calloc(1, sizeof *s);
    s->base = *inner;
    s->base.ops = &fault_storage_ops;
    s->base.append = inner->append ? &fault_append_ops : NULL;
    s->base.stage_read = inner->stage_read ? &fault_stage_read_ops : NULL;
    s->base.remove = inner->remove ? &fault_remove_ops : NULL;
    s->base.defer = inner->defer ? &fault_defer_ops : NULL;
    s->base.space = inner->space ? &fault_space_ops : NULL;
    s->base.read = inner->read ? &fault_read_ops : NULL;
    s->base.concat = inner->concat ? &fault_concat_ops : NULL;
    s->base.presign = NULL; /* not wrapped: the backend's own would get the wrapper */
    s->inner = inner;
    s->ctl = ctl;
    return &s->base;
}

/* ---- metadata ---- */

typedef struct {
    meta_t base;
    meta_t *inner;
    fault_ctl *ctl;
} fault_meta;

#define FM(base) ((fault_meta *)(base))

static inline int fm_upload_create(meta_t *b, const meta_upload *u, const meta_part *p, int n,
                                   const meta_limits *l, cu_error *e)
{
    FAULT(FM(b)->ctl, "meta_upload_create", e);
    return meta_upload_create(FM(b)->inner, u, p, n, l, e);
}
static inline int fm_upload_get(meta_t *b, const char *id, meta_upload *out, cu_error *e)
{
    FAULT_OUT(FM(b)->ctl, "meta_upload_get", e, out, sizeof *out);
    return meta_upload_get(FM(b)->inner, id, out, e);
}
static inline int fm_upload_find(meta_t *b, const char *o, const char *p, const char *k,
                                 meta_upload *out, cu_error *e)
{
    FAULT_OUT(FM(b)->ctl, "meta_upload_find", e, out, sizeof *out);
    return meta_upload_find(FM(b)->inner, o, p, k, out, e);
}
static inline int fm_with_parts(meta_t *b, const char *id, meta_upload *out, meta_part **p, int *n,
                                cu_error *e)
{
    if (fault_hit(FM(b)->ctl, "meta_upload_with_parts")) {
        memset(out, 0xA5, sizeof *out);
        memset(p, 0xA5, sizeof *p);
        memset(n, 0xA5, sizeof *n);
        return cu_fail(e, CU_EIO, "injected failure in meta_upload_with_parts");
    }
    return meta_upload_with_parts(FM(b)->inner, id, out, p, n, e);
}
static inline int fm_part_get(meta_t *b, const char *id, int part, meta_part *out, cu_error *e)
{
    FAULT_OUT(FM(b)->ctl, "meta_part_get", e, out, sizeof *out);
    return meta_part_get(FM(b)->inner, id, part, out, e);
}
static inline int fm_part_store(meta_t *b, const char *id, int part, int64_t size, const char *sum,
                                const char *ref, int *up, cu_error *e)
{
    FAULT(FM(b)->ctl, "meta_part_store", e);
    return meta_part_store(FM(b)->inner, id, part, size, sum, ref, up, e);
}
static inline int fm_stream_advance(meta_t *b, const char *id, int64_t from, int64_t to,
                                    const meta_part *c, int n, cu_error *e)
{
    FAULT(FM(b)->ctl, "meta_stream_advance", e);
    return meta_stream_advance(FM(b)->inner, id, from, to, c, n, e);
}
static inline int fm_declare_length(meta_t *b, const char *id, int64_t total, const meta_limits *l,
                                    cu_error *e)
{
    FAULT(FM(b)->ctl, "meta_declare_length", e);
    return meta_declare_length(FM(b)->inner, id, total, l, e);
}
static inline int fm_owner_usage(meta_t *b, const char *owner, int *open, int64_t *reserved,
                                 cu_error *e)
{
    FAULT(FM(b)->ctl, "meta_owner_usage", e);
    return meta_owner_usage(FM(b)->inner, owner, open, reserved, e);
}
static inline int fm_prune(meta_t *b, int64_t before, int *u, int *w, cu_error *e)
{
    FAULT(FM(b)->ctl, "meta_prune", e);
    return meta_prune(FM(b)->inner, before, u, w, e);
}
static inline int fm_check(meta_t *b, cu_error *e)
{
    return meta_check(FM(b)->inner, e);
}
static inline int fm_transition(meta_t *b, const char *id, upload_state from, upload_state to,
                                cu_error *e)
{
    FAULT(FM(b)->ctl, "meta_upload_transition", e);
    return meta_upload_transition(FM(b)->inner, id, from, to, e);
}
static inline int fm_complete(meta_t *b, const char *id, const char *fp, int64_t at,
                              const char *sha256, const char *body, cu_error *e)
{
    FAULT(FM(b)->ctl, "meta_upload_complete", e);
    return meta_upload_complete(FM(b)->inner, id, fp, at, sha256, body, e);
}
static inline int fm_end(meta_t *b, const char *id, upload_state from, upload_state to, cu_error *e)
{
    FAULT(FM(b)->ctl, "meta_upload_end", e);
    return meta_upload_end(FM(b)->inner, id, from, to, e);
}
static inline int fm_fail(meta_t *b, const char *id, upload_state from, int code,
                          const char *reason, cu_error *e)
{
    FAULT(FM(b)->ctl, "meta_upload_fail", e);
    return meta_upload_fail(FM(b)->inner, id, from, code, reason, e);
}
static inline int fm_set_type(meta_t *b, const char *id, const char *type, cu_error *e)
{
    FAULT(FM(b)->ctl, "meta_upload_set_type", e);
    return meta_upload_set_type(FM(b)->inner, id, type, e);
}
static inline int fm_due(meta_t *b, int64_t now, int limit, meta_upload **out, int *n, cu_error *e)
{
    *out = NULL;
    *n = 0;
    FAULT(FM(b)->ctl, "meta_uploads_due", e);
    return meta_uploads_due(FM(b)->inner, now, limit, out, n, e);
}
static inline int fm_to_purge(meta_t *b, int limit, meta_upload **out, int *n, cu_error *e)
{
    *out = NULL;
    *n = 0;
    FAULT(FM(b)->ctl, "meta_uploads_to_purge", e);
    return meta_uploads_to_purge(FM(b)->inner, limit, out, n, e);
}
static inline int fm_mark_purged(meta_t *b, const char *id, cu_error *e)
{
    FAULT(FM(b)->ctl, "meta_upload_mark_purged", e);
    return meta_upload_mark_purged(FM(b)->inner, id, e);
}
static inline int fm_files(meta_t *b, const meta_file_query *q, meta_upload **out, int *n,
                           cu_error *e)
{
    FAULT(FM(b)->ctl, "meta_files_list", e);
    return meta_files_list(FM(b)->inner, q, out, n, e);
}
static inline int fm_webhooks_due(meta_t *b, int64_t now, const meta_webhook *after, int limit,
                                  meta_webhook **out, int *n, cu_error *e)
{
    return meta_webhooks_due(FM(b)->inner, now, after, limit, out, n, e);
}
static inline int fm_webhook_next(meta_t *b, int64_t after, int64_t *when, cu_error *e)
{
    return meta_webhook_next_due(FM(b)->inner, after, when, e);
}
static inline int fm_webhook_claim(meta_t *b, int64_t id, int64_t now, int64_t lease_until,
                                   int *attempts, cu_error *e)
{
    return meta_webhook_claim(FM(b)->inner, id, now, lease_until, attempts, e);
}
static inline int fm_webhook_release(meta_t *b, int64_t id, int64_t lease_until, cu_error *e)
{
    return meta_webhook_release(FM(b)->inner, id, lease_until, e);
}
static inline int fm_webhook_result(meta_t *b, int64_t id, int64_t lease_until, bool ok,
                                    int64_t next, bool give_up, const char *error, cu_error *e)
{
    return meta_webhook_result(FM(b)->inner, id, lease_until, ok, next, give_up, error, e);
}
static inline void fm_close(meta_t *b)
{
    meta_close(FM(b)->inner);
    free(b);
}

static const struct meta_ops fault_meta_ops = {
    .upload_create = fm_upload_create,
    .upload_get = fm_upload_get,
    .upload_find = fm_upload_find,
    .upload_with_parts = fm_with_parts,
    .part_get = fm_part_get,
    .part_store = fm_part_store,
    .stream_advance = fm_stream_advance,
    .declare_length = fm_declare_length,
    .owner_usage = fm_owner_usage,
    .prune = fm_prune,
    .check = fm_check,
    .upload_transition = fm_transition,
    .upload_complete = fm_complete,
    .upload_end = fm_end,
    .upload_fail = fm_fail,
    .upload_set_type = fm_set_type,
    .uploads_due = fm_due,
    .uploads_to_purge = fm_to_purge,
    .upload_mark_purged = fm_mark_purged,
    .files_list = fm_files,
    .webhooks_due = fm_webhooks_due,
    .webhook_next_due = fm_webhook_next,
    .webhook_claim = fm_webhook_claim,
    .webhook_release = fm_webhook_release,
    .webhook_result = fm_webhook_result,
    .close = fm_close,
};

/* Wraps inner (owned from now on). */
static inline meta_t *fault_meta_wrap(meta_t *inner, fault_ctl *ctl)
{
    fault_meta *m = calloc(1, sizeof *m);
    m->base.ops = &fault_meta_ops;
    m->inner = inner;
    m->ctl = ctl;
    return &m->base;
}

#endif
