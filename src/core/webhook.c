/* webhook.c - building, signing and delivering completion webhooks. */
#include "core/webhook.h"

#include "core/filename.h"
#include "base/log.h"
#include "base/util.h"

#include <curl/curl.h>
#include <jansson.h>
#include <math.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

struct webhook_deliverer {
    const cu_config *cfg;
    meta_t *meta;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool kicked;
    bool stopping; /* guarded by lock; also read racily by the curl progress callback */
};

static bool is_stopping(webhook_deliverer *d)
{
    pthread_mutex_lock(&d->lock);
    bool stop = d->stopping;
    pthread_mutex_unlock(&d->lock);
    return stop;
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

/* One attempt; returns 0 when the receiver answered 2xx, else fills why. */
static int deliver(webhook_deliverer *d, const meta_webhook *w, char *why, size_t why_len)
{
    CURL *curl = curl_easy_init();
    if (!curl) {
        snprintf(why, why_len, "curl unavailable");
        return -1;
    }
    struct curl_slist *headers = NULL;
    char line[256];
    headers = curl_slist_append(headers, "Content-Type: application/json");
    headers = curl_slist_append(headers, "X-Webhook-Event: upload.complete");
    snprintf(line, sizeof line, "X-Webhook-Delivery: %s-%lld", w->upload_id, (long long)w->id);
    headers = curl_slist_append(headers, line);
    if (d->cfg->webhook_secret) {
        char sig[72];
        webhook_signature(d->cfg->webhook_secret, w->body, sig);
        snprintf(line, sizeof line, "X-Webhook-Signature: %s", sig);
        headers = curl_slist_append(headers, line);
    }
    curl_easy_setopt(curl, CURLOPT_URL, w->url);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, w->body);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "chunked-uploader/" CU_VERSION);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard_cb);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, progress_cb);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, d);
    CURLcode res = curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    if (res != CURLE_OK) {
        snprintf(why, why_len, "%s", curl_easy_strerror(res));
        return -1;
    }
    if (status < 200 || status > 299) {
        snprintf(why, why_len, "receiver answered HTTP %ld", status);
        return -1;
    }
    return 0;
}

static void deliver_due(webhook_deliverer *d)
{
    meta_webhook *due = NULL;
    int n = 0;
    cu_error err;
    if (meta_webhooks_due(d->meta, (int64_t)util_now(), 16, &due, &n, &err) != 0) {
        log_error("webhooks: %s", err.msg);
        meta_webhooks_free(due, n);
        return;
    }
    for (int i = 0; i < n && !is_stopping(d); i++) {
        meta_webhook *w = &due[i];
        char why[256] = "";
        bool ok = deliver(d, w, why, sizeof why) == 0;
        if (!ok && is_stopping(d))
            break; /* cut short by shutdown: not the receiver's fault, not a try */
        int attempts = w->attempts + 1;
        bool give_up = !ok && attempts >= d->cfg->webhook_max_attempts;
        double next = util_now() + webhook_backoff(d->cfg->webhook_retry_base_seconds, attempts);
        if (ok)
            log_info("webhook for upload %s delivered to %s (try %d)", w->upload_id, w->url,
                     attempts);
        else if (give_up)
            log_error("webhook for upload %s to %s: giving up after %d tries: %s", w->upload_id,
                      w->url, attempts, why);
        else
            log_warn("webhook for upload %s to %s failed (try %d of %d, next in %.0f s): %s",
                     w->upload_id, w->url, attempts, d->cfg->webhook_max_attempts,
                     next - util_now(), why);
        /* Round up: a retry must never run before its backoff has passed. */
        if (meta_webhook_result(d->meta, w->id, ok, (int64_t)ceil(next), give_up, ok ? NULL : why,
                                &err) != 0)
            log_error("webhooks: %s", err.msg);
    }
    meta_webhooks_free(due, n);
}

static void *deliverer_main(void *arg)
{
    webhook_deliverer *d = arg;
    for (;;) {
        deliver_due(d);
        /* Sleep until the next delivery is due, a new one is queued, or shutdown. */
        int64_t when = 0;
        double wait = 60;
        if (meta_webhook_next_due(d->meta, &when, NULL) == 0)
            wait = (double)when - util_now();
        pthread_mutex_lock(&d->lock);
        if (wait > 0 && !d->kicked && !d->stopping) {
            if (wait > 60)
                wait = 60;
            struct timespec until = util_deadline_monotonic(wait);
            pthread_cond_timedwait(&d->wake, &d->lock, &until);
        }
        d->kicked = false;
        bool stop = d->stopping;
        pthread_mutex_unlock(&d->lock);
        if (stop)
            return NULL;
    }
}

webhook_deliverer *webhook_start(const cu_config *cfg, meta_t *meta)
{
    webhook_deliverer *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->cfg = cfg;
    d->meta = meta;
    pthread_mutex_init(&d->lock, NULL);
    util_cond_init_monotonic(&d->wake);
    if (pthread_create(&d->thread, NULL, deliverer_main, d) != 0) {
        free(d);
        return NULL;
    }
    return d;
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
    if (!d)
        return;
    pthread_mutex_lock(&d->lock);
    d->stopping = true;
    pthread_cond_signal(&d->wake);
    pthread_mutex_unlock(&d->lock);
    pthread_join(d->thread, NULL);
    pthread_mutex_destroy(&d->lock);
    pthread_cond_destroy(&d->wake);
    free(d);
}
