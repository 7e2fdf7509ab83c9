/* webhook.c - building, signing and delivering completion webhooks.
 *
 * Where a webhook may go. webhook_url comes from clients and the server faces the internet,
 * so a URL must not make it reach its own loopback, the network behind it or a cloud's
 * metadata service (169.254.169.254). The check is on the address each connection is about
 * to be made to, in libcurl's open-socket callback, after DNS: a name that resolves inward,
 * or that rebinds between an earlier look-up and the connection, is refused as surely as
 * an address literal, and there is no second resolution to race. Redirects are not
 * followed and no proxy is used, since either would connect somewhere else for us. An
 * address literal is refused at init already, so the client learns at once; names are
 * left to delivery because what they resolve to changes.
 *
 * Who delivers. One dispatcher thread pages through the due deliveries and hands each to
 * one of WEBHOOK_CONCURRENCY workers, at most WEBHOOK_PER_HOST to one host, claiming it in
 * the outbox first: the claim (a lease longer than a try can last) keeps every other
 * worker and process off it while it is in flight, and a delivery whose process died falls
 * due again when the lease runs out. With one thread and a 30 s timeout, two receivers
 * that never answered held an unrelated delivery back by 60 s; now they hold at most
 * 2 × WEBHOOK_PER_HOST workers for WEBHOOK_TIMEOUT_SECONDS.
 *
 * Whom a worker goes to. The per-host limit is keyed by the URL's host text, so one client
 * with many names (or many receivers that never answer) could still take every worker. The
 * deliverer remembers how each host fared lately (HOST_MEMORY entries, for an hour): one
 * worker is kept for hosts whose last try succeeded, and hosts whose last try failed share
 * at most half of the workers, so a receiver that works gets its webhook within seconds
 * however many bad ones are queued; hosts not seen lately take what is left. */
#include "core/webhook.h"

#include "base/log.h"
#include "base/netaddr.h"
#include "base/util.h"
#include "core/filename.h"

#include <assert.h>
#include <ctype.h>
#include <curl/curl.h>
#include <idn2.h>
#include <jansson.h>
#include <math.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define URL_MAX 2048
/* How long a claim outlives the longest try: time to record the result (the database may
 * be busy for up to 10 s) and a safety margin. */
#define LEASE_MARGIN_SECONDS 30
/* Due deliveries read per query while dispatching. */
#define DUE_PAGE 64

char *webhook_payload(const meta_upload *u, const char *storage_backend)
{
    size_t dir_len;
    char completed[21];
    util_rfc3339(u->completed_at, completed);
    json_t *obj =
        json_pack("{s:s, s:s, s:s, s:I, s:s, s:s, s:s}", "event", "upload.complete", "file_id",
                  u->id, "filename", filename_split(u->filename, &dir_len), "total_size",
                  (json_int_t)u->total_size, "final_path", u->final_path ? u->final_path : "",
                  "storage_backend", storage_backend, "completed_at", completed);
    char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    return text;
}

void webhook_signature(const char *secret, const char *body, char out[72])
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)body, strlen(body), mac,
         &len);
    memcpy(out, "sha256=", 7);
    util_hex(mac, len, out + 7);
}

double webhook_backoff(double base_seconds, int attempts)
{
    double delay = base_seconds * pow(2, attempts > 0 ? attempts - 1 : 0);
    return delay > 3600 ? 3600 : delay;
}

/* ---- where a webhook may go ---- */

/* A webhook_url taken apart as libcurl will use it. */
typedef struct {
    CURLU *url;     /* what the transfer uses (CURLOPT_CURLU) */
    char host[256]; /* lowercase ASCII (an IDN as libcurl converts it), no trailing dot */
    bool is_literal;
    netaddr addr; /* when is_literal */
} target;

static void target_clear(target *t)
{
    curl_url_cleanup(t->url);
    t->url = NULL;
}

