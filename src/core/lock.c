/* lock.c - claims kept in memory.
 *
 * A small table of the claims in force under one mutex: one entry per write in flight (at
 * most one per connection), so a linear scan is the simplest right thing. A claim's own
 * mutex is held by its holder during a step; a takeover only happens when that mutex is
 * free, and marks the old claim revoked under it, then keeps it while the old holder's fence
 * runs (outside the table's lock, so other claims go on meanwhile). A revoked claim leaves
 * the table at once and is freed when its holder releases it.
 *
 * Progress is counted in marks: each time a holder has moved min_bytes since the last mark,
 * the mark moves to now. A claim whose mark is stall->seconds old has had fewer than
 * min_bytes in the last stall->seconds, however many small steps it made (a 1 B/s trickle
 * keeps its connection busy but never moves the mark). */
#include "core/lock.h"

#include "base/util.h"

#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct upload_claim {
    char upload_id[CU_UUID_LEN + 1];
    int slot;
    pthread_mutex_t step; /* held by the holder during a step */
    bool revoked;         /* taken over: guarded by step */
    /* Guarded by the table's lock: */
    double progress_at;    /* monotonic seconds of the last progress mark */
    int64_t since_mark;    /* bytes moved since then */
    int64_t mark_bytes;    /* bytes that make a mark (the stall rule's min_bytes) */
    void (*fence)(void *); /* run by a takeover, or NULL */
    void *fence_ctx;
};

typedef struct {
    upload_locks base;
    pthread_mutex_t lock;
    upload_claim **claims; /* the claims in force */
    size_t n, cap;
} memory_locks;

static void claim_free(upload_claim *c)
{
    pthread_mutex_destroy(&c->step);
    free(c);
}

/* Removes entry i of the table (caller holds m->lock). */
static void table_drop(memory_locks *m, size_t i)
{
    m->claims[i] = m->claims[--m->n];
}

static int mem_acquire(upload_locks *base, const char *upload_id, int slot,
                       const upload_stall_rule *stall, upload_claim **out, cu_error *err)
{
    memory_locks *m = (memory_locks *)base;
    *out = NULL;
    upload_claim *c = calloc(1, sizeof *c);
    if (!c)
        return cu_fail_oom(err);
    snprintf(c->upload_id, sizeof c->upload_id, "%s", upload_id);
    c->slot = slot;
    c->mark_bytes = stall && stall->min_bytes > 0 ? stall->min_bytes : 1;
    pthread_mutex_init(&c->step, NULL);
    int rc = 0;
    upload_claim *taken = NULL; /* the claim taken over, its step still locked here */
    pthread_mutex_lock(&m->lock);
    double now = util_monotonic();
    for (size_t i = 0; i < m->n; i++) {
        upload_claim *old = m->claims[i];
        if (old->slot != slot || strcmp(old->upload_id, upload_id) != 0)
            continue;
        /* Too little progress for long enough, and not inside a step: take it over. */
        bool stalled = stall && stall->seconds > 0 && now - old->progress_at >= stall->seconds;
        if (stalled && pthread_mutex_trylock(&old->step) == 0) {
            old->revoked = true;
            taken = old;
            table_drop(m, i);
            break;
        }
        rc = slot == UPLOAD_LOCK_WHOLE
                 ? cu_fail(err, CU_ELOCKED, "Another request is writing to this upload")
                 : cu_fail(err, CU_ECONFLICT, "Part %d is being uploaded by another request", slot);
        break;
    }
    if (rc == 0 && m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 16;
        upload_claim **grown = realloc(m->claims, cap * sizeof *grown);
        if (grown) {
            m->claims = grown;
            m->cap = cap;
        } else {
            rc = cu_fail_oom(err);
        }
    }
    if (rc == 0) {
        c->progress_at = now;
        m->claims[m->n++] = c;
        *out = c;
    }
    void (*fence)(void *) = taken ? taken->fence : NULL;
    void *fence_ctx = taken ? taken->fence_ctx : NULL;
    pthread_mutex_unlock(&m->lock);
    if (taken) {
        /* The old holder cannot begin a step (or free its claim) until this returns. */
        if (fence) {
            fence(fence_ctx);
            if (rc == 0) { /* the new holder's time starts now, not while it waited here */
                pthread_mutex_lock(&m->lock);
                c->progress_at = util_monotonic();
                pthread_mutex_unlock(&m->lock);
            }
        }
        pthread_mutex_unlock(&taken->step);
    }
    if (rc)
        claim_free(c);
    return rc;
}

static bool mem_hold(upload_locks *base, upload_claim *c)
{
    (void)base;
    pthread_mutex_lock(&c->step);
    if (!c->revoked)
        return true;
    pthread_mutex_unlock(&c->step);
    return false;
}

static void mem_unhold(upload_locks *base, upload_claim *c, int64_t bytes)
{
    memory_locks *m = (memory_locks *)base;
    pthread_mutex_lock(&m->lock);
    c->since_mark += bytes;
    if (c->since_mark >= c->mark_bytes) {
        c->progress_at = util_monotonic();
        c->since_mark = 0;
    }
    pthread_mutex_unlock(&m->lock);
    pthread_mutex_unlock(&c->step);
}

static void mem_fence(upload_locks *base, upload_claim *c, void (*fn)(void *), void *ctx)
{
    memory_locks *m = (memory_locks *)base;
    pthread_mutex_lock(&m->lock);
    c->fence = fn;
    c->fence_ctx = ctx;
    pthread_mutex_unlock(&m->lock);
}

static void mem_release(upload_locks *base, upload_claim *c)
{
    memory_locks *m = (memory_locks *)base;
    if (!c)
        return;
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->n; i++) {
        if (m->claims[i] == c) {
            table_drop(m, i);
            break;
        }
    }
    pthread_mutex_unlock(&m->lock);
    /* A takeover may still be running this claim's fence: wait for it to let go. */
    pthread_mutex_lock(&c->step);
    pthread_mutex_unlock(&c->step);
    claim_free(c);
}

static void mem_destroy(upload_locks *base)
{
    memory_locks *m = (memory_locks *)base;
    assert(m->n == 0); /* every holder released before the service goes */
    pthread_mutex_destroy(&m->lock);
    free(m->claims);
    free(m);
}

static const struct upload_lock_ops memory_ops = {.acquire = mem_acquire,
                                                  .hold = mem_hold,
                                                  .unhold = mem_unhold,
                                                  .fence = mem_fence,
                                                  .release = mem_release,
                                                  .destroy = mem_destroy};

upload_locks *upload_locks_memory(void)
{
    memory_locks *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->base.ops = &memory_ops;
    pthread_mutex_init(&m->lock, NULL);
    return &m->base;
}

int upload_lock_acquire(upload_locks *l, const char *upload_id, int slot,
                        const upload_stall_rule *stall, upload_claim **out, cu_error *err)
{
    return l->ops->acquire(l, upload_id, slot, stall, out, err);
}

bool upload_lock_hold(upload_locks *l, upload_claim *c)
{
    return l->ops->hold(l, c);
}

void upload_lock_unhold(upload_locks *l, upload_claim *c, int64_t bytes)
{
    l->ops->unhold(l, c, bytes);
}

void upload_lock_fence(upload_locks *l, upload_claim *c, void (*fn)(void *ctx), void *ctx)
{
    l->ops->fence(l, c, fn, ctx);
}

void upload_lock_release(upload_locks *l, upload_claim *c)
{
    if (c)
        l->ops->release(l, c);
}

void upload_locks_destroy(upload_locks *l)
{
    if (l)
        l->ops->destroy(l);
}
