/* meta.c - the metadata interface: dispatch to the backend and record helpers. */
#include "meta/meta.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

static const char *const state_names[] = {"pending",   "finalizing", "complete", "failed",
                                          "cancelled", "expired",    "deleted"};

const char *upload_state_name(upload_state s)
{
    return (unsigned)s < sizeof state_names / sizeof *state_names ? state_names[s] : "unknown";
}

int upload_state_parse(const char *name)
{
    for (size_t i = 0; i < sizeof state_names / sizeof *state_names; i++)
        if (!strcmp(name, state_names[i]))
            return (int)i;
    return -1;
}

int meta_limits_check(const meta_limits *limits, int open, int64_t reserved, int adding,
                      int64_t more, cu_error *e)
{
    if (!limits)
        return 0;
    if (adding && limits->max_open && open + adding > limits->max_open)
        return cu_fail(e, CU_ELIMIT,
                       "Too many open uploads: %d are open, at most %d are allowed; complete or "
                       "cancel some first",
                       open, limits->max_open);
    if (limits->max_reserved && more > 0 && reserved + more > limits->max_reserved)
        return cu_fail(e, CU_ENOSPC,
                       "Too many bytes reserved: open uploads hold %lld bytes, this one needs "
                       "%lld more, at most %lld are allowed",
                       (long long)reserved, (long long)more, (long long)limits->max_reserved);
    return 0;
}

int meta_upload_create(meta_t *m, const meta_upload *u, const meta_part *parts, int n,
                       const meta_limits *limits, cu_error *e)
{
    return m->ops->upload_create(m, u, parts, n, limits, e);
}

int meta_upload_get(meta_t *m, const char *id, meta_upload *out, cu_error *e)
{
    return m->ops->upload_get(m, id, out, e);
}

int meta_upload_find(meta_t *m, const char *owner, const char *protocol, const char *client_key,
                     meta_upload *out, cu_error *e)
{
    return m->ops->upload_find(m, owner, protocol, client_key, out, e);
}

int meta_upload_with_parts(meta_t *m, const char *id, meta_upload *out, meta_part **parts, int *n,
                           cu_error *e)
{
    return m->ops->upload_with_parts(m, id, out, parts, n, e);
}

int meta_part_get(meta_t *m, const char *id, int part, meta_part *out, cu_error *e)
{
    return m->ops->part_get(m, id, part, out, e);
}

int meta_part_store(meta_t *m, const char *id, int part, int64_t size, const char *checksum,
                    const char *storage_ref, int *uploaded, cu_error *e)
{
    return m->ops->part_store(m, id, part, size, checksum, storage_ref, uploaded, e);
}

int meta_stream_advance(meta_t *m, const char *id, int64_t from, int64_t to,
                        const meta_part *chunks, int n, cu_error *e)
{
    return m->ops->stream_advance(m, id, from, to, chunks, n, e);
}

int meta_declare_length(meta_t *m, const char *id, int64_t total_size, const meta_limits *limits,
                        cu_error *e)
{
    return m->ops->declare_length(m, id, total_size, limits, e);
}

int meta_owner_usage(meta_t *m, const char *owner, int *open, int64_t *reserved, cu_error *e)
{
    return m->ops->owner_usage(m, owner, open, reserved, e);
}

int meta_prune(meta_t *m, int64_t ended_before, int *uploads, int *webhooks, cu_error *e)
{
    return m->ops->prune(m, ended_before, uploads, webhooks, e);
}

int meta_check(meta_t *m, cu_error *e)
{
    return m->ops->check(m, e);
}

int meta_upload_transition(meta_t *m, const char *id, upload_state from, upload_state to,
                           cu_error *e)
{
    return m->ops->upload_transition(m, id, from, to, e);
}

int meta_upload_complete(meta_t *m, const char *id, const char *final_path, int64_t completed_at,
                         const char *sha256, const char *webhook_body, cu_error *e)
{
    return m->ops->upload_complete(m, id, final_path, completed_at, sha256, webhook_body, e);
}

int meta_upload_end(meta_t *m, const char *id, upload_state from, upload_state to, cu_error *e)
{
    return m->ops->upload_end(m, id, from, to, e);
}

int meta_upload_fail(meta_t *m, const char *id, upload_state from, int code, const char *reason,
                     cu_error *e)
{
    assert(code < 0 && reason);
    return m->ops->upload_fail(m, id, from, code, reason, e);
}

int meta_upload_set_type(meta_t *m, const char *id, const char *detected_type, cu_error *e)
{
    return m->ops->upload_set_type(m, id, detected_type, e);
}

int meta_uploads_due(meta_t *m, int64_t now, int limit, meta_upload **out, int *n, cu_error *e)
{
    return m->ops->uploads_due(m, now, limit, out, n, e);
}

int meta_uploads_to_purge(meta_t *m, int limit, meta_upload **out, int *n, cu_error *e)
{
    return m->ops->uploads_to_purge(m, limit, out, n, e);
}

int meta_upload_mark_purged(meta_t *m, const char *id, cu_error *e)
{
    return m->ops->upload_mark_purged(m, id, e);
}

int meta_files_list(meta_t *m, const meta_file_query *q, meta_upload **out, int *n, cu_error *e)
{
    return m->ops->files_list(m, q, out, n, e);
}

int meta_webhooks_due(meta_t *m, int64_t now, const meta_webhook *after, int limit,
                      meta_webhook **out, int *n, cu_error *e)
{
    return m->ops->webhooks_due(m, now, after, limit, out, n, e);
}

int meta_webhook_next_due(meta_t *m, int64_t after, int64_t *when, cu_error *e)
{
    return m->ops->webhook_next_due(m, after, when, e);
}

int meta_webhook_claim(meta_t *m, int64_t id, int64_t now, int64_t lease_until, int *attempts,
                       cu_error *e)
{
    assert(lease_until > now);
    return m->ops->webhook_claim(m, id, now, lease_until, attempts, e);
}

int meta_webhook_release(meta_t *m, int64_t id, int64_t lease_until, cu_error *e)
{
    return m->ops->webhook_release(m, id, lease_until, e);
}

int meta_webhook_result(meta_t *m, int64_t id, int64_t lease_until, bool delivered,
                        int64_t next_attempt_at, bool give_up, const char *error, cu_error *e)
{
    assert(!(delivered && give_up));
    return m->ops->webhook_result(m, id, lease_until, delivered, next_attempt_at, give_up, error,
                                  e);
}

void meta_close(meta_t *m)
{
    if (m)
        m->ops->close(m);
}

void meta_upload_clear(meta_upload *u)
{
    free(u->owner);
    free(u->client_key);
    free(u->content_type);
    free(u->metadata);
    free(u->concat_of);
    free(u->filename);
    free(u->checksum_sha256);
    free(u->webhook_url);
    free(u->storage_ref);
    free(u->final_path);
    free(u->detected_type);
    free(u->failure_reason);
    free(u->sha256);
    memset(u, 0, sizeof *u);
}

void meta_uploads_free(meta_upload *u, int n)
{
    for (int i = 0; i < n; i++)
        meta_upload_clear(&u[i]);
    free(u);
}

void meta_parts_free(meta_part *p, int n)
{
    for (int i = 0; i < n; i++)
        free(p[i].storage_ref);
    free(p);
}

void meta_webhooks_free(meta_webhook *w, int n)
{
    for (int i = 0; i < n; i++) {
        free(w[i].url);
        free(w[i].body);
    }
    free(w);
}