/* An international host name in ASCII, the way libcurl converts it before resolving
 * (IDNA 2008 non-transitional, then transitional): "１２７.０.０.１" is "127.0.0.1". */
static int host_to_ascii(const char *host, char *out, size_t cap, cu_error *err)
{
    char *ace = NULL;
    int rc = idn2_lookup_u8((const uint8_t *)host, (uint8_t **)&ace,
                            IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL);
    if (rc != IDN2_OK)
        rc = idn2_lookup_u8((const uint8_t *)host, (uint8_t **)&ace, IDN2_TRANSITIONAL);
    if (rc == IDN2_MALLOC)
        return cu_fail_oom(err);
    if (rc != IDN2_OK || strlen(ace) >= cap) {
        idn2_free(ace);
        return cu_fail(err, CU_EINVAL, "webhook_url's host is not a valid domain name");
    }
    snprintf(out, cap, "%s", ace);
    idn2_free(ace);
    return 0;
}

static int target_parse(const char *url, target *t, cu_error *err)
{
    memset(t, 0, sizeof *t);
    size_t len = strlen(url);
    if ((strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) || len > URL_MAX ||
        len <= 8)
        return cu_fail(err, CU_EINVAL, "webhook_url must be an http:// or https:// URL");
    for (const unsigned char *p = (const unsigned char *)url; *p; p++)
        if (*p <= 0x20 || *p == 0x7f)
            return cu_fail(err, CU_EINVAL, "webhook_url must be an http:// or https:// URL");
    if (!(t->url = curl_url()))
        return cu_fail_oom(err);
    char *host = NULL;
    CURLUcode uc = curl_url_set(t->url, CURLUPART_URL, url, 0);
    if (uc == CURLUE_OK)
        uc = curl_url_get(t->url, CURLUPART_HOST, &host, 0);
    if (uc != CURLUE_OK) {
        target_clear(t);
        return uc == CURLUE_OUT_OF_MEMORY
                   ? cu_fail_oom(err)
                   : cu_fail(err, CU_EINVAL, "webhook_url is not a valid URL: %s",
                             curl_url_strerror(uc));
    }
    int rc = 0;
    bool ascii = true;
    for (const char *p = host; *p; p++)
        ascii &= (unsigned char)*p < 0x80;
    if (!ascii)
        rc = host_to_ascii(host, t->host, sizeof t->host, err);
    else if (strlen(host) >= sizeof t->host)
        rc = cu_fail(err, CU_EINVAL, "webhook_url's host is too long");
    else
        snprintf(t->host, sizeof t->host, "%s", host);
    curl_free(host);
    if (rc) {
        target_clear(t);
        return rc;
    }
    size_t hlen = strlen(t->host);
    for (size_t i = 0; i < hlen; i++)
        t->host[i] = (char)tolower((unsigned char)t->host[i]);
    if (hlen > 1 && t->host[hlen - 1] == '.') /* "127.0.0.1." names 127.0.0.1 too */
        t->host[--hlen] = '\0';
    /* libcurl has already rewritten the IPv4 forms it knows ("0x7f000001", "127.1") as a
     * dotted quad; netaddr_parse reads every form the resolver would (and IPv6 in
     * brackets). */
    t->is_literal = netaddr_parse(t->host, &t->addr) == 0;
    return 0;
}

/* Whether a may be connected to: 0, or -1 with the reason in why. */
static int address_refused(const netaddr_allowlist *allow, const netaddr *a, char *why,
                           size_t why_len)
{
    const char *what = netaddr_special(a);
    if (!what || netaddr_allowlist_has_addr(allow, a))
        return 0;
    char text[NETADDR_TEXT_LEN];
    netaddr_format(a, text);
    snprintf(why, why_len, "%s is not a public address (%s)", text, what);
    return -1;
}

