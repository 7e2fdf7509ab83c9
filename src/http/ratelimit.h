/* ratelimit.h - rate limits per client address: requests (RATE_LIMIT_PER_MINUTE,
 * RATE_LIMIT_BURST) and failed authentications (RATE_LIMIT_AUTH_FAILURES_PER_MINUTE).
 *
 * Each client has two token buckets. Every request takes a token from the first (also
 * the ones the server refuses by itself, so a scanner's 404s count); with none left it is
 * answered 429. Every failed authentication takes one from the second (the authentication
 * filter reports them); while it is empty, every request from that client to a route that
 * needs credentials is answered 429, the right credentials included, so guessing a key
 * costs one try per refill whatever the guesser does. A 429 carries Retry-After (whole
 * seconds until a token is back) and the JSON error.
 *
 * A client is its address (http_client_addr, so a trusted proxy's forwarded one), IPv6
 * clients by their /64: one host usually holds a whole /64, and would otherwise have 2^64
 * buckets. At most max_clients are tracked at once; a new one replaces one whose buckets
 * are full (forgetting it loses nothing), else the one seen least recently: a limit can only
 * be escaped by bringing more than max_clients clients within one refill time.
 *
 * The buckets follow GCRA (the generic cell rate algorithm): one time stamp per bucket, the
 * "theoretical arrival time", which is exactly a token bucket of capacity burst refilled at
 * the rate, in integer nanoseconds. The table is split into shards with a lock each; a
 * request costs a hash, a lock and a few comparisons. */
#ifndef CU_HTTP_RATELIMIT_H
#define CU_HTTP_RATELIMIT_H

#include "base/netaddr.h"
#include "http/server.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Clients tracked at once unless the options say otherwise (about 48 bytes each). */
#define HTTP_RATELIMIT_CLIENTS 65536

/* A rate: interval between tokens and how far ahead of now a bucket may run (burst). */
typedef struct {
    int64_t interval_ns;  /* 0: no limit */
    int64_t tolerance_ns; /* (burst - 1) intervals */
} http_rate;

/* per_minute tokens a minute, at most burst at once (burst at least 1); per_minute 0: none. */
http_rate http_rate_make(int64_t per_minute, int64_t burst);
/* How long until a bucket whose arrival time is tat has a token, at now: 0 when it has one. */
int64_t http_rate_wait(const http_rate *r, int64_t tat, int64_t now);
/* Takes a token if there is one (returns 0 and moves *tat), else returns the wait as
 * http_rate_wait does and leaves *tat. */
int64_t http_rate_take(const http_rate *r, int64_t *tat, int64_t now);
/* Takes a token whether there is one or not (a failure that happened), leaving the bucket
 * at most one token short of empty, so a wait never exceeds one interval. */
void http_rate_charge(const http_rate *r, int64_t *tat, int64_t now);
/* Whether the bucket is full at now (forgetting it changes nothing). */
bool http_rate_full(const http_rate *r, int64_t tat, int64_t now);

typedef struct {
    int64_t per_minute;               /* requests a minute per client; 0: no request limit */
    int64_t burst;                    /* requests at once */
    int64_t auth_failures_per_minute; /* also the burst; 0: no limit on failures */
    size_t max_clients;               /* 0: HTTP_RATELIMIT_CLIENTS */
} http_ratelimit_options;

typedef struct http_ratelimit http_ratelimit;

/* NULL when out of memory. */
http_ratelimit *http_ratelimit_new(const http_ratelimit_options *o);
void http_ratelimit_free(http_ratelimit *rl);

/* The filter (rl may be NULL: it then does nothing); rl must outlive it. */
http_filter http_ratelimit_filter(http_ratelimit *rl);
/* Reports a failed authentication of req (the authentication filter calls it); rl may be
 * NULL. */
void http_ratelimit_auth_failed(http_ratelimit *rl, const http_request *req);

/* The filter's decision for a request from a at now: 0 to let it through (a token taken),
 * else the nanoseconds until it would pass, with *auth set when the failure bucket is what
 * refuses it. needs_auth: the route takes credentials. */
int64_t http_ratelimit_check(http_ratelimit *rl, const netaddr *a, bool needs_auth, int64_t now,
                             bool *auth);
/* A failed authentication from a at now. */
void http_ratelimit_failure(http_ratelimit *rl, const netaddr *a, int64_t now);
/* Clients tracked now (for tests). */
size_t http_ratelimit_clients(http_ratelimit *rl);

#endif
