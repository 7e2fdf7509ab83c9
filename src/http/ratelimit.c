/* ratelimit.c - token buckets per client address, in a bounded table.
 *
 * The table is shards of fixed size, each a chained hash (indices, not pointers, so a shard
 * is three arrays allocated once) and a list from most to least recently seen. Eviction
 * looks at the few least recently seen clients for one whose buckets are full and takes the
 * least recent otherwise. Measured with wrk -c64 on /health from one address (every request
 * in one shard, under one lock): no difference from the limit turned off (see
 * docs/ARCHITECTURE.md). */
#include "http/ratelimit.h"

#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NO_ENTRY (-1)
/* Least recently seen entries looked at for one that is full before the last is evicted. */
#define EVICT_SCAN 8

http_rate http_rate_make(int64_t per_minute, int64_t burst)
{
    http_rate r = {0, 0};
    if (per_minute <= 0)
        return r;
    r.interval_ns = INT64_C(60000000000) / per_minute;
    if (r.interval_ns < 1)
        r.interval_ns = 1;
    r.tolerance_ns = (burst > 1 ? burst - 1 : 0) * r.interval_ns;
    return r;
}

int64_t http_rate_wait(const http_rate *r, int64_t tat, int64_t now)
{
    if (!r->interval_ns)
        return 0;
    int64_t wait = tat - r->tolerance_ns - now;
    return wait > 0 ? wait : 0;
}

int64_t http_rate_take(const http_rate *r, int64_t *tat, int64_t now)
{
    int64_t wait = http_rate_wait(r, *tat, now);
    if (wait || !r->interval_ns)
        return wait;
    *tat = (*tat > now ? *tat : now) + r->interval_ns;
    return 0;
}

void http_rate_charge(const http_rate *r, int64_t *tat, int64_t now)
{
    if (!r->interval_ns)
        return;
    int64_t next = (*tat > now ? *tat : now) + r->interval_ns;
    int64_t most = now + r->tolerance_ns + r->interval_ns;
    *tat = next < most ? next : most;
}

bool http_rate_full(const http_rate *r, int64_t tat, int64_t now)
{
    (void)r;
    return tat <= now;
}

typedef struct {
    uint64_t key; /* IPv4: the address; IPv6: its first 64 bits */
    int32_t family;
    int32_t hash_next; /* in the shard's chain */
    int32_t newer, older;
    int64_t requests_tat, failures_tat;
} client;

typedef struct {
    pthread_mutex_t lock;
    client *clients;
    int32_t *heads;
    uint32_t nheads; /* a power of two */
    int32_t cap, used;
    int32_t newest, oldest;
} shard;