int webhook_url_check(const cu_config *cfg, const char *url, cu_error *err)
{
    target t;
    int rc = target_parse(url, &t, err);
    char why[128];
    if (rc == 0 && t.is_literal &&
        address_refused(cfg->webhook_allowlist, &t.addr, why, sizeof why) != 0)
        rc = cu_fail(err, CU_EINVAL,
                     "webhook_url's host %s; webhooks go only to public addresses unless the "
                     "server's WEBHOOK_ALLOWED_HOSTS lists it",
                     why);
    target_clear(&t);
    return rc;
}

char *webhook_url_for_log(const char *url, char *out, size_t cap)
{
    /* The userinfo is whatever precedes the last '@' before the path, query or fragment,
     * the way libcurl reads it; taking the last '@' hides too much rather than too little. */
    const char *scheme_end = strstr(url, "://");
    const char *authority = scheme_end ? scheme_end + 3 : url;
    size_t authority_len = strcspn(authority, "/?#");
    const char *at = NULL;
    for (const char *p = authority; p < authority + authority_len; p++)
        if (*p == '@')
            at = p;
    char plain[URL_MAX + 16];
    if (at)
        snprintf(plain, sizeof plain, "%.*s***%s", (int)(authority - url), url, at);
    else
        snprintf(plain, sizeof plain, "%s", url);
    return log_escape(plain, out, cap);
}

/* The open-socket callback's view of one try: which addresses it refused. */
typedef struct {
    const netaddr_allowlist *allow;
    bool name_allowed; /* the URL's host is a name WEBHOOK_ALLOWED_HOSTS lists */
    int refused, opened;
    char why[128]; /* the last refusal */
} connect_guard;

/* Called by libcurl in place of socket() for every address it is about to connect to
 * (each of a name's addresses in turn): the one place that sees where the bytes go. */
