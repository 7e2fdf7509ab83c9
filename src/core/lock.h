/* lock.h - claims: one writer per slot (or per stream upload) at a time.
 *
 * A claim is taken before an upload's state is read and held until what the write did is
 * recorded, so two requests can never both see a slot pending and both write it. Claims
 * go through this small interface so that a lock in the database (PostgreSQL advisory
 * locks, a lease row) can replace the in-memory one when several server processes share
 * one store: only the constructor changes. */
#ifndef CU_CORE_LOCK_H
#define CU_CORE_LOCK_H

#include "base/error.h"

typedef struct upload_locks upload_locks;

/* The whole upload (a stream write), rather than one slot. */
#define UPLOAD_LOCK_WHOLE (-1)

struct upload_lock_ops {
    /* Takes the claim on (upload_id, slot), never waiting: when it is held, CU_ECONFLICT for a
     * slot (the seed's 409) and CU_ELOCKED for a whole upload (tus's 423). */
    int (*acquire)(upload_locks *, const char *upload_id, int slot, cu_error *);
    /* Gives up a claim acquire took. */
    void (*release)(upload_locks *, const char *upload_id, int slot);
    void (*destroy)(upload_locks *);
};

struct upload_locks {
    const struct upload_lock_ops *ops;
};

/* Claims kept in this process's memory: enough while one process serves a store. */
upload_locks *upload_locks_memory(void);

int upload_lock_acquire(upload_locks *l, const char *upload_id, int slot, cu_error *err);
void upload_lock_release(upload_locks *l, const char *upload_id, int slot);
void upload_locks_destroy(upload_locks *l);

#endif
