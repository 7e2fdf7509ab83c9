/* reaper.c - periodic expiry of abandoned uploads. */
#include "core/reaper.h"

#include "base/log.h"
#include "base/util.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

struct reaper {
    upload_service *svc;
    double interval;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stopping;
};

static void *reaper_main(void *arg)
{
    reaper *r = arg;
    pthread_mutex_lock(&r->lock);
    while (!r->stopping) {
        pthread_mutex_unlock(&r->lock);
        int expired = 0, pruned = 0, hooks = 0;
        cu_error err;
        if (upload_expire_due(r->svc, &expired, &err) != 0)
            log_error("expiry: %s", err.msg);
        else if (expired)
            log_info("expiry: %d upload(s) removed", expired);
        if (upload_prune(r->svc, &pruned, &hooks, &err) != 0)
            log_error("pruning: %s", err.msg);
        int orphans = 0;
        if (upload_sweep_orphans(r->svc, &orphans, &err) != 0 && err.code != CU_ENOTSUP)
            log_error("sweep: %s", err.msg);
        pthread_mutex_lock(&r->lock);
        struct timespec until = util_deadline_monotonic(r->interval);
        while (!r->stopping && pthread_cond_timedwait(&r->wake, &r->lock, &until) == 0)
            ;
    }
    pthread_mutex_unlock(&r->lock);
    return NULL;
}

reaper *reaper_start(upload_service *svc, double interval_seconds)
{
    reaper *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->svc = svc;
    r->interval = interval_seconds;
    pthread_mutex_init(&r->lock, NULL);
    if (util_cond_init_monotonic(&r->wake) != 0) {
        pthread_mutex_destroy(&r->lock);
        free(r);
        return NULL;
    }
    if (pthread_create(&r->thread, NULL, reaper_main, r) != 0) {
        pthread_cond_destroy(&r->wake);
        pthread_mutex_destroy(&r->lock);
        free(r);
        return NULL;
    }
    return r;
}

void reaper_stop(reaper *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    r->stopping = true;
    pthread_cond_signal(&r->wake);
    pthread_mutex_unlock(&r->lock);
    pthread_join(r->thread, NULL);
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->wake);
    free(r);
}