static curl_socket_t guarded_socket(void *ctx, curlsocktype purpose, struct curl_sockaddr *a)
{
    connect_guard *g = ctx;
    struct sockaddr_storage ss;
    netaddr to;
    memset(&ss, 0, sizeof ss);
    memcpy(&ss, &a->addr, a->addrlen < sizeof ss ? a->addrlen : sizeof ss);
    if (purpose != CURLSOCKTYPE_IPCXN ||
        netaddr_from_sockaddr((struct sockaddr *)&ss, a->addrlen, &to) != 0) {
        g->refused++;
        snprintf(g->why, sizeof g->why, "not an IP connection");
        return CURL_SOCKET_BAD;
    }
    if (!g->name_allowed && address_refused(g->allow, &to, g->why, sizeof g->why) != 0) {
        g->refused++;
        return CURL_SOCKET_BAD; /* libcurl goes on to the name's next address, if any */
    }
    g->opened++;
    return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

/* ---- the deliverer ---- */

/* One delivery handed to a worker: claimed in the outbox until lease. */
typedef struct {
    meta_webhook w;
    target to; /* to.url NULL: the URL did not parse (parse_error says why) */
    char parse_error[sizeof(((cu_error *)0)->msg)];
    int64_t lease;
    int load;   /* index of its host in the deliverer's hosts */
    int health; /* its host's standing when it was dispatched (HOST_*) */
} job;

/* How a host fared lately. */
enum { HOST_GOOD, HOST_UNKNOWN, HOST_FAILING };

/* Hosts remembered, and for how long a try's outcome counts. */
#define HOST_MEMORY 256
#define HOST_MEMORY_SECONDS 3600.0

typedef struct {
    char host[256];
    double ok_at, failed_at; /* monotonic seconds of the last success / failure; 0: none */
} host_record;

/* Deliveries in flight to one host. */
typedef struct {
    char host[256];
    int inflight; /* 0: the entry is free */
} host_load;

struct webhook_deliverer {
    const cu_config *cfg;
    meta_t *meta;
    pthread_t dispatcher;
    bool dispatcher_started;
    pthread_t *workers;
    int nworkers;         /* started */
    pthread_mutex_t lock; /* guards what follows */
    pthread_cond_t wake;  /* the dispatcher's: a delivery queued, a worker free, or stop */
    pthread_cond_t work;  /* the workers': a job queued, or stop */
    bool kicked;
    atomic_bool stopping; /* set under lock; also read without it by curl's callbacks */
    job **queue;          /* a ring of cfg->webhook_concurrency */
    int queue_head, queue_len;
    int inflight;     /* jobs queued or running: at most cfg->webhook_concurrency */
    host_load *hosts; /* cfg->webhook_concurrency entries, one per host in flight */
    int inflight_untrusted, inflight_failing; /* of inflight: to hosts not HOST_GOOD, FAILING */
    host_record history[HOST_MEMORY];
};

static bool is_stopping(webhook_deliverer *d)
{
    return atomic_load(&d->stopping);
}

static void job_free(job *j)
{
    if (!j)
        return;
    target_clear(&j->to);
    free(j->w.url);
    free(j->w.body);
    free(j);
}

/* host's record (under lock), or NULL when it has none. */
static host_record *history_find(webhook_deliverer *d, const char *host)
{
    for (int i = 0; i < HOST_MEMORY; i++)
        if (d->history[i].host[0] && !strcmp(d->history[i].host, host))
            return &d->history[i];
    return NULL;
}

/* How host fared lately (under lock). */
static int host_health(webhook_deliverer *d, const char *host, double now)
{
    const host_record *r = history_find(d, host);
    if (!r)
        return HOST_UNKNOWN;
    if (r->failed_at > r->ok_at && now - r->failed_at < HOST_MEMORY_SECONDS)
        return HOST_FAILING;
    if (r->ok_at > 0 && r->ok_at >= r->failed_at && now - r->ok_at < HOST_MEMORY_SECONDS)
        return HOST_GOOD;
    return HOST_UNKNOWN;
}

/* Remembers how a try to host ended (under lock); the host heard from longest ago gives
 * its entry up when all are taken. */
static void history_note(webhook_deliverer *d, const char *host, bool ok, double now)
{
    host_record *r = history_find(d, host);
    if (!r) {
        r = &d->history[0];
        for (int i = 0; i < HOST_MEMORY && r->host[0]; i++) {
            host_record *c = &d->history[i];
            double last = c->ok_at > c->failed_at ? c->ok_at : c->failed_at;
            double oldest = r->ok_at > r->failed_at ? r->ok_at : r->failed_at;
            if (!c->host[0] || last < oldest)
                r = c;
        }
        memset(r, 0, sizeof *r);
        snprintf(r->host, sizeof r->host, "%s", host);
    }
    if (ok)
        r->ok_at = now;
    else
        r->failed_at = now;
}

/* Takes a place for one more delivery to host, whose standing is health (under lock): its
 * index in hosts, or -1 when every worker is taken, host has WEBHOOK_PER_HOST in flight
 * already, or its kind of host has its share: one worker is kept for HOST_GOOD hosts, and
 * HOST_FAILING ones get at most half. */
static int load_take(webhook_deliverer *d, const char *host, int health)
{
    int capacity = d->cfg->webhook_concurrency, free_entry = -1;
    if (d->inflight >= capacity)
        return -1;
    int untrusted_cap = capacity > 1 ? capacity - 1 : 1;
    int failing_cap = capacity / 2 > 0 ? capacity / 2 : 1;
    if (health != HOST_GOOD && d->inflight_untrusted >= untrusted_cap)
        return -1;
    if (health == HOST_FAILING && d->inflight_failing >= failing_cap)
        return -1;
    for (int i = 0; i < capacity; i++) {
        host_load *h = &d->hosts[i];
        if (h->inflight == 0) {
            if (free_entry < 0)
                free_entry = i;
        } else if (!strcmp(h->host, host)) {
            if (h->inflight >= d->cfg->webhook_per_host)
                return -1;
            h->inflight++;
            d->inflight++;
            d->inflight_untrusted += health != HOST_GOOD;
            d->inflight_failing += health == HOST_FAILING;
            return i;
        }
    }
    /* Fewer deliveries than entries are in flight, and each busy entry holds one at least. */
    assert(free_entry >= 0);
    /* A host name longer than the entry is cut: two such hosts may share a limit. */
    snprintf(d->hosts[free_entry].host, sizeof d->hosts[free_entry].host, "%s", host);
    d->hosts[free_entry].inflight = 1;
    d->inflight++;
    d->inflight_untrusted += health != HOST_GOOD;
    d->inflight_failing += health == HOST_FAILING;
    return free_entry;
}

static void load_put(webhook_deliverer *d, const job *j)
{
    assert(d->hosts[j->load].inflight > 0 && d->inflight > 0);
    d->hosts[j->load].inflight--;
    d->inflight--;
    d->inflight_untrusted -= j->health != HOST_GOOD;
    d->inflight_failing -= j->health == HOST_FAILING;
    assert(d->inflight_untrusted >= 0 && d->inflight_failing >= 0);
}

static int progress_cb(void *ctx, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t e)
{
    (void)a, (void)b, (void)c, (void)e;
    return is_stopping(ctx) ? 1 : 0; /* non-zero aborts the transfer */
}

static size_t discard_cb(char *p, size_t size, size_t n, void *ctx)
{
    (void)p, (void)ctx;
    return size * n;
}

static struct curl_slist *add_header(struct curl_slist *list, const char *line, bool *oom)
{
    struct curl_slist *grown = *oom ? NULL : curl_slist_append(list, line);
    *oom |= !grown;
    return grown ? grown : list;
}

/* One try; returns 0 when the receiver answered 2xx, else fills why, and sets *permanent
 * when no later try can do better (the address is refused, the URL is not one). */
static int deliver(webhook_deliverer *d, job *j, char *why, size_t why_len, bool *permanent)
{
    const cu_config *cfg = d->cfg;
    const meta_webhook *w = &j->w;
    *permanent = false;
    if (!j->to.url) {
        snprintf(why, why_len, "%s", j->parse_error);
        *permanent = true;
        return -1;
    }
    CURL *curl = curl_easy_init();
    struct curl_slist *headers = NULL;
    bool oom = !curl;
    char line[256];
    headers = add_header(headers, "Content-Type: application/json", &oom);
    headers = add_header(headers, "X-Webhook-Event: upload.complete", &oom);
    snprintf(line, sizeof line, "X-Webhook-Delivery: %s-%lld", w->upload_id, (long long)w->id);
    headers = add_header(headers, line, &oom);
    if (cfg->webhook_secret) {
        char sig[72];
        webhook_signature(cfg->webhook_secret, w->body, sig);
        snprintf(line, sizeof line, "X-Webhook-Signature: %s", sig);
        headers = add_header(headers, line, &oom);
    }
    if (oom) {
        curl_slist_free_all(headers);
        curl_easy_cleanup(curl);
        snprintf(why, why_len, "out of memory");
        return -1;
    }
    connect_guard guard = {.allow = cfg->webhook_allowlist,
                           .name_allowed =
                               !j->to.is_literal &&
                               netaddr_allowlist_has_name(cfg->webhook_allowlist, j->to.host)};
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(curl, CURLOPT_CURLU, j->to.url);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    /* A redirect could point anywhere, inward included: a 3xx is a failed try. */
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    /* A proxy from the environment (http_proxy) would connect for us, past the guard. */
    curl_easy_setopt(curl, CURLOPT_PROXY, "");
    curl_easy_setopt(curl, CURLOPT_OPENSOCKETFUNCTION, guarded_socket);
    curl_easy_setopt(curl, CURLOPT_OPENSOCKETDATA, &guard);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, w->body);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "chunked-uploader/" CU_VERSION);
    /* Whole milliseconds, at least 1: libcurl reads 0 as "no limit". */
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)ceil(cfg->webhook_connect_timeout_seconds * 1000));
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)ceil(cfg->webhook_timeout_seconds * 1000));
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard_cb);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, progress_cb);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, d);
    CURLcode res = curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    if (res != CURLE_OK && guard.refused > 0 && guard.opened == 0) {
        /* Every address was refused: the same policy refuses it on every later try. */
        snprintf(why, why_len, "refused: %s (WEBHOOK_ALLOWED_HOSTS can allow it)", guard.why);
        *permanent = true;
        return -1;
    }
    if (res != CURLE_OK) {
        snprintf(why, why_len, "%s", errbuf[0] ? errbuf : curl_easy_strerror(res));
        return -1;
    }
    if (status < 200 || status > 299) {
        snprintf(why, why_len, "receiver answered HTTP %ld", status);
        return -1;
    }
    return 0;
}

