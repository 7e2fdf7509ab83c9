/* lock.h - claims: one writer per slot (or per stream upload) at a time.
 *
 * A claim is taken before an upload's state is read and held until what the write did is
 * recorded, so two requests can never both see a slot pending and both write it. A claim
 * whose holder has done nothing for a while (a client that stopped sending but keeps its
 * connection open) can be taken over by a new request: the old holder learns it at its next
 * step and writes nothing more. While a holder is inside a step (hold ... unhold: one write,
 * or recording the result), its claim cannot be taken over, so two writers never overlap.
 *
 * Claims go through this small interface so that a lock in the database (PostgreSQL
 * advisory locks, a lease row) can replace the in-memory one when several server processes
 * share one store: only the constructor changes. */
#ifndef CU_CORE_LOCK_H
#define CU_CORE_LOCK_H

#include "base/error.h"

#include <stdbool.h>

typedef struct upload_locks upload_locks;
typedef struct upload_claim upload_claim;

/* The whole upload (a stream write), rather than one slot. */
#define UPLOAD_LOCK_WHOLE (-1)

struct upload_lock_ops {
    /* Takes the claim on (upload_id, slot), never waiting. When it is held: taken over if its
     * holder has been idle (outside hold) for takeover_after seconds (0: never), else
     * CU_ECONFLICT for a slot (the seed's 409) or CU_ELOCKED for a whole upload (tus's 423). */
    int (*acquire)(upload_locks *, const char *upload_id, int slot, double takeover_after,
                   upload_claim **out, cu_error *);
    /* Begins a step under the claim: false (and nothing held) when it was taken over. */
    bool (*hold)(upload_locks *, upload_claim *);
    /* Ends a step; the claim counts as active from now. */
    void (*unhold)(upload_locks *, upload_claim *);
    /* Gives the claim up (or, when it was taken over, just forgets it). */
    void (*release)(upload_locks *, upload_claim *);
    void (*destroy)(upload_locks *);
};

struct upload_locks {
    const struct upload_lock_ops *ops;
};

/* Claims kept in this process's memory: enough while one process serves a store. */
upload_locks *upload_locks_memory(void);

int upload_lock_acquire(upload_locks *l, const char *upload_id, int slot, double takeover_after,
                        upload_claim **out, cu_error *err);
bool upload_lock_hold(upload_locks *l, upload_claim *c);
void upload_lock_unhold(upload_locks *l, upload_claim *c);
void upload_lock_release(upload_locks *l, upload_claim *c);
void upload_locks_destroy(upload_locks *l);

#endif
