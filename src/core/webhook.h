/* webhook.h - completion webhooks: the payload, where a webhook may go, and the deliverer.
 *
 * Deliveries live in the metadata store's outbox (queued in the same transaction that
 * marks an upload complete), so none is lost when the server stops or crashes; the
 * deliverer retries with exponential backoff until the receiver answers 2xx or the tries
 * run out. It runs WEBHOOK_CONCURRENCY deliveries at once, at most WEBHOOK_PER_HOST to one
 * host, so a receiver that never answers holds back nobody else's. A webhook reaches only
 * public addresses (and what WEBHOOK_ALLOWED_HOSTS lists), checked on the address each
 * connection is made to. */
#ifndef CU_WEBHOOK_H
#define CU_WEBHOOK_H

#include "base/config.h"
#include "core/upload.h"
#include "meta/meta.h"

/* The upload.complete payload for u (malloc'ed JSON text). */
char *webhook_payload(const meta_upload *u, const char *storage_backend);
/* "sha256=<hex HMAC-SHA256(secret, body)>" into out[72]. */
void webhook_signature(const char *secret, const char *body, char out[72]);
/* Seconds to wait after the attempts'th failed try. */
double webhook_backoff(double base_seconds, int attempts);

/* Checks a webhook_url a client gave at init: an http:// or https:// URL libcurl parses, of
 * at most 2048 bytes, and, when its host is an address literal in any form libc or libcurl
 * reads as one (decimal, hex, octal, short like 127.1, bracketed IPv6 with a zone,
 * fullwidth digits), a public address or one WEBHOOK_ALLOWED_HOSTS lists. A host name is
 * checked at each delivery instead, where it resolves. Returns 0 or CU_EINVAL with a
 * message for the client (which never repeats the URL's credentials). */
int webhook_url_check(const cu_config *cfg, const char *url, cu_error *err);
/* url as a log line may show it: the credentials of "user:password@" replaced by "***",
 * then escaped with log_escape. Returns out. */
char *webhook_url_for_log(const char *url, char *out, size_t cap);

typedef struct webhook_deliverer webhook_deliverer;

/* Starts the deliverer (a dispatcher and cfg->webhook_concurrency workers); NULL when it
 * cannot. cfg and meta must outlive it. */
webhook_deliverer *webhook_start(const cu_config *cfg, meta_t *meta);
/* Wakes the deliverer (a delivery was queued). ctx is the webhook_deliverer. */
void webhook_kick(void *ctx);
/* An engine observer (ctx: the webhook_deliverer): wakes the deliverer when an upload
 * finished with a delivery queued. */
void webhook_on_event(void *ctx, const upload_event *ev);
/* Stops the threads: an attempt in flight is cut short, not counted as a try, and its
 * claim given back, so the next start takes it at once. */
void webhook_stop(webhook_deliverer *d);

#endif