/* Runs one claimed delivery and records what happened; returns whether it was delivered. */
static bool run_job(webhook_deliverer *d, job *j)
{
    const cu_config *cfg = d->cfg;
    const meta_webhook *w = &j->w;
    char why[sizeof(((cu_error *)0)->msg)] = "", url[512], why_log[1024];
    bool permanent = false;
    bool ok = deliver(d, j, why, sizeof why, &permanent) == 0;
    webhook_url_for_log(w->url, url, sizeof url);
    log_escape(why, why_log, sizeof why_log);
    cu_error err;
    if (!ok && is_stopping(d)) {
        /* Cut short by shutdown: not the receiver's fault, not a try. */
        log_info("webhook for upload %s to %s: cut short by shutdown, tried again at the next "
                 "start",
                 w->upload_id, url);
        if (meta_webhook_release(d->meta, w->id, j->lease, &err) != 0)
            log_error("webhooks: %s", err.msg);
        return false;
    }
    int attempts = w->attempts + 1;
    bool give_up = !ok && (permanent || attempts >= cfg->webhook_max_attempts);
    double next = util_now() + webhook_backoff(cfg->webhook_retry_base_seconds, attempts);
    if (ok)
        log_info("webhook for upload %s delivered to %s (try %d)", w->upload_id, url, attempts);
    else if (permanent)
        log_error("webhook for upload %s to %s: giving up at try %d: %s", w->upload_id, url,
                  attempts, why_log);
    else if (give_up)
        log_error("webhook for upload %s to %s: giving up after %d tries: %s", w->upload_id, url,
                  attempts, why_log);
    else
        log_warn("webhook for upload %s to %s failed (try %d of %d, next in %.0f s): %s",
                 w->upload_id, url, attempts, cfg->webhook_max_attempts, next - util_now(),
                 why_log);
    /* Round up: a retry must never run before its backoff has passed. */
    if (meta_webhook_result(d->meta, w->id, j->lease, ok, (int64_t)ceil(next), give_up,
                            ok ? NULL : why, &err) != 0)
        log_error("webhooks: %s", err.msg);
    return ok;
}