struct http_ratelimit {
    http_rate requests, failures;
    shard *shards;
    uint32_t nshards; /* a power of two */
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint32_t pow2_at_least(uint32_t n)
{
    uint32_t p = 1;
    while (p < n)
        p <<= 1;
    return p;
}

void http_ratelimit_free(http_ratelimit *rl)
{
    if (!rl)
        return;
    for (uint32_t i = 0; rl->shards && i < rl->nshards; i++) {
        pthread_mutex_destroy(&rl->shards[i].lock);
        free(rl->shards[i].clients);
        free(rl->shards[i].heads);
    }
    free(rl->shards);
    free(rl);
}

http_ratelimit *http_ratelimit_new(const http_ratelimit_options *o)
{
    http_ratelimit *rl = calloc(1, sizeof *rl);
    if (!rl)
        return NULL;
    rl->requests = http_rate_make(o->per_minute, o->burst);
    rl->failures = http_rate_make(o->auth_failures_per_minute, o->auth_failures_per_minute);
    size_t max = o->max_clients ? o->max_clients : HTTP_RATELIMIT_CLIENTS;
    if (max > (size_t)1 << 24)
        max = (size_t)1 << 24;
    /* Shards cut contention between clients; a small table (tests) is one shard, so that
     * which client is evicted is exact. */
    rl->nshards = max >= 4096 ? 16 : 1;
    rl->shards = calloc(rl->nshards, sizeof *rl->shards);
    if (!rl->shards) {
        free(rl);
        return NULL;
    }
    int32_t per_shard = (int32_t)((max + rl->nshards - 1) / rl->nshards);
    for (uint32_t i = 0; i < rl->nshards; i++) {
        shard *s = &rl->shards[i];
        pthread_mutex_init(&s->lock, NULL);
        s->cap = per_shard;
        s->nheads = pow2_at_least((uint32_t)per_shard * 2);
        s->clients = calloc((size_t)per_shard, sizeof *s->clients);
        s->heads = malloc(s->nheads * sizeof *s->heads);
        if (!s->clients || !s->heads) {
            rl->nshards = i + 1;
            http_ratelimit_free(rl);
            return NULL;
        }
        for (uint32_t h = 0; h < s->nheads; h++)
            s->heads[h] = NO_ENTRY;
        s->newest = s->oldest = NO_ENTRY;
    }
    return rl;
}

/* The bucket key of a: IPv4 whole, IPv6 by its /64. */
static uint64_t key_of(const netaddr *a)
{
    uint64_t k = 0;
    size_t n = a->family == AF_INET ? 4 : a->family == AF_INET6 ? 8 : 0;
    for (size_t i = 0; i < n; i++)
        k = k << 8 | a->bytes[i];
    return k;
}

static uint64_t hash_of(uint64_t key, int family)
{
    uint64_t h = (key ^ (uint64_t)family << 56) * UINT64_C(0x9E3779B97F4A7C15);
    return h ^ h >> 29;
}

static void list_unlink(shard *s, int32_t i)
{
    client *c = &s->clients[i];
    if (c->newer != NO_ENTRY)
        s->clients[c->newer].older = c->older;
    else
        s->newest = c->older;
    if (c->older != NO_ENTRY)
        s->clients[c->older].newer = c->newer;
    else
        s->oldest = c->newer;
}

static void list_push_newest(shard *s, int32_t i)
{
    client *c = &s->clients[i];
    c->newer = NO_ENTRY;
    c->older = s->newest;
    if (s->newest != NO_ENTRY)
        s->clients[s->newest].newer = i;
    s->newest = i;
    if (s->oldest == NO_ENTRY)
        s->oldest = i;
}

static void hash_remove(shard *s, int32_t i, uint32_t bucket)
{
    int32_t *link = &s->heads[bucket];
    while (*link != i) {
        assert(*link != NO_ENTRY);
        link = &s->clients[*link].hash_next;
    }
    *link = s->clients[i].hash_next;
}

/* The slot to reuse in a full shard: a full client among the least recent, else the least
 * recent. */
static int32_t evict(const http_ratelimit *rl, shard *s, int64_t now)
{
    int32_t victim = s->oldest;
    int32_t i = s->oldest;
    for (int n = 0; i != NO_ENTRY && n < EVICT_SCAN; n++, i = s->clients[i].newer) {
        const client *c = &s->clients[i];
        if (http_rate_full(&rl->requests, c->requests_tat, now) &&
            http_rate_full(&rl->failures, c->failures_tat, now)) {
            victim = i;
            break;
        }
    }
    assert(victim != NO_ENTRY);
    const client *v = &s->clients[victim];
    uint32_t bucket = (uint32_t)hash_of(v->key, v->family) & (s->nheads - 1);
    hash_remove(s, victim, bucket);
    list_unlink(s, victim);
    return victim;
}

/* The client entry of a, made (with full buckets) when there is none; caller holds the
 * shard's lock, which *shard_out names. */
static client *find(http_ratelimit *rl, const netaddr *a, int64_t now, shard **shard_out)
{
    uint64_t key = key_of(a);
    uint64_t h = hash_of(key, a->family);
    shard *s = &rl->shards[(h >> 48) & (rl->nshards - 1)];
    *shard_out = s;
    pthread_mutex_lock(&s->lock);
    uint32_t bucket = (uint32_t)h & (s->nheads - 1);
    for (int32_t i = s->heads[bucket]; i != NO_ENTRY; i = s->clients[i].hash_next) {
        client *c = &s->clients[i];
        if (c->key == key && c->family == a->family) {
            if (s->newest != i) {
                list_unlink(s, i);
                list_push_newest(s, i);
            }
            return c;
        }
    }
    int32_t i = s->used < s->cap ? s->used++ : evict(rl, s, now);
    client *c = &s->clients[i];
    *c = (client){.key = key, .family = a->family, .hash_next = s->heads[bucket]};
    s->heads[bucket] = i;
    list_push_newest(s, i);
    return c;
}

int64_t http_ratelimit_check(http_ratelimit *rl, const netaddr *a, bool needs_auth, int64_t now,
                             bool *auth)
{
    *auth = false;
    bool check_failures = needs_auth && rl->failures.interval_ns;
    if (!rl->requests.interval_ns && !check_failures)
        return 0;
    shard *s;
    client *c = find(rl, a, now, &s);
    int64_t wait = http_rate_take(&rl->requests, &c->requests_tat, now);
    if (!wait && check_failures) {
        wait = http_rate_wait(&rl->failures, c->failures_tat, now);
        *auth = wait > 0;
    }
    pthread_mutex_unlock(&s->lock);
    return wait;
}

void http_ratelimit_failure(http_ratelimit *rl, const netaddr *a, int64_t now)
{
    if (!rl->failures.interval_ns)
        return;
    shard *s;
    client *c = find(rl, a, now, &s);
    http_rate_charge(&rl->failures, &c->failures_tat, now);
    pthread_mutex_unlock(&s->lock);
}

size_t http_ratelimit_clients(http_ratelimit *rl)
{
    size_t n = 0;
    for (uint32_t i = 0; i < rl->nshards; i++) {
        pthread_mutex_lock(&rl->shards[i].lock);
        n += (size_t)rl->shards[i].used;
        pthread_mutex_unlock(&rl->shards[i].lock);
    }
    return n;
}

void http_ratelimit_auth_failed(http_ratelimit *rl, const http_request *req)
{
    if (rl)
        http_ratelimit_failure(rl, http_client_netaddr(req), now_ns());
}

static bool ratelimit_request(void *ctx, http_request *req)
{
    http_ratelimit *rl = ctx;
    if (!rl)
        return false;
    const http_route *route = http_route_of(req);
    bool auth;
    int64_t wait = http_ratelimit_check(rl, http_client_netaddr(req),
                                        route && route->auth != HTTP_AUTH_NONE, now_ns(), &auth);
    if (!wait)
        return false;
    long long seconds = (long long)((wait + 999999999) / 1000000000);
    char retry[24];
    snprintf(retry, sizeof retry, "%lld", seconds);
    http_add_header(req, "Retry-After", retry);
    if (auth)
        http_reply_error(req, 429, "Too many failed authentications from %s; try again in %lld s",
                         http_client_addr(req), seconds);
    else
        http_reply_error(req, 429, "Too many requests from %s; try again in %lld s",
                         http_client_addr(req), seconds);
    return true;
}

http_filter http_ratelimit_filter(http_ratelimit *rl)
{
    return (http_filter){.name = "ratelimit", .request = ratelimit_request, .ctx = rl};
}
