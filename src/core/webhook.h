/* webhook.h - completion webhooks: the payload, and the deliverer thread.
 *
 * Deliveries live in the metadata store's outbox (queued in the same transaction that
 * marks an upload complete), so none is lost when the server stops or crashes; the
 * deliverer retries with exponential backoff until the receiver answers 2xx or the tries
 * run out. */
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

typedef struct webhook_deliverer webhook_deliverer;

/* Starts the deliverer thread; NULL when it cannot. */
webhook_deliverer *webhook_start(const cu_config *cfg, meta_t *meta);
/* Wakes the deliverer (a delivery was queued). ctx is the webhook_deliverer. */
void webhook_kick(void *ctx);
/* An engine observer (ctx: the webhook_deliverer): wakes the deliverer when an upload
 * finished with a delivery queued. */
void webhook_on_event(void *ctx, const upload_event *ev);
/* Stops the thread (an attempt in flight is cut short and retried after a restart). */
void webhook_stop(webhook_deliverer *d);

#endif