static void *worker_main(void *arg)
{
    webhook_deliverer *d = arg;
    pthread_mutex_lock(&d->lock);
    for (;;) {
        while (d->queue_len == 0 && !is_stopping(d))
            pthread_cond_wait(&d->work, &d->lock);
        if (is_stopping(d))
            break; /* jobs still queued are given back by webhook_stop */
        job *j = d->queue[d->queue_head];
        d->queue_head = (d->queue_head + 1) % d->cfg->webhook_concurrency;
        d->queue_len--;
        pthread_mutex_unlock(&d->lock);
        bool ok = run_job(d, j);
        pthread_mutex_lock(&d->lock);
        if (!is_stopping(d))
            history_note(d, j->to.host, ok, util_monotonic());
        load_put(d, j);
        /* A worker is free: the dispatcher may start what it had to leave. */
        d->kicked = true;
        pthread_cond_signal(&d->wake);
        pthread_mutex_unlock(&d->lock);
        job_free(j);
        pthread_mutex_lock(&d->lock);
    }
    pthread_mutex_unlock(&d->lock);
    return NULL;
}

/* Hands w to a worker if one is free and its host is below its limit, claiming it first.
 * Takes w's url and body when it does. */
static void dispatch_one(webhook_deliverer *d, meta_webhook *w, int64_t now)
{
    job *j = calloc(1, sizeof *j);
    if (!j) {
        log_error("webhooks: out of memory");
        return;
    }
    cu_error err;
    if (target_parse(w->url, &j->to, &err) != 0) /* an outbox row older than the checks */
        snprintf(j->parse_error, sizeof j->parse_error, "%s", err.msg);
    pthread_mutex_lock(&d->lock);
    j->health = host_health(d, j->to.host, util_monotonic());
    j->load = load_take(d, j->to.host, j->health);
    pthread_mutex_unlock(&d->lock);
    if (j->load < 0) { /* a worker finishing wakes the dispatcher to try again */
        job_free(j);
        return;
    }
    j->lease = now + (int64_t)ceil(d->cfg->webhook_timeout_seconds) + LEASE_MARGIN_SECONDS;
    int attempts = 0;
    if (meta_webhook_claim(d->meta, w->id, now, j->lease, &attempts, &err) != 0) {
        if (err.code != CU_ECONFLICT) /* a conflict: another process has it */
            log_error("webhooks: %s", err.msg);
        pthread_mutex_lock(&d->lock);
        load_put(d, j);
        pthread_mutex_unlock(&d->lock);
        job_free(j);
        return;
    }
    j->w = *w;
    j->w.attempts = attempts;
    j->w.claimed_until = j->lease;
    w->url = w->body = NULL;
    pthread_mutex_lock(&d->lock);
    int capacity = d->cfg->webhook_concurrency;
    assert(d->queue_len < capacity); /* each queued job holds one of the places in flight */
    d->queue[(d->queue_head + d->queue_len) % capacity] = j;
    d->queue_len++;
    pthread_cond_signal(&d->work);
    pthread_mutex_unlock(&d->lock);
}

