/* lock.h - claims: one writer per slot (or per stream upload) at a time.
 *
 * A claim is taken before an upload's state is read and held until what the write did is
 * recorded, so two requests can never both see a slot pending and both write it. A claim
 * whose holder makes too little progress (a client that stopped sending but keeps its
 * connection open, or one that trickles a byte a second) can be taken over by a new
 * request: fewer than stall->min_bytes moved in the last stall->seconds. The old holder
 * learns it at its next step and writes nothing more. While a holder is inside a step
 * (hold ... unhold: one write, or recording the result), its claim cannot be taken over, so
 * two writers never overlap; and a takeover first runs the old holder's fence (its writes
 * still in flight, such as a frame an SMB worker is writing, are waited for), so none of the
 * old holder's bytes lands after the new holder's.
 *
 * Claims go through this small interface so that a lock in the database (PostgreSQL
 * advisory locks, a lease row) can replace the in-memory one when several server processes
 * share one store: only the constructor changes. */
#ifndef CU_CORE_LOCK_H
#define CU_CORE_LOCK_H

#include "base/error.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct upload_locks upload_locks;
typedef struct upload_claim upload_claim;

/* The whole upload (a stream write), rather than one slot. */
#define UPLOAD_LOCK_WHOLE (-1)

/* When a claim counts as stalled. */
typedef struct {
    double seconds;    /* 0: never */
    int64_t min_bytes; /* fewer than this many bytes in `seconds` is a stall */
} upload_stall_rule;

struct upload_lock_ops {
    /* Takes the claim on (upload_id, slot), never waiting but for a taken-over holder's fence.
     * When it is held: taken over if its holder is stalled (by *stall; NULL: never) and not
     * inside a step, else CU_ECONFLICT for a slot (the seed's 409) or CU_ELOCKED for a whole
     * upload (tus's 423). */
    int (*acquire)(upload_locks *, const char *upload_id, int slot, const upload_stall_rule *stall,
                   upload_claim **out, cu_error *);
    /* Begins a step under the claim: false (and nothing held) when it was taken over. */
    bool (*hold)(upload_locks *, upload_claim *);
    /* Ends a step that moved `bytes` bytes (counted as the holder's progress). */
    void (*unhold)(upload_locks *, upload_claim *, int64_t bytes);
    /* Sets what a takeover of c runs before the claim passes on (fn(ctx), called from the
     * new holder's thread while the old holder cannot begin a step); fn NULL: nothing. */
    void (*fence)(upload_locks *, upload_claim *, void (*fn)(void *ctx), void *ctx);
    /* Gives the claim up (or, when it was taken over, just forgets it). */
    void (*release)(upload_locks *, upload_claim *);
    void (*destroy)(upload_locks *);
};

struct upload_locks {
    const struct upload_lock_ops *ops;
};

/* Claims kept in this process's memory: enough while one process serves a store. */
upload_locks *upload_locks_memory(void);

int upload_lock_acquire(upload_locks *l, const char *upload_id, int slot,
                        const upload_stall_rule *stall, upload_claim **out, cu_error *err);
bool upload_lock_hold(upload_locks *l, upload_claim *c);
void upload_lock_unhold(upload_locks *l, upload_claim *c, int64_t bytes);
void upload_lock_fence(upload_locks *l, upload_claim *c, void (*fn)(void *ctx), void *ctx);
void upload_lock_release(upload_locks *l, upload_claim *c);
void upload_locks_destroy(upload_locks *l);

#endif
