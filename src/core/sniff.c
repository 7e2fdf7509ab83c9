/* sniff.c - a pool of libmagic handles. */
#include "core/sniff.h"

#include <assert.h>
#include <magic.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct content_sniffer {
    pthread_mutex_t lock;
    pthread_cond_t freed;
    int n;
    magic_t *handles;
    bool *busy;
};

void sniff_close(content_sniffer *s)
{
    if (!s)
        return;
    for (int i = 0; s->handles && i < s->n; i++)
        if (s->handles[i])
            magic_close(s->handles[i]);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->freed);
    free(s->handles);
    free(s->busy);
    free(s);
}

int sniff_open(int handles, content_sniffer **out, cu_error *err)
{
    assert(handles >= 1);
    *out = NULL;
    content_sniffer *s = calloc(1, sizeof *s);
    if (!s)
        return cu_fail_oom(err);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->freed, NULL);
    s->handles = calloc((size_t)handles, sizeof *s->handles);
    s->busy = calloc((size_t)handles, sizeof *s->busy);
    if (!s->handles || !s->busy) {
        sniff_close(s);
        return cu_fail_oom(err);
    }
    s->n = handles;
    for (int i = 0; i < handles; i++) {
        /* The type only (no charset), and no decompression: libmagic never looks inside a
         * compressed file, let alone starts a program to do so. */
        magic_t m = magic_open(MAGIC_MIME_TYPE | MAGIC_ERROR);
        s->handles[i] = m;
        int rc = m ? 0 : cu_fail_oom(err);
        if (rc == 0 && magic_load(m, NULL) != 0)
            rc = cu_fail(err, CU_EIO, "libmagic cannot load its database: %s",
                         magic_error(m) ? magic_error(m) : "unknown error");
        size_t window = SNIFF_WINDOW;
        if (rc == 0)
            magic_setparam(m, MAGIC_PARAM_BYTES_MAX, &window);
        if (rc) {
            sniff_close(s);
            return rc;
        }
    }
    *out = s;
    return 0;
}

int sniff_type(content_sniffer *s, const void *buf, size_t len, char out[FILETYPE_MAX],
               cu_error *err)
{
    assert(len <= SNIFF_WINDOW);
    pthread_mutex_lock(&s->lock);
    int slot = -1;
    for (;;) {
        for (int i = 0; i < s->n && slot < 0; i++)
            if (!s->busy[i])
                slot = i;
        if (slot >= 0)
            break;
        pthread_cond_wait(&s->freed, &s->lock);
    }
    s->busy[slot] = true;
    pthread_mutex_unlock(&s->lock);

    magic_t m = s->handles[slot];
    const char *found = magic_buffer(m, len ? buf : "", len);
    int rc = 0;
    if (!found)
        rc = cu_fail(err, CU_EIO, "libmagic: %s", magic_error(m) ? magic_error(m) : "no answer");
    /* Anything libmagic answers that is not a media type counts as unidentified. */
    else if (filetype_essence(found, strlen(found), out) != 0)
        snprintf(out, FILETYPE_MAX, "application/octet-stream");

    pthread_mutex_lock(&s->lock);
    s->busy[slot] = false;
    pthread_cond_signal(&s->freed);
    pthread_mutex_unlock(&s->lock);
    return rc;
}