static bool worker_free(webhook_deliverer *d)
{
    pthread_mutex_lock(&d->lock);
    bool free_worker = d->inflight < d->cfg->webhook_concurrency;
    pthread_mutex_unlock(&d->lock);
    return free_worker;
}

/* Dispatches what is due at now, page by page: deliveries to a host at its limit are
 * passed over (a worker finishing brings the dispatcher back), so they cannot stand in
 * front of other hosts' however many they are. */
static void dispatch_due(webhook_deliverer *d, int64_t now)
{
    meta_webhook cursor = {0};
    bool first = true, more = true;
    while (more && worker_free(d) && !is_stopping(d)) {
        meta_webhook *due = NULL;
        int n = 0;
        cu_error err;
        if (meta_webhooks_due(d->meta, now, first ? NULL : &cursor, DUE_PAGE, &due, &n, &err) !=
            0) {
            log_error("webhooks: %s", err.msg);
            return;
        }
        first = false;
        for (int i = 0; i < n && !is_stopping(d); i++)
            dispatch_one(d, &due[i], now);
        more = n == DUE_PAGE;
        if (n) {
            cursor.id = due[n - 1].id;
            cursor.next_attempt_at = due[n - 1].next_attempt_at;
        }
        meta_webhooks_free(due, n);
    }
}

