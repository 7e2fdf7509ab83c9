/* lock.c - claims kept in memory.
 *
 * A small table under one mutex: it holds one entry per write in flight (at most one per
 * connection), so a linear scan is the simplest right thing. */
#include "core/lock.h"

#include "base/util.h"

#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char upload_id[CU_UUID_LEN + 1];
    int slot;
} claim;

typedef struct {
    upload_locks base;
    pthread_mutex_t lock;
    claim *claims;
    size_t n, cap;
} memory_locks;

static int mem_acquire(upload_locks *base, const char *upload_id, int slot, cu_error *err)
{
    memory_locks *m = (memory_locks *)base;
    int rc = 0;
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->n && rc == 0; i++)
        if (m->claims[i].slot == slot && !strcmp(m->claims[i].upload_id, upload_id))
            rc = slot == UPLOAD_LOCK_WHOLE
                     ? cu_fail(err, CU_ELOCKED, "Another request is writing to this upload")
                     : cu_fail(err, CU_ECONFLICT, "Part %d is being uploaded by another request",
                               slot);
    if (rc == 0 && m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 16;
        claim *grown = realloc(m->claims, cap * sizeof *grown);
        if (grown) {
            m->claims = grown;
            m->cap = cap;
        } else {
            rc = cu_fail_oom(err);
        }
    }
    if (rc == 0) {
        claim *c = &m->claims[m->n++];
        snprintf(c->upload_id, sizeof c->upload_id, "%s", upload_id);
        c->slot = slot;
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}

static void mem_release(upload_locks *base, const char *upload_id, int slot)
{
    memory_locks *m = (memory_locks *)base;
    bool found = false;
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->n; i++) {
        if (m->claims[i].slot == slot && !strcmp(m->claims[i].upload_id, upload_id)) {
            m->claims[i] = m->claims[--m->n];
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&m->lock);
    assert(found); /* only the holder releases, and only once */
    (void)found;
}

static void mem_destroy(upload_locks *base)
{
    memory_locks *m = (memory_locks *)base;
    pthread_mutex_destroy(&m->lock);
    free(m->claims);
    free(m);
}

static const struct upload_lock_ops memory_ops = {
    .acquire = mem_acquire, .release = mem_release, .destroy = mem_destroy};

upload_locks *upload_locks_memory(void)
{
    memory_locks *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->base.ops = &memory_ops;
    pthread_mutex_init(&m->lock, NULL);
    return &m->base;
}

int upload_lock_acquire(upload_locks *l, const char *upload_id, int slot, cu_error *err)
{
    return l->ops->acquire(l, upload_id, slot, err);
}

void upload_lock_release(upload_locks *l, const char *upload_id, int slot)
{
    l->ops->release(l, upload_id, slot);
}

void upload_locks_destroy(upload_locks *l)
{
    if (l)
        l->ops->destroy(l);
}