static void *dispatcher_main(void *arg)
{
    webhook_deliverer *d = arg;
    for (;;) {
        int64_t now = (int64_t)util_now();
        dispatch_due(d, now);
        /* Sleep until the next delivery falls due, one is queued, a worker is free, or
         * shutdown. What is due at now and was passed over waits for a worker. */
        int64_t when = 0;
        double wait = 60;
        if (meta_webhook_next_due(d->meta, now, &when, NULL) == 0)
            wait = (double)when - util_now();
        pthread_mutex_lock(&d->lock);
        if (wait > 0 && !d->kicked && !is_stopping(d)) {
            if (wait > 60)
                wait = 60;
            struct timespec until = util_deadline_monotonic(wait);
            pthread_cond_timedwait(&d->wake, &d->lock, &until);
        }
        d->kicked = false;
        bool stop = is_stopping(d);
        pthread_mutex_unlock(&d->lock);
        if (stop)
            return NULL;
    }
}

/* Stops and joins whatever threads run, gives back the claims of jobs no worker started,
 * and frees d. */
static void deliverer_free(webhook_deliverer *d)
{
    pthread_mutex_lock(&d->lock);
    atomic_store(&d->stopping, true);
    pthread_cond_broadcast(&d->work);
    pthread_cond_signal(&d->wake);
    pthread_mutex_unlock(&d->lock);
    if (d->dispatcher_started)
        pthread_join(d->dispatcher, NULL);
    for (int i = 0; i < d->nworkers; i++)
        pthread_join(d->workers[i], NULL);
    for (; d->queue_len > 0; d->queue_len--) {
        job *j = d->queue[d->queue_head];
        d->queue_head = (d->queue_head + 1) % d->cfg->webhook_concurrency;
        cu_error err;
        if (meta_webhook_release(d->meta, j->w.id, j->lease, &err) != 0)
            log_error("webhooks: %s", err.msg);
        job_free(j);
    }
    pthread_mutex_destroy(&d->lock);
    pthread_cond_destroy(&d->wake);
    pthread_cond_destroy(&d->work);
    free(d->workers);
    free(d->queue);
    free(d->hosts);
    free(d);
}

webhook_deliverer *webhook_start(const cu_config *cfg, meta_t *meta)
{
    assert(cfg->webhook_concurrency > 0 && cfg->webhook_per_host > 0);
    webhook_deliverer *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->cfg = cfg;
    d->meta = meta;
    atomic_init(&d->stopping, false);
    size_t n = (size_t)cfg->webhook_concurrency;
    d->workers = calloc(n, sizeof *d->workers);
    d->queue = calloc(n, sizeof *d->queue);
    d->hosts = calloc(n, sizeof *d->hosts);
    if (!d->workers || !d->queue || !d->hosts || pthread_mutex_init(&d->lock, NULL) != 0)
        goto err_alloc;
    if (util_cond_init_monotonic(&d->wake) != 0)
        goto err_mutex;
    if (pthread_cond_init(&d->work, NULL) != 0)
        goto err_wake;
    /* From here deliverer_free takes down whatever was started. */
    bool ok = true;
    for (size_t i = 0; ok && i < n; i++) {
        ok = pthread_create(&d->workers[i], NULL, worker_main, d) == 0;
        d->nworkers += ok;
    }
    if (ok)
        ok = d->dispatcher_started = pthread_create(&d->dispatcher, NULL, dispatcher_main, d) == 0;
    if (!ok) {
        deliverer_free(d);
        return NULL;
    }
    return d;

err_wake:
    pthread_cond_destroy(&d->wake);
err_mutex:
    pthread_mutex_destroy(&d->lock);
err_alloc:
    free(d->workers);
    free(d->queue);
    free(d->hosts);
    free(d);
    return NULL;
}

void webhook_kick(void *ctx)
{
    webhook_deliverer *d = ctx;
    pthread_mutex_lock(&d->lock);
    d->kicked = true;
    pthread_cond_signal(&d->wake);
    pthread_mutex_unlock(&d->lock);
}

void webhook_on_event(void *ctx, const upload_event *ev)
{
    if (ev->kind == UPLOAD_EVENT_FINISHED && ev->webhook_queued)
        webhook_kick(ctx);
}

void webhook_stop(webhook_deliverer *d)
{
    if (d)
        deliverer_free(d);
}
