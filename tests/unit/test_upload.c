/* test_upload.c - the engine, with a real SQLite store and local storage (wrapped in the
 * fault layer of fault.h, which does nothing until a test asks it to fail). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/config.h"
#include "base/log.h"
#include "base/util.h"
#include "base/filetype.h"
#include "core/sniff.h"
#include "core/upload.h"
#include "fault.h"
#include "unit_helpers.h"

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHUNK 1024

typedef struct {
    upload_event_kind kinds[256];
    int slots[256];
    bool webhook[256];
    int n;
} event_log;

typedef struct {
    char *dir;
    char *root;
    cu_config cfg;
    fault_ctl faults;
    meta_t *meta;
    storage_t *storage;
    upload_locks *locks; /* when a test brings its own */
    upload_service *svc;
    content_sniffer *sniffer; /* when a test turns ALLOWED_TYPES on */
    event_log events;
    int staged_before; /* staging files before a fault scenario ran */
} fixture;

static void on_event(void *ctx, const upload_event *ev)
{
    event_log *log = ctx;
    if (log->n < 256) {
        log->kinds[log->n] = ev->kind;
        log->slots[log->n] = ev->slot;
        log->webhook[log->n] = ev->webhook_queued;
        log->n++;
    }
}

static void service_start(fixture *f)
{
    upload_deps deps = {.cfg = &f->cfg,
                        .meta = f->meta,
                        .storage = f->storage,
                        .locks = f->locks,
                        .sniffer = f->sniffer};
    f->svc = upload_service_new(&deps);
    assert_non_null(f->svc);
    upload_observer o = {.on_event = on_event, .ctx = &f->events};
    assert_int_equal(upload_observe(f->svc, &o), 0);
}

static int setup(void **state)
{
    log_set_level(LOG_ERROR + 1); /* expected failures are not news */
    fixture *f = calloc(1, sizeof *f);
    if (!f || !(f->dir = tmpdir_make()))
        return -1;
    f->root = path_join(f->dir, "store");
    char *db = path_join(f->dir, "meta.db");
    const var env[] = {{"API_KEY", "key"},
                       {"JWT_SECRET", "upload-test-secret-0123456789abcdef"},
                       {"DURABILITY", "none"},
                       {NULL, NULL}};
    char cfg_err[256];
    if (config_load(&f->cfg, table_lookup, (void *)env, NULL, cfg_err, sizeof cfg_err) != 0) {
        print_error("config_load: %s\n", cfg_err);
        return -1;
    }
    f->cfg.chunk_size = CHUNK;
    f->cfg.max_parts = 100;
    f->cfg.max_file_size = 0;
    f->cfg.upload_ttl_seconds = 3600;
    cu_error err = {0};
    meta_t *meta;
    storage_t *storage;
    int rc = meta_sqlite_open(db, false, &meta, &err);
    free(db);
    if (rc == 0)
        rc = storage_local_open(f->root, false, &storage, &err);
    if (rc != 0) {
        print_error("setup: %s\n", err.msg);
        return -1;
    }
    f->meta = fault_meta_wrap(meta, &f->faults);
    f->storage = fault_storage_wrap(storage, &f->faults);
    service_start(f);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    upload_service_free(f->svc);
    sniff_close(f->sniffer);
    upload_locks_destroy(f->locks);
    storage_destroy(f->storage);
    meta_close(f->meta);
    config_free(&f->cfg);
    tmpdir_remove(f->dir);
    free(f->root);
    free(f);
    return 0;
}

static void fill(unsigned char *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (unsigned char)((i * 31 + seed * 17 + (i >> 7)) & 0xff);
}

static void create_slots(fixture *f, const char *name, int64_t total, const char *webhook,
                         const char *checksum, meta_upload *out)
{
    upload_create_request req = {.protocol = "seed",
                                 .owner = "key",
                                 .filename = name,
                                 .filename_len = strlen(name),
                                 .total_size = total,
                                 .layout = UPLOAD_LAYOUT_SLOTS,
                                 .webhook_url = webhook,
                                 .checksum_sha256 = checksum};
    cu_error err;
    assert_cu_ok(upload_create(f->svc, &req, out, &err), err);
}

static void create_stream(fixture *f, const char *name, int64_t total, bool partial,
                          meta_upload *out)
{
    upload_create_request req = {.protocol = "tus",
                                 .owner = "key",
                                 .filename = name,
                                 .filename_len = strlen(name),
                                 .total_size = total,
                                 .layout = UPLOAD_LAYOUT_STREAM,
                                 .partial = partial};
    cu_error err;
    assert_cu_ok(upload_create(f->svc, &req, out, &err), err);
}

/* Writes slot n of u from data (the whole file's bytes); returns the first failing step's
 * code (0 when stored). */
static int write_slot(fixture *f, const meta_upload *u, int n, const unsigned char *data,
                      upload_write_result *out, cu_error *err)
{
    int64_t size = upload_slot_size(u, n);
    upload_write_request req = {.id = u->id, .slot = n, .length = size};
    upload_write *w = NULL;
    memset(err, 0, sizeof *err);
    int rc = upload_write_begin(f->svc, &req, &w, err);
    if (rc)
        return rc;
    const unsigned char *p = data + (int64_t)n * u->chunk_size;
    int64_t half = size / 2;
    rc = upload_write_data(w, p, (size_t)half, err);
    if (rc == 0)
        rc = upload_write_data(w, p + half, (size_t)(size - half), err);
    if (rc) {
        upload_write_abort(w);
        return rc;
    }
    upload_write_result ignored;
    rc = upload_write_end(w, out ? out : &ignored, err);
    if (rc == 0 && !out)
        upload_write_result_clear(&ignored);
    return rc;
}

static void write_all_slots(fixture *f, const meta_upload *u, const unsigned char *data)
{
    cu_error err;
    for (int i = u->total_parts - 1; i >= 0; i--)
        assert_cu_ok(write_slot(f, u, i, data, NULL, &err), err);
}

/* Appends len bytes of data at offset as one write. */
static int append(fixture *f, const char *id, int64_t offset, const unsigned char *data, size_t len,
                  upload_write_result *out, cu_error *err)
{
    upload_write_request req = {.id = id, .offset = offset, .length = (int64_t)len};
    upload_write *w = NULL;
    memset(err, 0, sizeof *err);
    int rc = upload_write_begin(f->svc, &req, &w, err);
    if (rc)
        return rc;
    rc = upload_write_data(w, data, len, err);
    if (rc) {
        upload_write_abort(w);
        return rc;
    }
    upload_write_result ignored;
    rc = upload_write_end(w, out ? out : &ignored, err);
    if (rc == 0 && !out)
        upload_write_result_clear(&ignored);
    return rc;
}

static meta_upload reload(fixture *f, const char *id)
{
    meta_upload u;
    cu_error err;
    assert_cu_ok(upload_get(f->svc, id, NULL, &u, &err), err);
    return u;
}

static char *staging_of(fixture *f, const char *id)
{
    char rel[128];
    snprintf(rel, sizeof rel, ".staging/%s.data", id);
    return path_join(f->root, rel);
}

static void assert_file(const char *path, const unsigned char *data, size_t len)
{
    size_t got_len = 0;
    unsigned char *got = file_read(path, &got_len);
    assert_non_null(got);
    assert_int_equal(got_len, len);
    assert_memory_equal(got, data, len);
    free(got);
}

static int count_events(const fixture *f, upload_event_kind kind)
{
    int n = 0;
    for (int i = 0; i < f->events.n; i++)
        n += f->events.kinds[i] == kind;
    return n;
}

/* ---- slots ---- */

static void test_slot_arithmetic(void **state)
{
    (void)state;
    assert_int_equal(upload_slot_count(0, 10, false), 0);
    assert_int_equal(upload_slot_count(10, 10, false), 1);
    assert_int_equal(upload_slot_count(11, 10, false), 2);
    /* flow.js: the last chunk takes the remainder (up to twice the size less one). */
    assert_int_equal(upload_slot_count(19, 10, true), 1);
    assert_int_equal(upload_slot_count(20, 10, true), 2);
    assert_int_equal(upload_slot_count(5, 10, true), 1);
    meta_upload u = {
        .layout = UPLOAD_LAYOUT_SLOTS, .total_size = 2500, .chunk_size = 1000, .total_parts = 2};
    assert_int_equal(upload_slot_size(&u, 0), 1000);
    assert_int_equal(upload_slot_size(&u, 1), 1500);
    u.total_parts = 3;
    assert_int_equal(upload_slot_size(&u, 2), 500);
}

static void test_create_and_status(void **state)
{
    fixture *f = *state;
    meta_upload u;
    create_slots(f, "videos/2024/movie.mp4", 3 * CHUNK - 72, "https://example.com/hook", NULL, &u);
    assert_true(util_is_uuid(u.id));
    assert_string_equal(u.protocol, "seed");
    assert_string_equal(u.owner, "key");
    assert_int_equal(u.total_parts, 3);
    assert_int_equal(u.chunk_size, CHUNK);
    assert_int_equal(u.state, UPLOAD_PENDING);
    assert_true(u.expires_at - u.created_at >= 3599);
    char *staging = staging_of(f, u.id);
    struct stat st;
    assert_int_equal(stat(staging, &st), 0);
    assert_int_equal(st.st_size, 3 * CHUNK - 72); /* preallocated */
    free(staging);
    assert_int_equal(f->events.n, 1);
    assert_int_equal(f->events.kinds[0], UPLOAD_EVENT_CREATED);

    meta_upload got;
    meta_part *parts = NULL;
    int n = 0;
    cu_error err;
    assert_cu_ok(upload_status(f->svc, u.id, NULL, &got, &parts, &n, &err), err);
    assert_int_equal(n, 3);
    assert_int_equal(parts[2].size, CHUNK - 72);
    assert_string_equal(got.webhook_url, "https://example.com/hook");
    meta_parts_free(parts, n);
    meta_upload_clear(&got);
    /* Another owner does not see it; the unbound caller (the API key) does. */
    assert_cu_fails(upload_status(f->svc, u.id, "someone-else", &got, &parts, &n, &err),
                    CU_ENOTFOUND, err);
    assert_cu_fails(upload_get(f->svc, u.id, "someone-else", &got, &err), CU_ENOTFOUND, err);
    assert_cu_ok(upload_get(f->svc, u.id, "key", &got, &err), err);
    meta_upload_clear(&got);
    meta_upload_clear(&u);
}

static void test_create_refusals(void **state)
{
    fixture *f = *state;
    cu_error err;
    meta_upload u;
    upload_create_request req = {.protocol = "seed", .layout = UPLOAD_LAYOUT_SLOTS};
#define REFUSE(name, total, code)                                                                  \
    do {                                                                                           \
        req.filename = name;                                                                       \
        req.filename_len = strlen(name);                                                           \
        req.total_size = total;                                                                    \
        assert_cu_fails(upload_create(f->svc, &req, &u, &err), code, err);                         \
        assert_cu_fails(upload_validate(f->svc, &req, &err), code, err);                           \
    } while (0)
    REFUSE("../x", 10, CU_EINVAL);
    REFUSE("", 10, CU_EINVAL);
    REFUSE("ok.bin", -5, CU_EINVAL);
    REFUSE("ok.bin", -1, CU_EINVAL);              /* only a stream may leave its size for later */
    REFUSE("ok.bin", 100 * CHUNK + 1, CU_EINVAL); /* 101 parts of at most 100 */
    REFUSE("ok.bin", INT64_MAX, CU_EINVAL);       /* no overflow on the way */
    assert_non_null(strstr(err.msg, "largest file is"));
    f->cfg.max_file_size = 50;
    REFUSE("ok.bin", 51, CU_ETOOLARGE);
    f->cfg.max_file_size = 0;
    req.webhook_url = "ftp://example.com/";
    REFUSE("ok.bin", 10, CU_EINVAL);
    req.webhook_url = NULL;
    req.checksum_sha256 = "abc";
    REFUSE("ok.bin", 10, CU_EINVAL);
    req.checksum_sha256 = NULL;
#undef REFUSE
    char *staging = path_join(f->root, ".staging");
    assert_int_equal(dir_count(staging), 0); /* nothing staged */
    free(staging);
    assert_int_equal(f->events.n, 0);
}

static void test_slots_any_order_then_complete(void **state)
{
    fixture *f = *state;
    enum { TOTAL = 3 * CHUNK - 72 };
    unsigned char data[TOTAL];
    fill(data, TOTAL, 1);
    meta_upload u;
    create_slots(f, "dir/a.bin", TOTAL, "https://example.com/hook", NULL, &u);
    upload_write_result res;
    cu_error err;
    assert_cu_ok(write_slot(f, &u, 2, data, &res, &err), err);
    assert_int_equal(res.slot, 2);
    assert_int_equal(res.bytes, CHUNK - 72);
    assert_int_equal(res.upload.uploaded_parts, 1);
    char want[65];
    util_sha256_hex(data + 2 * CHUNK, CHUNK - 72, want);
    assert_string_equal(res.checksum_sha256, want);
    upload_write_result_clear(&res);
    assert_cu_ok(write_slot(f, &u, 0, data, NULL, &err), err);
    meta_upload out;
    assert_cu_fails(upload_complete(f->svc, u.id, NULL, &out, &err), CU_EINVAL, err);
    assert_non_null(strstr(err.msg, "2/3"));
    assert_cu_ok(write_slot(f, &u, 1, data, NULL, &err), err);
    assert_cu_ok(upload_complete(f->svc, u.id, NULL, &out, &err), err);
    assert_int_equal(out.state, UPLOAD_COMPLETE);
    assert_file(out.final_path, data, TOTAL);
    char *staging = staging_of(f, u.id);
    assert_false(path_exists(staging)); /* moved, not copied */
    free(staging);
    meta_upload_clear(&out);
    /* Idempotent. */
    assert_cu_ok(upload_complete(f->svc, u.id, NULL, &out, &err), err);
    assert_int_equal(out.state, UPLOAD_COMPLETE);
    meta_upload_clear(&out);
    assert_int_equal(count_events(f, UPLOAD_EVENT_PROGRESS), 3);
    assert_int_equal(count_events(f, UPLOAD_EVENT_FINISHED), 1);
    assert_true(f->events.webhook[f->events.n - 1]); /* with its webhook queued */
    meta_webhook *hooks = NULL;
    int n = 0;
    assert_cu_ok(meta_webhooks_due(f->meta, INT64_MAX, NULL, 10, &hooks, &n, &err), err);
    assert_int_equal(n, 1);
    assert_non_null(strstr(hooks[0].body, u.id));
    meta_webhooks_free(hooks, n);
    meta_upload_clear(&u);
}

static void test_slot_write_refusals(void **state)
{
    fixture *f = *state;
    enum { TOTAL = 2 * CHUNK };
    unsigned char data[TOTAL];
    fill(data, TOTAL, 2);
    meta_upload u;
    create_slots(f, "r.bin", TOTAL, NULL, NULL, &u);
    cu_error err;
    upload_write *w = NULL;
    upload_write_request req = {.id = u.id, .slot = 2, .length = CHUNK};
    assert_cu_fails(upload_write_begin(f->svc, &req, &w, &err), CU_EINVAL, err); /* range */
    req.slot = 0;
    req.length = CHUNK + 1;
    assert_cu_fails(upload_write_begin(f->svc, &req, &w, &err), CU_ETOOLARGE, err);
    req.length = CHUNK - 1;
    assert_cu_fails(upload_write_begin(f->svc, &req, &w, &err), CU_EINVAL, err);
    req.id = "00000000-0000-4000-8000-000000000000";
    req.length = CHUNK;
    assert_cu_fails(upload_write_begin(f->svc, &req, &w, &err), CU_ENOTFOUND, err);

    /* A body longer than its slot is cut at the first extra byte. */
    req.id = u.id;
    req.length = -1; /* chunked: the size shows only as it arrives */
    assert_cu_ok(upload_write_begin(f->svc, &req, &w, &err), err);
    assert_cu_ok(upload_write_data(w, data, CHUNK, &err), err);
    assert_cu_fails(upload_write_data(w, data, 1, &err), CU_ETOOLARGE, err);
    upload_write_abort(w);
    /* A short one is refused at its end and the slot stays pending. */
    assert_cu_ok(upload_write_begin(f->svc, &req, &w, &err), err);
    assert_cu_ok(upload_write_data(w, data, 10, &err), err);
    upload_write_result res;
    assert_cu_fails(upload_write_end(w, &res, &err), CU_EINVAL, err);
    /* A digest that does not match: refused, still pending. */
    req.digest_alg = UPLOAD_DIGEST_SHA256;
    memset(req.digest, 0xab, sizeof req.digest);
    assert_cu_ok(upload_write_begin(f->svc, &req, &w, &err), err);
    assert_cu_ok(upload_write_data(w, data, CHUNK, &err), err);
    assert_cu_fails(upload_write_end(w, &res, &err), CU_ECHECKSUM, err);
    assert_non_null(strstr(err.msg, "Checksum mismatch for part 0"));
    /* And with the right one it goes through. */
    SHA256(data, CHUNK, req.digest);
    assert_cu_ok(upload_write_begin(f->svc, &req, &w, &err), err);
    assert_cu_ok(upload_write_data(w, data, CHUNK, &err), err);
    assert_cu_ok(upload_write_end(w, &res, &err), err);
    upload_write_result_clear(&res);
    /* Stored once: the next write of the slot is a conflict. */
    req.digest_alg = UPLOAD_DIGEST_NONE;
    assert_cu_fails(upload_write_begin(f->svc, &req, &w, &err), CU_ECONFLICT, err);
    assert_non_null(strstr(err.msg, "already uploaded"));
    /* Two writers of one slot at once: the second is refused while the first holds it. */
    req.slot = 1;
    upload_write *w2 = NULL;
    assert_cu_ok(upload_write_begin(f->svc, &req, &w, &err), err);
    assert_cu_fails(upload_write_begin(f->svc, &req, &w2, &err), CU_ECONFLICT, err);
    assert_non_null(strstr(err.msg, "being uploaded"));
    upload_write_abort(w);
    assert_cu_ok(upload_write_begin(f->svc, &req, &w2, &err), err); /* released */
    upload_write_abort(w2);
    /* Nothing may be written once the upload is cancelled. */
    assert_cu_ok(upload_cancel(f->svc, u.id, NULL, &err), err);
    assert_cu_fails(upload_write_begin(f->svc, &req, &w, &err), CU_ECONFLICT, err);
    meta_upload_clear(&u);
}

/* A lock that makes the second taker of a claim wait until the first has let it go: the
 * window in which a request that read the slot's state before claiming it would overwrite
 * what the first one stored. */
typedef struct {
    upload_locks base;
    upload_locks *inner;
    pthread_mutex_t m;
    pthread_cond_t c;
    int acquired, released;
} slow_locks;

static int slow_acquire(upload_locks *base, const char *id, int slot,
                        const upload_stall_rule *takeover, upload_claim **out, cu_error *err)
{
    slow_locks *l = (slow_locks *)base;
    pthread_mutex_lock(&l->m);
    if (++l->acquired == 2)
        while (l->released < 1)
            pthread_cond_wait(&l->c, &l->m);
    pthread_mutex_unlock(&l->m);
    return upload_lock_acquire(l->inner, id, slot, takeover, out, err);
}

static bool slow_hold(upload_locks *base, upload_claim *c)
{
    return upload_lock_hold(((slow_locks *)base)->inner, c);
}

static void slow_unhold(upload_locks *base, upload_claim *c, int64_t bytes)
{
    upload_lock_unhold(((slow_locks *)base)->inner, c, bytes);
}

static void slow_fence(upload_locks *base, upload_claim *c, void (*fn)(void *), void *ctx)
{
    upload_lock_fence(((slow_locks *)base)->inner, c, fn, ctx);
}

static void slow_release(upload_locks *base, upload_claim *c)
{
    slow_locks *l = (slow_locks *)base;
    upload_lock_release(l->inner, c);
    pthread_mutex_lock(&l->m);
    l->released++;
    pthread_cond_broadcast(&l->c);
    pthread_mutex_unlock(&l->m);
}

static void slow_destroy(upload_locks *base)
{
    slow_locks *l = (slow_locks *)base;
    upload_locks_destroy(l->inner);
    pthread_mutex_destroy(&l->m);
    pthread_cond_destroy(&l->c);
    free(l);
}

static const struct upload_lock_ops slow_ops = {.acquire = slow_acquire,
                                                .hold = slow_hold,
                                                .unhold = slow_unhold,
                                                .fence = slow_fence,
                                                .release = slow_release,
                                                .destroy = slow_destroy};

typedef struct {
    fixture *f;
    const meta_upload *u;
    const unsigned char *data;
    int rc;
    cu_error err;
} racer;

static void *race_second(void *arg)
{
    racer *r = arg;
    r->rc = write_slot(r->f, r->u, 0, r->data, NULL, &r->err);
    return NULL;
}

static void test_claim_comes_before_the_state_read(void **state)
{
    fixture *f = *state;
    upload_service_free(f->svc);
    slow_locks *l = calloc(1, sizeof *l);
    l->base.ops = &slow_ops;
    l->inner = upload_locks_memory();
    pthread_mutex_init(&l->m, NULL);
    pthread_cond_init(&l->c, NULL);
    f->locks = &l->base;
    service_start(f);

    unsigned char first[CHUNK], second[CHUNK];
    fill(first, CHUNK, 3);
    fill(second, CHUNK, 4);
    meta_upload u;
    create_slots(f, "race.bin", CHUNK, NULL, NULL, &u);
    /* The first request claims the slot and is writing it ... */
    upload_write_request req = {.id = u.id, .slot = 0, .length = CHUNK};
    upload_write *w = NULL;
    cu_error err;
    assert_cu_ok(upload_write_begin(f->svc, &req, &w, &err), err);
    assert_cu_ok(upload_write_data(w, first, CHUNK, &err), err);
    /* ... when a retry arrives; its claim waits until the first is done. */
    racer r = {.f = f, .u = &u, .data = second};
    pthread_t t;
    pthread_create(&t, NULL, race_second, &r);
    usleep(100000);
    upload_write_result res;
    assert_cu_ok(upload_write_end(w, &res, &err), err);
    upload_write_result_clear(&res);
    pthread_join(t, NULL);
    /* The retry found the slot stored: it wrote nothing. */
    assert_int_equal(r.rc, CU_ECONFLICT);
    assert_non_null(strstr(r.err.msg, "already uploaded"));
    meta_upload out;
    assert_cu_ok(upload_complete(f->svc, u.id, NULL, &out, &err), err);
    assert_file(out.final_path, first, CHUNK);
    meta_upload_clear(&out);
    meta_upload_clear(&u);
}

/* Many writers racing for one slot with different bytes: exactly one stores it, and the
 * file holds the bytes whose checksum was recorded. */
typedef struct {
    fixture *f;
    const meta_upload *u;
    unsigned char data[CHUNK];
    int rc;
    char sum[65];
} stress_racer;

static void *stress_write(void *arg)
{
    stress_racer *r = arg;
    upload_write_result res;
    cu_error err;
    r->rc = write_slot(r->f, r->u, 0, r->data, &res, &err);
    if (r->rc == 0) {
        memcpy(r->sum, res.checksum_sha256, sizeof r->sum);
        upload_write_result_clear(&res);
    }
    return NULL;
}

static void test_racing_writers_store_once(void **state)
{
    fixture *f = *state;
    enum { RACERS = 4, ROUNDS = 40 };
    for (int round = 0; round < ROUNDS; round++) {
        meta_upload u;
        create_slots(f, "stress.bin", CHUNK, NULL, NULL, &u);
        stress_racer r[RACERS];
        pthread_t t[RACERS];
        for (int i = 0; i < RACERS; i++) {
            memset(&r[i], 0, sizeof r[i]);
            r[i].f = f;
            r[i].u = &u;
            fill(r[i].data, CHUNK, (unsigned)(round * RACERS + i));
            pthread_create(&t[i], NULL, stress_write, &r[i]);
        }
        int stored = 0, winner = -1;
        for (int i = 0; i < RACERS; i++) {
            pthread_join(t[i], NULL);
            if (r[i].rc == 0) {
                stored++;
                winner = i;
            } else {
                assert_int_equal(r[i].rc, CU_ECONFLICT);
            }
        }
        assert_int_equal(stored, 1);
        meta_part part;
        cu_error err;
        assert_cu_ok(upload_slot_get(f->svc, u.id, 0, &part, &err), err);
        assert_string_equal(part.checksum_sha256, r[winner].sum);
        free(part.storage_ref);
        meta_upload out;
        assert_cu_ok(upload_complete(f->svc, u.id, NULL, &out, &err), err);
        assert_file(out.final_path, r[winner].data, CHUNK);
        meta_upload_clear(&out);
        meta_upload_clear(&u);
    }
}

/* complete called several times at once: every caller gets the same 200, the file moves
 * once, one webhook is queued. */
typedef struct {
    fixture *f;
    const char *id;
    int rc;
    cu_error err;
    char final_path[1024];
} completer;

static void *complete_thread(void *arg)
{
    completer *c = arg;
    meta_upload out;
    c->rc = upload_complete(c->f->svc, c->id, NULL, &out, &c->err);
    if (c->rc == 0) {
        snprintf(c->final_path, sizeof c->final_path, "%s", out.final_path);
        meta_upload_clear(&out);
    }
    return NULL;
}

static void test_concurrent_completions_agree(void **state)
{
    fixture *f = *state;
    unsigned char data[2 * CHUNK];
    fill(data, sizeof data, 12);
    meta_upload u;
    create_slots(f, "twice.bin", sizeof data, "https://example.com/hook", NULL, &u);
    write_all_slots(f, &u, data);
    f->faults.finish_delay_ms = 300; /* the first completion is still moving the file */
    enum { CALLERS = 6 };
    completer c[CALLERS];
    pthread_t t[CALLERS];
    for (int i = 0; i < CALLERS; i++) {
        c[i] = (completer){.f = f, .id = u.id};
        pthread_create(&t[i], NULL, complete_thread, &c[i]);
    }
    for (int i = 0; i < CALLERS; i++)
        pthread_join(t[i], NULL);
    f->faults.finish_delay_ms = 0;
    for (int i = 0; i < CALLERS; i++) {
        if (c[i].rc != 0)
            print_error("caller %d: %d %s\n", i, c[i].rc, c[i].err.msg);
        assert_int_equal(c[i].rc, 0);
        assert_string_equal(c[i].final_path, c[0].final_path);
    }
    assert_file(c[0].final_path, data, sizeof data);
    assert_int_equal(count_events(f, UPLOAD_EVENT_FINISHED), 1);
    meta_webhook *hooks = NULL;
    int n = 0;
    cu_error err;
    assert_cu_ok(meta_webhooks_due(f->meta, INT64_MAX, NULL, 10, &hooks, &n, &err), err);
    assert_int_equal(n, 1);
    meta_webhooks_free(hooks, n);
    meta_upload_clear(&u);
}

/* A writer that sent nothing for PART_STALL_SECONDS gives way to a new request for the same
 * part; it learns so at its next step and writes nothing more. An active one does not. */
static void test_stalled_writer_is_taken_over(void **state)
{
    fixture *f = *state;
    f->cfg.part_stall_seconds = 0.2;
    unsigned char stale[CHUNK], fresh[CHUNK];
    fill(stale, CHUNK, 13);
    fill(fresh, CHUNK, 14);
    meta_upload u;
    create_slots(f, "stall.bin", 2 * CHUNK, NULL, NULL, &u);
    upload_write_request req = {.id = u.id, .slot = 0, .length = CHUNK};
    upload_write *old = NULL, *next = NULL;
    cu_error err;
    assert_cu_ok(upload_write_begin(f->svc, &req, &old, &err), err);
    assert_cu_ok(upload_write_data(old, stale, CHUNK / 2, &err), err);
    /* Still fresh: a second request is refused. */
    assert_cu_fails(upload_write_begin(f->svc, &req, &next, &err), CU_ECONFLICT, err);
    usleep(300000);
    f->faults.fences = 0;
    assert_cu_ok(upload_write_begin(f->svc, &req, &next, &err), err); /* taken over */
    assert_int_equal(f->faults.fences, 1); /* after the old writer's writes in flight landed */
    assert_cu_fails(upload_write_data(old, stale + CHUNK / 2, CHUNK / 2, &err), CU_ECONFLICT, err);
    assert_non_null(strstr(err.msg, "took the upload over"));
    upload_write_abort(old);
    assert_cu_ok(upload_write_data(next, fresh, CHUNK, &err), err);
    upload_write_result res;
    assert_cu_ok(upload_write_end(next, &res, &err), err);
    upload_write_result_clear(&res);
    /* A stalled writer that wakes up at its end records nothing either. */
    req.slot = 1;
    assert_cu_ok(upload_write_begin(f->svc, &req, &old, &err), err);
    assert_cu_ok(upload_write_data(old, stale, CHUNK, &err), err);
    usleep(300000);
    assert_cu_ok(upload_write_begin(f->svc, &req, &next, &err), err);
    assert_cu_fails(upload_write_end(old, &res, &err), CU_ECONFLICT, err);
    assert_cu_ok(upload_write_data(next, fresh, CHUNK, &err), err);
    assert_cu_ok(upload_write_end(next, &res, &err), err);
    upload_write_result_clear(&res);
    meta_upload out;
    assert_cu_ok(upload_complete(f->svc, u.id, NULL, &out, &err), err);
    unsigned char both[2 * CHUNK];
    memcpy(both, fresh, CHUNK);
    memcpy(both + CHUNK, fresh, CHUNK);
    assert_file(out.final_path, both, sizeof both);
    meta_upload_clear(&out);
    meta_upload_clear(&u);

    /* A stream: the stalled write's bytes past the recorded offset are not kept. */
    create_stream(f, "stall-stream.bin", CHUNK, false, &u);
    upload_write_request sreq = {.id = u.id, .offset = 0, .length = -1};
    assert_cu_ok(upload_write_begin(f->svc, &sreq, &old, &err), err);
    assert_cu_ok(upload_write_data(old, stale, 100, &err), err);
    usleep(300000);
    assert_cu_ok(upload_write_begin(f->svc, &sreq, &next, &err), err);
    upload_write_abort(old); /* its client went away now: nothing of it is recorded */
    meta_upload now = reload(f, u.id);
    assert_int_equal(now.durable_offset, 0);
    meta_upload_clear(&now);
    assert_cu_ok(upload_write_data(next, fresh, CHUNK, &err), err);
    assert_cu_ok(upload_write_end(next, &res, &err), err);
    assert_true(res.completed);
    assert_file(res.upload.final_path, fresh, CHUNK);
    upload_write_result_clear(&res);
    meta_upload_clear(&u);
}

/* A holder that trickles (a byte at a time, often enough that it is never idle) is stalled
 * all the same: fewer than PART_STALL_MIN_BYTES in PART_STALL_SECONDS. One that keeps
 * moving enough bytes is never taken over. */
static void test_trickling_writer_is_taken_over(void **state)
{
    fixture *f = *state;
    f->cfg.part_stall_seconds = 0.3;
    f->cfg.part_stall_min_bytes = 64;
    unsigned char data[CHUNK];
    fill(data, CHUNK, 15);
    meta_upload u;
    create_slots(f, "trickle.bin", CHUNK, NULL, NULL, &u);
    upload_write_request req = {.id = u.id, .slot = 0, .length = CHUNK};
    upload_write *steady = NULL, *trickle = NULL, *next = NULL;
    cu_error err;
    /* Steady: 100 bytes every 50 ms, for twice the stall time: never taken over. */
    assert_cu_ok(upload_write_begin(f->svc, &req, &steady, &err), err);
    size_t at = 0;
    for (int i = 0; i < 12; i++, at += 50) {
        assert_cu_ok(upload_write_data(steady, data + at, 50, &err), err);
        usleep(50000);
        assert_cu_fails(upload_write_begin(f->svc, &req, &next, &err), CU_ECONFLICT, err);
    }
    upload_write_abort(steady);
    /* Trickle: a byte every 50 ms is never idle for long, but is taken over. */
    assert_cu_ok(upload_write_begin(f->svc, &req, &trickle, &err), err);
    double t0 = util_monotonic();
    int rc = CU_ECONFLICT;
    for (int i = 0; i < 40 && rc != 0; i++) {
        assert_cu_ok(upload_write_data(trickle, data + i, 1, &err), err);
        usleep(50000);
        rc = upload_write_begin(f->svc, &req, &next, &err);
    }
    assert_cu_ok(rc, err);
    double waited = util_monotonic() - t0;
    assert_true(waited >= 0.3 && waited < 1.0);
    assert_cu_fails(upload_write_data(trickle, data, 1, &err), CU_ECONFLICT, err);
    upload_write_abort(trickle);
    assert_cu_ok(upload_write_data(next, data, CHUNK, &err), err);
    upload_write_result res;
    assert_cu_ok(upload_write_end(next, &res, &err), err);
    upload_write_result_clear(&res);
    meta_upload_clear(&u);
}

/* ---- streams ---- */

static void test_stream_appends_and_completes(void **state)
{
    fixture *f = *state;
    enum { TOTAL = 5000 };
    unsigned char data[TOTAL];
    fill(data, TOTAL, 5);
    meta_upload u;
    create_stream(f, "s/stream.bin", TOTAL, false, &u);
    assert_int_equal(u.layout, UPLOAD_LAYOUT_STREAM);
    assert_int_equal(u.total_parts, 0);
    cu_error err;
    upload_write_result res;
    assert_cu_ok(append(f, u.id, 0, data, 1000, &res, &err), err);
    assert_int_equal(res.upload.durable_offset, 1000);
    assert_false(res.completed);
    upload_write_result_clear(&res);
    /* The client must say where it stands: elsewhere is a conflict. */
    assert_cu_fails(append(f, u.id, 999, data + 999, 10, NULL, &err), CU_ECONFLICT, err);
    assert_cu_fails(append(f, u.id, 1001, data + 1001, 10, NULL, &err), CU_ECONFLICT, err);
    /* Past the declared end. */
    assert_cu_fails(append(f, u.id, 1000, data, TOTAL, NULL, &err), CU_ETOOLARGE, err);
    /* One writer at a time: a second concurrent write is locked out. */
    upload_write_request req = {.id = u.id, .offset = 1000, .length = -1};
    upload_write *w = NULL, *w2 = NULL;
    assert_cu_ok(upload_write_begin(f->svc, &req, &w, &err), err);
    assert_cu_fails(upload_write_begin(f->svc, &req, &w2, &err), CU_ELOCKED, err);
    /* A write cut off mid-body keeps what arrived. */
    assert_cu_ok(upload_write_data(w, data + 1000, 700, &err), err);
    upload_write_abort(w);
    meta_upload now = reload(f, u.id);
    assert_int_equal(now.durable_offset, 1700);
    meta_upload_clear(&now);
    /* A write whose declared digest does not match keeps nothing. */
    req.offset = 1700;
    req.digest_alg = UPLOAD_DIGEST_SHA1;
    memset(req.digest, 0, sizeof req.digest);
    assert_cu_ok(upload_write_begin(f->svc, &req, &w, &err), err);
    assert_cu_ok(upload_write_data(w, data + 1700, 300, &err), err);
    assert_cu_fails(upload_write_end(w, &res, &err), CU_ECHECKSUM, err);
    now = reload(f, u.id);
    assert_int_equal(now.durable_offset, 1700);
    meta_upload_clear(&now);
    /* ... and one whose digest matches (MD5 here) is kept. */
    req.digest_alg = UPLOAD_DIGEST_MD5;
    EVP_Digest(data + 1700, 300, req.digest, NULL, EVP_md5(), NULL);
    assert_cu_ok(upload_write_begin(f->svc, &req, &w, &err), err);
    assert_cu_ok(upload_write_data(w, data + 1700, 300, &err), err);
    assert_cu_ok(upload_write_end(w, &res, &err), err);
    assert_int_equal(res.upload.durable_offset, 2000);
    upload_write_result_clear(&res);
    /* The last write fills it: the upload completes in the same request. */
    assert_cu_ok(append(f, u.id, 2000, data + 2000, TOTAL - 2000, &res, &err), err);
    assert_true(res.completed);
    assert_int_equal(res.upload.state, UPLOAD_COMPLETE);
    assert_file(res.upload.final_path, data, TOTAL);
    upload_write_result_clear(&res);
    assert_cu_fails(append(f, u.id, TOTAL, data, 1, NULL, &err), CU_ECONFLICT, err);
    assert_int_equal(count_events(f, UPLOAD_EVENT_FINISHED), 1);
    meta_upload_clear(&u);
}

static void test_stream_deferred_length(void **state)
{
    fixture *f = *state;
    enum { TOTAL = 3000 };
    unsigned char data[TOTAL];
    fill(data, TOTAL, 6);
    meta_upload u;
    create_stream(f, "deferred.bin", -1, false, &u);
    assert_int_equal(u.total_size, -1);
    cu_error err;
    assert_cu_ok(append(f, u.id, 0, data, 1000, NULL, &err), err);
    meta_upload out;
    assert_cu_fails(upload_complete(f->svc, u.id, NULL, &out, &err), CU_EINVAL, err);
    assert_cu_fails(upload_declare_length(f->svc, u.id, 999, &err), CU_EINVAL, err);
    assert_cu_ok(upload_declare_length(f->svc, u.id, TOTAL, &err), err);
    assert_cu_ok(upload_declare_length(f->svc, u.id, TOTAL, &err), err); /* same again: fine */
    assert_cu_fails(upload_declare_length(f->svc, u.id, TOTAL + 1, &err), CU_ECONFLICT, err);
    upload_write_result res;
    assert_cu_ok(append(f, u.id, 1000, data + 1000, TOTAL - 1000, &res, &err), err);
    assert_true(res.completed);
    assert_file(res.upload.final_path, data, TOTAL);
    assert_null(res.upload.sha256); /* two writes: nobody hashed the whole file */
    upload_write_result_clear(&res);
    meta_upload_clear(&u);

    /* Before its length is known an upload is still held to MAX_FILE_SIZE (and
     * MAX_RESERVED_BYTES): by the declared length, and by the bytes of a body without one. */
    f->cfg.max_file_size = 2500;
    create_stream(f, "capped.bin", -1, false, &u);
    assert_cu_fails(append(f, u.id, 0, data, 2501, NULL, &err), CU_ETOOLARGE, err);
    upload_write_request req = {.id = u.id, .offset = 0, .length = -1};
    upload_write *w;
    assert_cu_ok(upload_write_begin(f->svc, &req, &w, &err), err);
    assert_cu_ok(upload_write_data(w, data, 2000, &err), err);
    assert_cu_fails(upload_write_data(w, data + 2000, 501, &err), CU_ETOOLARGE, err);
    upload_write_abort(w);
    meta_upload now = reload(f, u.id);
    assert_int_equal(now.durable_offset, 2000);
    meta_upload_clear(&now);
    f->cfg.max_file_size = 0;
    f->cfg.max_reserved_bytes = 2100;
    assert_cu_fails(append(f, u.id, 2000, data, 101, NULL, &err), CU_ETOOLARGE, err);
    assert_cu_ok(append(f, u.id, 2000, data + 2000, 100, NULL, &err), err);
    meta_upload_clear(&u);
}

/* A body of unknown length in one write: the length is declared while the write runs, the
 * write's end completes the upload and its digest is recorded as the file's. */
static void test_stream_one_write_records_digest(void **state)
{
    fixture *f = *state;
    enum { TOTAL = 4000 };
    unsigned char data[TOTAL];
    fill(data, TOTAL, 12);
    char want[CU_SHA256_HEX_LEN + 1];
    util_sha256_hex(data, TOTAL, want);
    meta_upload u;
    create_stream(f, "one/write.bin", -1, false, &u);
    upload_write_request req = {.id = u.id, .offset = 0, .length = -1};
    upload_write *w = NULL;
    cu_error err;
    assert_cu_ok(upload_write_begin(f->svc, &req, &w, &err), err);
    assert_cu_ok(upload_write_data(w, data, 1500, &err), err);
    assert_cu_ok(upload_write_data(w, data + 1500, TOTAL - 1500, &err), err);
    assert_cu_ok(upload_declare_length(f->svc, u.id, TOTAL, &err), err);
    upload_write_result res;
    assert_cu_ok(upload_write_end(w, &res, &err), err);
    assert_true(res.completed);
    assert_int_equal(res.upload.state, UPLOAD_COMPLETE);
    assert_string_equal(res.checksum_sha256, want);
    assert_non_null(res.upload.sha256);
    assert_string_equal(res.upload.sha256, want);
    assert_file(res.upload.final_path, data, TOTAL);
    upload_write_result_clear(&res);
    meta_upload got;
    assert_cu_ok(upload_file_get(f->svc, u.id, NULL, &got, &err), err);
    assert_string_equal(got.sha256, want);
    meta_upload_clear(&got);
    /* A file of declared digest and one write: the digest is checked without reading the file
     * back, and a wrong one leaves the upload pending. */
    char wrong[CU_SHA256_HEX_LEN + 1];
    memset(wrong, 'a', CU_SHA256_HEX_LEN);
    wrong[CU_SHA256_HEX_LEN] = '\0';
    upload_create_request cr = {.protocol = "tus",
                                .filename = "one/declared.bin",
                                .filename_len = strlen("one/declared.bin"),
                                .total_size = TOTAL,
                                .layout = UPLOAD_LAYOUT_STREAM,
                                .checksum_sha256 = wrong};
    meta_upload d;
    assert_cu_ok(upload_create(f->svc, &cr, &d, &err), err);
    assert_cu_fails(append(f, d.id, 0, data, TOTAL, NULL, &err), CU_ECHECKSUM, err);
    meta_upload now = reload(f, d.id);
    assert_int_equal(now.state, UPLOAD_PENDING);
    meta_upload_clear(&now);
    meta_upload_clear(&d);
    cr.checksum_sha256 = want;
    cr.filename = "one/declared2.bin";
    cr.filename_len = strlen(cr.filename);
    assert_cu_ok(upload_create(f->svc, &cr, &d, &err), err);
    assert_cu_ok(append(f, d.id, 0, data, TOTAL, &res, &err), err);
    assert_true(res.completed);
    assert_string_equal(res.upload.sha256, want);
    upload_write_result_clear(&res);
    meta_upload_clear(&d);
    meta_upload_clear(&u);
}

static void test_concatenation(void **state)
{
    fixture *f = *state;
    enum { A = 1500, B = 2048, C = 7 };
    unsigned char data[A + B + C];
    fill(data, sizeof data, 7);
    meta_upload p[3];
    const int sizes[3] = {A, B, C};
    int at = 0;
    const char *ids[3];
    cu_error err;
    for (int i = 0; i < 3; i++) {
        create_stream(f, "", sizes[i], true, &p[i]);
        ids[i] = p[i].id;
        upload_write_result res;
        assert_cu_ok(append(f, p[i].id, 0, data + at, (size_t)sizes[i], &res, &err), err);
        assert_true(res.completed); /* a partial completes staged, as a source */
        assert_null(strstr(res.upload.final_path ? res.upload.final_path : "", "files"));
        upload_write_result_clear(&res);
        at += sizes[i];
    }
    /* A partial upload is not a file. */
    meta_upload out;
    assert_cu_fails(upload_file_get(f->svc, p[0].id, NULL, &out, &err), CU_ENOTFOUND, err);
    upload_create_request req = {.protocol = "tus",
                                 .owner = "key",
                                 .filename = "joined.bin",
                                 .filename_len = 10,
                                 .webhook_url = "https://example.com/hook"};
    assert_cu_ok(upload_concat(f->svc, &req, ids, 3, &out, &err), err);
    assert_int_equal(out.state, UPLOAD_COMPLETE);
    assert_int_equal(out.total_size, A + B + C);
    assert_file(out.final_path, data, sizeof data);
    meta_upload got = reload(f, out.id);
    assert_non_null(got.concat_of);
    assert_non_null(strstr(got.concat_of, p[1].id));
    meta_upload_clear(&got);
    /* The pieces are gone from storage and from view. */
    for (int i = 0; i < 3; i++) {
        char *staging = staging_of(f, p[i].id);
        assert_false(path_exists(staging));
        free(staging);
        got = reload(f, p[i].id);
        assert_int_equal(got.state, UPLOAD_DELETED);
        meta_upload_clear(&got);
    }
    meta_upload again;
    assert_cu_fails(upload_concat(f->svc, &req, ids, 3, &again, &err), CU_EINVAL, err);
    /* Only complete partial uploads can be joined. */
    meta_upload unfinished, whole;
    create_stream(f, "", 100, true, &unfinished);
    create_slots(f, "whole.bin", 10, NULL, NULL, &whole);
    const char *bad1[] = {unfinished.id};
    assert_cu_fails(upload_concat(f->svc, &req, bad1, 1, &again, &err), CU_EINVAL, err);
    assert_non_null(strstr(err.msg, "not complete"));
    const char *bad2[] = {whole.id};
    assert_cu_fails(upload_concat(f->svc, &req, bad2, 1, &again, &err), CU_EINVAL, err);
    assert_non_null(strstr(err.msg, "not a partial"));
    meta_upload_clear(&unfinished);
    meta_upload_clear(&whole);
    meta_upload_clear(&out);
    for (int i = 0; i < 3; i++)
        meta_upload_clear(&p[i]);
}

/* A complete partial upload is a piece waiting for its concatenation: it can be terminated,
 * and it does not outlive its expiry. */
static void test_partial_upload_ends(void **state)
{
    fixture *f = *state;
    unsigned char data[300];
    fill(data, sizeof data, 8);
    cu_error err;
    meta_upload kept, dropped, stale;
    create_stream(f, "", 100, true, &dropped);
    assert_cu_ok(append(f, dropped.id, 0, data, 100, NULL, &err), err);
    assert_cu_ok(upload_cancel(f->svc, dropped.id, NULL, &err), err);
    meta_upload now = reload(f, dropped.id);
    assert_int_equal(now.state, UPLOAD_CANCELLED);
    meta_upload_clear(&now);
    char *staging = staging_of(f, dropped.id);
    assert_false(path_exists(staging));
    free(staging);
    assert_cu_fails(upload_cancel(f->svc, dropped.id, NULL, &err), CU_ECONFLICT, err);
    /* A complete file is not cancelled: it is deleted as a file. */
    meta_upload whole;
    create_stream(f, "whole.bin", 10, false, &whole);
    assert_cu_ok(append(f, whole.id, 0, data, 10, NULL, &err), err);
    assert_cu_fails(upload_cancel(f->svc, whole.id, NULL, &err), CU_ECONFLICT, err);

    f->cfg.upload_ttl_seconds = 1;
    create_stream(f, "", 100, true, &stale);
    f->cfg.upload_ttl_seconds = 3600;
    create_stream(f, "", 100, true, &kept);
    assert_cu_ok(append(f, stale.id, 0, data, 100, NULL, &err), err);
    assert_cu_ok(append(f, kept.id, 0, data + 100, 100, NULL, &err), err);
    sleep(2);
    /* Past its expiry a piece is gone at once, reaped or not. */
    meta_upload out;
    meta_part *parts = NULL;
    int n = 0;
    assert_cu_fails(upload_status(f->svc, stale.id, NULL, &out, &parts, &n, &err), CU_EGONE, err);
    upload_create_request req = {
        .protocol = "tus", .owner = "key", .filename = "j.bin", .filename_len = 5};
    const char *ids[] = {kept.id, stale.id};
    assert_cu_fails(upload_concat(f->svc, &req, ids, 2, &out, &err), CU_EINVAL, err);
    assert_non_null(strstr(err.msg, "expired"));
    int expired = -1;
    assert_cu_ok(upload_expire_due(f->svc, &expired, &err), err);
    assert_int_equal(expired, 1);
    now = reload(f, stale.id);
    assert_int_equal(now.state, UPLOAD_EXPIRED);
    meta_upload_clear(&now);
    staging = staging_of(f, stale.id);
    assert_false(path_exists(staging));
    free(staging);
    /* The piece still in time is untouched and joins as before. */
    assert_cu_ok(upload_concat(f->svc, &req, ids, 1, &out, &err), err);
    assert_file(out.final_path, data + 100, 100);
    meta_upload_clear(&out);
    meta_upload_clear(&whole);
    meta_upload_clear(&kept);
    meta_upload_clear(&dropped);
    meta_upload_clear(&stale);
}

/* ---- finished files ---- */

static void test_files(void **state)
{
    fixture *f = *state;
    unsigned char data[3000];
    fill(data, sizeof data, 8);
    meta_upload files[4];
    const char *names[4] = {"a/one.bin", "a/b/two.bin", "three.bin", "a/four.bin"};
    cu_error err;
    for (int i = 0; i < 4; i++) {
        create_slots(f, names[i], 1000 + i, NULL, NULL, &files[i]);
        write_all_slots(f, &files[i], data);
        meta_upload out;
        assert_cu_ok(upload_complete(f->svc, files[i].id, NULL, &out, &err), err);
        meta_upload_clear(&out);
        sleep(i == 1 ? 1 : 0); /* completion times differ, and some are equal */
    }
    meta_upload pending;
    create_slots(f, "a/pending.bin", 10, NULL, NULL, &pending);

    meta_upload got;
    assert_cu_fails(upload_file_get(f->svc, pending.id, NULL, &got, &err), CU_ENOTFOUND, err);
    assert_cu_ok(upload_file_get(f->svc, files[0].id, NULL, &got, &err), err);
    storage_file_info info;
    assert_cu_ok(upload_file_stat(f->svc, &got, &info, &err), err);
    assert_int_equal(info.size, 1000);
    storage_reader_t *r = NULL;
    assert_cu_ok(upload_file_open(f->svc, &got, 100, 50, &r, &err), err);
    unsigned char buf[64];
    assert_int_equal(storage_read(r, buf, sizeof buf, &err), 50);
    assert_memory_equal(buf, data + 100, 50);
    assert_int_equal(storage_read(r, buf, sizeof buf, &err), 0);
    storage_reader_close(r);
    meta_upload_clear(&got);

    /* Newest first; pages by cursor; a prefix is a directory. */
    meta_upload *list = NULL;
    int n = 0;
    meta_file_query q = {.limit = 10};
    assert_cu_ok(upload_files_list(f->svc, &q, &list, &n, &err), err);
    assert_int_equal(n, 4);
    for (int i = 1; i < n; i++) {
        assert_true(list[i - 1].completed_at >= list[i].completed_at);
        assert_true(list[i - 1].completed_seq == list[i].completed_seq + 1);
    }
    /* The last completed first: completion order, not the clock's seconds. */
    assert_string_equal(list[0].id, files[3].id);
    assert_string_equal(list[3].id, files[0].id);
    int64_t seen_seq = list[1].completed_seq;
    char all[4][CU_UUID_LEN + 1];
    for (int i = 0; i < 4; i++)
        snprintf(all[i], sizeof all[i], "%s", list[i].id);
    meta_uploads_free(list, n);
    q.limit = 2;
    q.after_seq = seen_seq;
    assert_cu_ok(upload_files_list(f->svc, &q, &list, &n, &err), err);
    assert_int_equal(n, 2);
    assert_string_equal(list[0].id, all[2]);
    assert_string_equal(list[1].id, all[3]);
    meta_uploads_free(list, n);
    meta_file_query in_a = {.limit = 10, .prefix = "a/"};
    assert_cu_ok(upload_files_list(f->svc, &in_a, &list, &n, &err), err);
    assert_int_equal(n, 3);
    meta_uploads_free(list, n);
    meta_file_query mine = {.limit = 10, .owner = "nobody"};
    assert_cu_ok(upload_files_list(f->svc, &mine, &list, &n, &err), err);
    assert_int_equal(n, 0);
    meta_uploads_free(list, n);

    /* Deleting: the record says so at once and the bytes leave storage. */
    assert_cu_ok(upload_file_get(f->svc, files[2].id, NULL, &got, &err), err);
    char *path = strdup(got.final_path);
    meta_upload_clear(&got);
    assert_true(path_exists(path));
    assert_cu_ok(upload_file_delete(f->svc, files[2].id, NULL, &err), err);
    assert_false(path_exists(path));
    assert_cu_fails(upload_file_get(f->svc, files[2].id, NULL, &got, &err), CU_ENOTFOUND, err);
    assert_cu_fails(upload_file_delete(f->svc, files[2].id, NULL, &err), CU_ENOTFOUND, err);
    meta_part *parts;
    assert_cu_fails(upload_status(f->svc, files[2].id, NULL, &got, &parts, &n, &err), CU_ENOTFOUND,
                    err);
    assert_cu_fails(upload_file_delete(f->svc, pending.id, NULL, &err), CU_ENOTFOUND, err);
    assert_int_equal(count_events(f, UPLOAD_EVENT_TERMINATED), 1);
    free(path);
    meta_upload_clear(&pending);
    for (int i = 0; i < 4; i++)
        meta_upload_clear(&files[i]);
}

/* ---- completion, cancel, expiry ---- */

static void test_complete_checksum_mismatch(void **state)
{
    fixture *f = *state;
    unsigned char data[1500];
    fill(data, sizeof data, 9);
    char wrong[65] = "0000000000000000000000000000000000000000000000000000000000000000";
    meta_upload u;
    create_slots(f, "sum.bin", sizeof data, NULL, wrong, &u);
    write_all_slots(f, &u, data);
    meta_upload out;
    cu_error err;
    assert_cu_fails(upload_complete(f->svc, u.id, NULL, &out, &err), CU_ECHECKSUM, err);
    meta_upload now = reload(f, u.id);
    assert_int_equal(now.state, UPLOAD_PENDING); /* every part stays */
    assert_int_equal(now.uploaded_parts, 2);
    meta_upload_clear(&now);
    meta_upload_clear(&u);
    char right[65];
    util_sha256_hex(data, sizeof data, right);
    create_slots(f, "sum2.bin", sizeof data, NULL, right, &u);
    write_all_slots(f, &u, data);
    assert_cu_ok(upload_complete(f->svc, u.id, NULL, &out, &err), err);
    meta_upload_clear(&out);
    meta_upload_clear(&u);
}

static void test_cancel_and_expiry(void **state)
{
    fixture *f = *state;
    meta_upload a, short_lived, long_lived;
    create_slots(f, "a.bin", 10, NULL, NULL, &a);
    cu_error err;
    assert_cu_ok(upload_cancel(f->svc, a.id, NULL, &err), err);
    char *staging = staging_of(f, a.id);
    assert_false(path_exists(staging));
    free(staging);
    meta_upload out;
    meta_part *parts = NULL;
    int n = 0;
    assert_cu_fails(upload_status(f->svc, a.id, NULL, &out, &parts, &n, &err), CU_EGONE, err);
    assert_string_equal(err.msg, "Upload was cancelled");
    assert_cu_fails(upload_complete(f->svc, a.id, NULL, &out, &err), CU_ECONFLICT, err);
    assert_cu_fails(upload_cancel(f->svc, a.id, NULL, &err), CU_ECONFLICT, err);

    f->cfg.upload_ttl_seconds = 1;
    create_slots(f, "short.bin", 100, NULL, NULL, &short_lived);
    f->cfg.upload_ttl_seconds = 3600;
    create_slots(f, "long.bin", 100, NULL, NULL, &long_lived);
    sleep(2);
    upload_write_request req = {.id = short_lived.id, .slot = 0, .length = 100};
    upload_write *w;
    assert_cu_fails(upload_write_begin(f->svc, &req, &w, &err), CU_EGONE, err);
    assert_cu_fails(upload_status(f->svc, short_lived.id, NULL, &out, &parts, &n, &err), CU_EGONE,
                    err);
    int expired = -1;
    assert_cu_ok(upload_expire_due(f->svc, &expired, &err), err);
    assert_int_equal(expired, 1);
    staging = staging_of(f, short_lived.id);
    assert_false(path_exists(staging));
    free(staging);
    assert_cu_fails(upload_complete(f->svc, short_lived.id, NULL, &out, &err), CU_EGONE, err);
    assert_cu_ok(upload_expire_due(f->svc, &expired, &err), err);
    assert_int_equal(expired, 0);
    assert_int_equal(count_events(f, UPLOAD_EVENT_EXPIRED), 1);
    assert_int_equal(count_events(f, UPLOAD_EVENT_TERMINATED), 1);
    meta_upload now = reload(f, long_lived.id);
    assert_int_equal(now.state, UPLOAD_PENDING);
    meta_upload_clear(&now);
    meta_upload_clear(&a);
    meta_upload_clear(&short_lived);
    meta_upload_clear(&long_lived);
}

static void test_complete_blocked_by_file(void **state)
{
    fixture *f = *state;
    meta_upload u;
    create_slots(f, "evil/x.bin", 0, NULL, NULL, &u);
    char *blocker = path_join(f->root, "files/evil");
    assert_int_equal(file_write(blocker, "", 0), 0);
    cu_error err;
    meta_upload out;
    assert_cu_fails(upload_complete(f->svc, u.id, NULL, &out, &err), CU_ECONFLICT, err);
    meta_upload now = reload(f, u.id);
    assert_int_equal(now.state, UPLOAD_PENDING); /* back to the client, intact */
    meta_upload_clear(&now);
    assert_int_equal(unlink(blocker), 0);
    assert_cu_ok(upload_complete(f->svc, u.id, NULL, &out, &err), err);
    assert_int_equal(out.state, UPLOAD_COMPLETE);
    meta_upload_clear(&out);
    free(blocker);
    meta_upload_clear(&u);
}

/* ---- every half-way failure ---- */

/* What a scenario does, run once to count its calls and then once per call to fail it. */
typedef enum { SC_CREATE, SC_SLOT, SC_STREAM, SC_COMPLETE, SC_CANCEL, SC_EXPIRE } scenario;

static const char *const scenario_names[] = {"create",   "slot write", "stream write",
                                             "complete", "cancel",     "expire"};

enum { FT = 2 * CHUNK + 10 };

/* Brings up what the scenario starts from (not counted), then runs it (counted). */
static int run_scenario(fixture *f, scenario sc, const unsigned char *data, meta_upload *u,
                        cu_error *err)
{
    int saved = f->faults.fail_at;
    f->faults.fail_at = 0;
    switch (sc) {
    case SC_CREATE:
        break;
    case SC_SLOT:
    case SC_COMPLETE:
    case SC_CANCEL:
        create_slots(f, "fault/f.bin", FT, "https://example.com/h", NULL, u);
        if (sc == SC_COMPLETE)
            write_all_slots(f, u, data);
        break;
    case SC_STREAM:
        create_stream(f, "fault/s.bin", FT, false, u);
        break;
    case SC_EXPIRE: {
        upload_create_request req = {.protocol = "seed",
                                     .filename = "fault/e.bin",
                                     .filename_len = 11,
                                     .total_size = FT,
                                     .layout = UPLOAD_LAYOUT_SLOTS,
                                     .expires_at = (int64_t)util_now() - 10};
        assert_cu_ok(upload_create(f->svc, &req, u, err), *err);
        break;
    }
    }
    char *dir = path_join(f->root, ".staging");
    f->staged_before = dir_count(dir);
    free(dir);
    f->faults.calls = 0;
    f->faults.fail_at = saved;
    f->faults.failed[0] = '\0';
    switch (sc) {
    case SC_CREATE: {
        upload_create_request req = {.protocol = "seed",
                                     .filename = "fault/c.bin",
                                     .filename_len = 11,
                                     .total_size = FT,
                                     .layout = UPLOAD_LAYOUT_SLOTS};
        return upload_create(f->svc, &req, u, err);
    }
    case SC_SLOT:
        return write_slot(f, u, 1, data, NULL, err);
    case SC_STREAM:
        return append(f, u->id, 0, data, FT, NULL, err);
    case SC_COMPLETE: {
        meta_upload out;
        int rc = upload_complete(f->svc, u->id, NULL, &out, err);
        if (rc == 0)
            meta_upload_clear(&out);
        return rc;
    }
    case SC_CANCEL:
        return upload_cancel(f->svc, u->id, NULL, err);
    case SC_EXPIRE: {
        int expired;
        return upload_expire_due(f->svc, &expired, err);
    }
    }
    return -1;
}

/* After a failure, the record and the data agree, and the next request repairs or reports:
 * retrying the operation (or the reaper's next sweep) reaches the state a clean run reaches. */
static void check_consistent(fixture *f, scenario sc, const unsigned char *data, meta_upload *u)
{
    cu_error err;
    f->faults.fail_at = 0;
    if (sc == SC_CREATE) {
        /* Either no record and nothing staged, or a whole upload. */
        char *dir = path_join(f->root, ".staging");
        int staged = dir_count(dir);
        free(dir);
        if (u->id[0]) {
            meta_upload now = reload(f, u->id);
            assert_int_equal(now.state, UPLOAD_PENDING);
            meta_upload_clear(&now);
            meta_upload_clear(u);
        } else {
            if (staged != f->staged_before)
                print_error("create: %d staged after a failure in %s, %d before\n", staged,
                            f->faults.failed, f->staged_before);
            assert_int_equal(staged, f->staged_before);
        }
        return;
    }
    meta_upload now = reload(f, u->id);
    char *staging = staging_of(f, u->id);
    switch (sc) {
    case SC_SLOT: {
        assert_int_equal(now.state, UPLOAD_PENDING);
        meta_part part;
        assert_cu_ok(upload_slot_get(f->svc, u->id, 1, &part, &err), err);
        free(part.storage_ref);
        if (part.state == PART_PENDING) /* the retry stores it */
            assert_cu_ok(write_slot(f, u, 1, data, NULL, &err), err);
        /* Finish the upload: the stored bytes must be the right ones. */
        assert_cu_ok(write_slot(f, u, 0, data, NULL, &err), err);
        assert_cu_ok(write_slot(f, u, 2, data, NULL, &err), err);
        meta_upload out;
        assert_cu_ok(upload_complete(f->svc, u->id, NULL, &out, &err), err);
        assert_file(out.final_path, data, FT);
        meta_upload_clear(&out);
        break;
    }
    case SC_STREAM: {
        /* Whatever the failure, the durable offset is a true prefix; resume from it. */
        int64_t at = now.durable_offset;
        if (now.state == UPLOAD_PENDING && at < FT)
            assert_cu_ok(append(f, u->id, at, data + at, (size_t)(FT - at), NULL, &err), err);
        meta_upload out;
        assert_cu_ok(upload_complete(f->svc, u->id, NULL, &out, &err), err);
        assert_file(out.final_path, data, FT);
        meta_upload_clear(&out);
        break;
    }
    case SC_COMPLETE: {
        assert_true(now.state == UPLOAD_PENDING || now.state == UPLOAD_FINALIZING ||
                    now.state == UPLOAD_COMPLETE);
        meta_upload out;
        assert_cu_ok(upload_complete(f->svc, u->id, NULL, &out, &err), err);
        assert_file(out.final_path, data, FT);
        assert_false(path_exists(staging));
        meta_upload_clear(&out);
        /* Exactly one webhook, whatever happened on the way. */
        meta_webhook *hooks = NULL;
        int n = 0;
        assert_cu_ok(meta_webhooks_due(f->meta, INT64_MAX, NULL, 100, &hooks, &n, &err), err);
        int mine = 0;
        for (int i = 0; i < n; i++)
            mine += !strcmp(hooks[i].upload_id, u->id);
        assert_int_equal(mine, 1);
        meta_webhooks_free(hooks, n);
        break;
    }
    case SC_CANCEL:
    case SC_EXPIRE:
        if (now.state == UPLOAD_PENDING) { /* the end was not recorded: the data is intact */
            assert_true(path_exists(staging));
            if (sc == SC_CANCEL) /* the client's retry */
                assert_cu_ok(upload_cancel(f->svc, u->id, NULL, &err), err);
        }
        /* The reaper's next sweep ends what is due and removes what an earlier removal left. */
        int expired;
        assert_cu_ok(upload_expire_due(f->svc, &expired, &err), err);
        meta_upload_clear(&now);
        now = reload(f, u->id);
        assert_int_equal(now.state, sc == SC_CANCEL ? UPLOAD_CANCELLED : UPLOAD_EXPIRED);
        assert_false(path_exists(staging));
        meta_upload *left = NULL;
        int n = 0;
        assert_cu_ok(meta_uploads_to_purge(f->meta, 100, &left, &n, &err), err);
        assert_int_equal(n, 0);
        meta_uploads_free(left, n);
        break;
    case SC_CREATE:
        break;
    }
    free(staging);
    meta_upload_clear(&now);
    meta_upload_clear(u);
}

static void test_every_halfway_failure(void **state)
{
    fixture *f = *state;
    unsigned char data[FT];
    fill(data, FT, 11);
    for (scenario sc = SC_CREATE; sc <= SC_EXPIRE; sc++) {
        meta_upload u = {0};
        cu_error err;
        f->faults.fail_at = 0;
        assert_cu_ok(run_scenario(f, sc, data, &u, &err), err);
        int calls = f->faults.calls;
        assert_true(calls > 0);
        check_consistent(f, sc, data, &u);
        for (int k = 1; k <= calls; k++) {
            memset(&u, 0, sizeof u);
            f->faults.fail_at = k;
            int rc = run_scenario(f, sc, data, &u, &err);
            if (rc == 0 && f->faults.failed[0] == '\0')
                print_error("%s: call %d of %d was never made\n", scenario_names[sc], k, calls);
            if (rc != 0) /* every refusal says what failed */
                assert_true(err.msg[0] != '\0');
            check_consistent(f, sc, data, &u);
        }
        f->faults.fail_at = 0;
    }
}

/* ---- kinds of file (ALLOWED_TYPES, ALLOWED_EXTENSIONS) ---- */

/* Sets ALLOWED_TYPES and ALLOWED_EXTENSIONS (NULL: unset) and starts the service again, with a
 * sniffer when types are set, as main does. */
static void kinds_allow(fixture *f, const char *types, const char *extensions)
{
    cu_error err;
    free(f->cfg.allowed_types);
    free(f->cfg.allowed_extensions);
    filetype_list_free(f->cfg.allowed_type_list);
    filetype_list_free(f->cfg.allowed_extension_list);
    f->cfg.allowed_types = types ? strdup(types) : NULL;
    f->cfg.allowed_extensions = extensions ? strdup(extensions) : NULL;
    assert_cu_ok(filetype_patterns_parse(types, &f->cfg.allowed_type_list, &err), err);
    assert_cu_ok(filetype_extensions_parse(extensions, &f->cfg.allowed_extension_list, &err), err);
    upload_service_free(f->svc);
    if (types && !f->sniffer)
        assert_cu_ok(sniff_open(1, &f->sniffer, &err), err);
    f->events.n = 0;
    service_start(f);
}

/* A PNG's first bytes (signature and header chunk), then noise. */
static void fill_png(unsigned char *buf, size_t len, unsigned seed)
{
    static const unsigned char head[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0,
                                         0,    13,  'I', 'H', 'D',  'R',  0,    0,    1, 0,
                                         0,    0,   1,   0,   8,    6,    0,    0,    0};
    fill(buf, len, seed);
    memcpy(buf, head, len < sizeof head ? len : sizeof head);
}

/* Lines of words: what libmagic calls text/plain. */
static void fill_text(unsigned char *buf, size_t len)
{
    static const char line[] = "this is not an image but only words on a line\n";
    for (size_t i = 0; i < len; i++)
        buf[i] = (unsigned char)line[i % (sizeof line - 1)];
}

static upload_create_request kind_request(const char *name, const char *content_type, int64_t total,
                                          upload_layout layout)
{
    return (upload_create_request){.protocol = layout == UPLOAD_LAYOUT_SLOTS ? "seed" : "tus",
                                   .owner = "key",
                                   .filename = name,
                                   .filename_len = strlen(name),
                                   .content_type = content_type,
                                   .total_size = total,
                                   .layout = layout};
}

/* The upload ended as failed for a refused type: the record says why, its data is gone, and
 * every request about it answers 415 with the reason. */
static void assert_failed_for_type(fixture *f, const char *id)
{
    meta_upload u = reload(f, id);
    assert_int_equal(u.state, UPLOAD_FAILED);
    assert_int_equal(u.failure_code, CU_EMEDIATYPE);
    assert_non_null(u.failure_reason);
    assert_true(strstr(u.failure_reason, "not allowed") || strstr(u.failure_reason, "checked"));
    char *staging = staging_of(f, id);
    assert_false(path_exists(staging));
    free(staging);
    meta_upload *left = NULL;
    int nleft = -1;
    cu_error err;
    assert_cu_ok(meta_uploads_to_purge(f->meta, 10, &left, &nleft, &err), err);
    assert_int_equal(nleft, 0); /* removed, and recorded as removed */
    meta_uploads_free(left, nleft);
    meta_upload out;
    meta_part *parts = NULL;
    int n = 0;
    assert_cu_fails(upload_status(f->svc, id, NULL, &out, &parts, &n, &err), CU_EMEDIATYPE, err);
    assert_non_null(strstr(err.msg, "Upload failed: "));
    assert_non_null(strstr(err.msg, u.failure_reason));
    assert_cu_fails(upload_complete(f->svc, id, NULL, &out, &err), CU_EMEDIATYPE, err);
    assert_cu_fails(upload_cancel(f->svc, id, NULL, &err), CU_EMEDIATYPE, err);
    assert_cu_fails(upload_check_writable(&u, &err), CU_EMEDIATYPE, err);
    upload_write_request wr = {.id = id, .slot = 0, .offset = 0, .length = 1};
    upload_write *w;
    assert_cu_fails(upload_write_begin(f->svc, &wr, &w, &err), CU_EMEDIATYPE, err);
    assert_true(count_events(f, UPLOAD_EVENT_FAILED) >= 1);
    meta_upload_clear(&u);
}

static void test_kinds_at_creation(void **state)
{
    fixture *f = *state;
    kinds_allow(f, "image/*,video/mp4", ".png,JPG");
    cu_error err;
    meta_upload u;
#define REFUSED(name, type, code, says)                                                            \
    do {                                                                                           \
        upload_create_request r_ = kind_request(name, type, 10, UPLOAD_LAYOUT_SLOTS);              \
        assert_cu_fails(upload_validate(f->svc, &r_, &err), code, err);                            \
        assert_cu_fails(upload_create(f->svc, &r_, &u, &err), code, err);                          \
        assert_non_null(strstr(err.msg, says));                                                    \
    } while (0)
    REFUSED("notes.txt", NULL, CU_EMEDIATYPE, "extension");
    REFUSED("dir.png/notes.txt", NULL, CU_EMEDIATYPE, ".png,JPG");
    REFUSED("png", NULL, CU_EMEDIATYPE, "extension");
    REFUSED("a.png", "text/plain", CU_EMEDIATYPE, "text/plain");
    REFUSED("a.png", "Video/WebM; codecs=vp9", CU_EMEDIATYPE, "video/webm");
    REFUSED("a.png", "not a type", CU_EMEDIATYPE, "not a media type");
    REFUSED("a.png", "image/*", CU_EMEDIATYPE, "not a media type");
    REFUSED("../a.png", NULL, CU_EINVAL, "");
#undef REFUSED
    /* What may be created: a listed extension in any case, an allowed type, no type, and
     * application/octet-stream ("some bytes", left to the sniffed type). Nothing was removed
     * or failed on the way: no staging file exists but these. */
    const char *names[] = {"a.png", "dir/B.JPG", "c.PNG", "d.png"};
    const char *types[] = {"image/png", "image/jpeg; q=1", NULL, "application/octet-stream"};
    for (int i = 0; i < 4; i++) {
        upload_create_request r = kind_request(names[i], types[i], 10, UPLOAD_LAYOUT_SLOTS);
        assert_cu_ok(upload_create(f->svc, &r, &u, &err), err);
        assert_null(u.detected_type);
        if (types[i])
            assert_string_equal(u.content_type, types[i]); /* kept as declared */
        meta_upload_clear(&u);
    }
    assert_int_equal(count_events(f, UPLOAD_EVENT_CREATED), 4);
    /* A partial upload has no name of its own: its concatenation is checked. */
    upload_create_request r = kind_request("", NULL, 10, UPLOAD_LAYOUT_STREAM);
    r.partial = true;
    assert_cu_ok(upload_create(f->svc, &r, &u, &err), err);
    meta_upload_clear(&u);
}

static void test_kinds_slot_refused_and_removed(void **state)
{
    fixture *f = *state;
    kinds_allow(f, "image/*", NULL);
    enum { TOTAL = 3 * CHUNK };
    unsigned char data[TOTAL];
    fill_text(data, TOTAL);
    meta_upload u;
    upload_create_request r = kind_request("fake.png", "image/png", TOTAL, UPLOAD_LAYOUT_SLOTS);
    cu_error err;
    assert_cu_ok(upload_create(f->svc, &r, &u, &err), err);
    /* Parts in any order: 2 is stored (only slot 0 is sniffed), 1 is on its way. */
    assert_cu_ok(write_slot(f, &u, 2, data, NULL, &err), err);
    upload_write_request r1 = {.id = u.id, .slot = 1, .length = CHUNK};
    upload_write *w1;
    assert_cu_ok(upload_write_begin(f->svc, &r1, &w1, &err), err);
    assert_cu_ok(upload_write_data(w1, data + CHUNK, 100, &err), err);
    /* Slot 0's first bytes are text: refused as soon as the window (the slot) is in, the
     * declared image/png notwithstanding. */
    upload_write_request r0 = {.id = u.id, .slot = 0, .length = CHUNK};
    upload_write *w0;
    assert_cu_ok(upload_write_begin(f->svc, &r0, &w0, &err), err);
    assert_cu_ok(upload_write_data(w0, data, CHUNK / 2, &err), err);
    assert_cu_fails(upload_write_data(w0, data + CHUNK / 2, CHUNK / 2, &err), CU_EMEDIATYPE, err);
    assert_non_null(strstr(err.msg, "text/plain"));
    assert_non_null(strstr(err.msg, "image/*"));
    assert_non_null(strstr(err.msg, "data is removed"));
    assert_cu_fails(upload_write_data(w0, data, 1, &err), CU_EMEDIATYPE, err);
    upload_write_abort(w0);
    assert_failed_for_type(f, u.id);
    /* The part that was on its way is told why it cannot be stored. */
    assert_cu_ok(upload_write_data(w1, data + CHUNK + 100, CHUNK - 100, &err), err);
    upload_write_result res;
    assert_cu_fails(upload_write_end(w1, &res, &err), CU_EMEDIATYPE, err);
    assert_non_null(strstr(err.msg, "Upload failed"));
    assert_int_equal(count_events(f, UPLOAD_EVENT_FAILED), 1);
    meta_upload_clear(&u);
}

static void test_kinds_slot_accepted_and_recorded(void **state)
{
    fixture *f = *state;
    kinds_allow(f, "image/png", NULL);
    enum { TOTAL = 2 * CHUNK + 10 };
    unsigned char data[TOTAL];
    fill_png(data, TOTAL, 3);
    meta_upload u;
    upload_create_request r = kind_request("real.png", NULL, TOTAL, UPLOAD_LAYOUT_SLOTS);
    cu_error err;
    assert_cu_ok(upload_create(f->svc, &r, &u, &err), err);
    assert_string_equal(upload_content_type(&u), "application/octet-stream");
    write_all_slots(f, &u, data);
    meta_upload got = reload(f, u.id);
    assert_string_equal(got.detected_type, "image/png");
    assert_string_equal(upload_content_type(&got), "image/png");
    meta_upload_clear(&got);
    meta_upload done;
    assert_cu_ok(upload_complete(f->svc, u.id, NULL, &done, &err), err);
    assert_file(done.final_path, data, TOTAL);
    assert_string_equal(done.detected_type, "image/png");
    meta_upload_clear(&done);
    meta_upload_clear(&u);
}

/* With a digest declared, the bytes are judged only once they are known to be the client's:
 * a mismatch is a checksum error and the upload stays pending. */
static void test_kinds_digest_first(void **state)
{
    fixture *f = *state;
    kinds_allow(f, "image/*", NULL);
    unsigned char data[CHUNK];
    fill_text(data, CHUNK);
    meta_upload u;
    upload_create_request r = kind_request("a.png", NULL, CHUNK, UPLOAD_LAYOUT_SLOTS);
    cu_error err;
    assert_cu_ok(upload_create(f->svc, &r, &u, &err), err);
    upload_write_request wr = {
        .id = u.id, .slot = 0, .length = CHUNK, .digest_alg = UPLOAD_DIGEST_SHA256};
    memset(wr.digest, 0xab, 32);
    upload_write *w;
    upload_write_result res;
    assert_cu_ok(upload_write_begin(f->svc, &wr, &w, &err), err);
    assert_cu_ok(upload_write_data(w, data, CHUNK, &err), err);
    assert_cu_fails(upload_write_end(w, &res, &err), CU_ECHECKSUM, err);
    meta_upload got = reload(f, u.id);
    assert_int_equal(got.state, UPLOAD_PENDING);
    meta_upload_clear(&got);
    /* The right digest: then the type is judged, at the end. */
    SHA256(data, CHUNK, wr.digest);
    assert_cu_ok(upload_write_begin(f->svc, &wr, &w, &err), err);
    assert_cu_ok(upload_write_data(w, data, CHUNK, &err), err);
    assert_cu_fails(upload_write_end(w, &res, &err), CU_EMEDIATYPE, err);
    assert_failed_for_type(f, u.id);
    meta_upload_clear(&u);
}

static void test_kinds_stream(void **state)
{
    fixture *f = *state;
    kinds_allow(f, "image/*", NULL);
    enum { BIG = 100 * 1024 };
    unsigned char *data = malloc(BIG);
    cu_error err;
    upload_write_result res;
    /* A first write shorter than the window is judged at its end, on what it carried. */
    fill_png(data, BIG, 4);
    meta_upload png;
    upload_create_request r = kind_request("s.png", NULL, BIG, UPLOAD_LAYOUT_STREAM);
    assert_cu_ok(upload_create(f->svc, &r, &png, &err), err);
    assert_cu_ok(append(f, png.id, 0, data, 500, NULL, &err), err);
    meta_upload got = reload(f, png.id);
    assert_string_equal(got.detected_type, "image/png");
    meta_upload_clear(&got);
    assert_cu_ok(append(f, png.id, 500, data + 500, BIG - 500, &res, &err), err); /* not sniffed */
    assert_true(res.completed);
    upload_write_result_clear(&res);

    /* Text in one write of 100 KiB: refused once 64 KiB are in, before the rest. */
    fill_text(data, BIG);
    meta_upload text;
    r.filename = "t.png";
    assert_cu_ok(upload_create(f->svc, &r, &text, &err), err);
    upload_write_request wr = {.id = text.id, .offset = 0, .length = BIG};
    upload_write *w;
    assert_cu_ok(upload_write_begin(f->svc, &wr, &w, &err), err);
    size_t sent = 0;
    int rc = 0;
    while (rc == 0 && sent < BIG) {
        rc = upload_write_data(w, data + sent, 4096, &err);
        sent += 4096;
    }
    assert_int_equal(rc, CU_EMEDIATYPE);
    assert_int_equal(sent, SNIFF_WINDOW);
    upload_write_abort(w);
    assert_failed_for_type(f, text.id);

    /* A first write cut off: what arrived is judged before it is kept. */
    meta_upload cut_text, cut_png;
    r.total_size = -1; /* a deferred length, too */
    assert_cu_ok(upload_create(f->svc, &r, &cut_text, &err), err);
    wr = (upload_write_request){.id = cut_text.id, .offset = 0, .length = -1};
    assert_cu_ok(upload_write_begin(f->svc, &wr, &w, &err), err);
    assert_cu_ok(upload_write_data(w, data, 300, &err), err);
    upload_write_abort(w);
    assert_failed_for_type(f, cut_text.id);

    fill_png(data, BIG, 5);
    assert_cu_ok(upload_create(f->svc, &r, &cut_png, &err), err);
    wr.id = cut_png.id;
    assert_cu_ok(upload_write_begin(f->svc, &wr, &w, &err), err);
    assert_cu_ok(upload_write_data(w, data, 300, &err), err);
    upload_write_abort(w);
    got = reload(f, cut_png.id);
    assert_int_equal(got.state, UPLOAD_PENDING);
    assert_int_equal(got.durable_offset, 300);
    assert_string_equal(got.detected_type, "image/png");
    meta_upload_clear(&got);
    /* An empty write at offset 0 stores nothing and judges nothing. */
    meta_upload empty_write;
    assert_cu_ok(upload_create(f->svc, &r, &empty_write, &err), err);
    assert_cu_ok(append(f, empty_write.id, 0, data, 0, NULL, &err), err);
    got = reload(f, empty_write.id);
    assert_int_equal(got.state, UPLOAD_PENDING);
    assert_null(got.detected_type);
    meta_upload_clear(&got);

    meta_upload_clear(&empty_write);
    meta_upload_clear(&cut_png);
    meta_upload_clear(&cut_text);
    meta_upload_clear(&text);
    meta_upload_clear(&png);
    free(data);
}

/* libmagic's text/plain is refined by a declared text type, which must be allowed itself; an
 * empty file is application/x-empty, judged at completion. */
static void test_kinds_text_and_empty(void **state)
{
    fixture *f = *state;
    kinds_allow(f, "text/csv", NULL);
    unsigned char data[CHUNK];
    fill_text(data, CHUNK);
    cu_error err;
    meta_upload csv, plain, empty;
    upload_create_request r = kind_request("a.csv", "text/csv", CHUNK, UPLOAD_LAYOUT_SLOTS);
    assert_cu_ok(upload_create(f->svc, &r, &csv, &err), err);
    assert_cu_ok(write_slot(f, &csv, 0, data, NULL, &err), err);
    meta_upload got = reload(f, csv.id);
    assert_string_equal(got.detected_type, "text/csv");
    meta_upload_clear(&got);
    r.content_type = NULL; /* then it is only text/plain, which is not allowed */
    assert_cu_ok(upload_create(f->svc, &r, &plain, &err), err);
    assert_cu_fails(write_slot(f, &plain, 0, data, NULL, &err), CU_EMEDIATYPE, err);
    assert_non_null(strstr(err.msg, "text/plain"));
    assert_failed_for_type(f, plain.id);

    r.total_size = 0;
    assert_cu_ok(upload_create(f->svc, &r, &empty, &err), err);
    meta_upload out;
    assert_cu_fails(upload_complete(f->svc, empty.id, NULL, &out, &err), CU_EMEDIATYPE, err);
    assert_non_null(strstr(err.msg, "application/x-empty"));
    meta_upload_clear(&empty);
    kinds_allow(f, "application/x-empty", NULL);
    assert_cu_ok(upload_create(f->svc, &r, &empty, &err), err);
    assert_cu_ok(upload_complete(f->svc, empty.id, NULL, &out, &err), err);
    assert_string_equal(out.detected_type, "application/x-empty");
    meta_upload_clear(&out);
    meta_upload_clear(&empty);
    meta_upload_clear(&plain);
    meta_upload_clear(&csv);
}

/* Without ALLOWED_TYPES nothing is read: anything goes, and no type is recorded. A file whose
 * first bytes were stored then, completed once ALLOWED_TYPES is set, cannot be judged. */
static void test_kinds_off_and_turned_on(void **state)
{
    fixture *f = *state;
    unsigned char data[CHUNK];
    fill_text(data, CHUNK);
    cu_error err;
    meta_upload u, before;
    upload_create_request r = kind_request("x.png", "image/png", CHUNK, UPLOAD_LAYOUT_SLOTS);
    assert_cu_ok(upload_create(f->svc, &r, &u, &err), err);
    upload_write_result res;
    assert_cu_ok(write_slot(f, &u, 0, data, &res, &err), err);
    assert_null(res.upload.detected_type);
    upload_write_result_clear(&res);
    meta_upload done;
    assert_cu_ok(upload_complete(f->svc, u.id, NULL, &done, &err), err);
    assert_string_equal(upload_content_type(&done), "image/png"); /* as declared */
    meta_upload_clear(&done);

    assert_cu_ok(upload_create(f->svc, &r, &before, &err), err);
    assert_cu_ok(write_slot(f, &before, 0, data, NULL, &err), err);
    kinds_allow(f, "image/*", NULL);
    assert_cu_fails(upload_complete(f->svc, before.id, NULL, &done, &err), CU_EMEDIATYPE, err);
    assert_non_null(strstr(err.msg, "before its type was checked"));
    assert_failed_for_type(f, before.id);
    meta_upload_clear(&before);
    meta_upload_clear(&u);
}

/* A concatenation's type is its first non-empty piece's. */
static void test_kinds_concatenation(void **state)
{
    fixture *f = *state;
    kinds_allow(f, "image/*", NULL);
    enum { A = 1500 };
    unsigned char png[A], text[A];
    fill_png(png, A, 8);
    fill_text(text, A);
    cu_error err;
    meta_upload p[4];
    const unsigned char *bytes[4] = {png, text, text, png};
    for (int i = 0; i < 4; i++) {
        upload_create_request r = kind_request("", NULL, A, UPLOAD_LAYOUT_STREAM);
        r.partial = true;
        assert_cu_ok(upload_create(f->svc, &r, &p[i], &err), err);
        /* A piece's bytes are only recorded: text in a piece is no refusal yet. */
        assert_cu_ok(append(f, p[i].id, 0, bytes[i], A, NULL, &err), err);
    }
    upload_create_request req = kind_request("joined.png", NULL, 0, UPLOAD_LAYOUT_STREAM);
    meta_upload out;
    const char *refused[] = {p[1].id, p[0].id};
    assert_cu_fails(upload_concat(f->svc, &req, refused, 2, &out, &err), CU_EMEDIATYPE, err);
    assert_non_null(strstr(err.msg, "text/plain"));
    assert_failed_for_type(f, p[1].id); /* the piece that was refused */
    meta_upload got = reload(f, p[0].id);
    assert_int_equal(got.state, UPLOAD_COMPLETE); /* the other stays for another try */
    meta_upload_clear(&got);
    req.content_type = "video/mp4"; /* the declared type is checked first */
    const char *ok[] = {p[0].id, p[2].id};
    assert_cu_fails(upload_concat(f->svc, &req, ok, 2, &out, &err), CU_EMEDIATYPE, err);
    req.content_type = NULL;
    assert_cu_ok(upload_concat(f->svc, &req, ok, 2, &out, &err), err);
    assert_string_equal(out.detected_type, "image/png");
    got = reload(f, out.id);
    assert_string_equal(got.detected_type, "image/png");
    meta_upload_clear(&got);
    meta_upload_clear(&out);
    for (int i = 0; i < 4; i++)
        meta_upload_clear(&p[i]);
}

/* MAX_FILE_SIZE on every way in: creation, a declared length, a stream growing without one,
 * a concatenation. */
static void test_max_file_size_everywhere(void **state)
{
    fixture *f = *state;
    f->cfg.max_file_size = 5000;
    unsigned char data[6000];
    fill(data, sizeof data, 9);
    cu_error err;
    meta_upload u, grown;
    upload_create_request r = kind_request("big.bin", NULL, 5001, UPLOAD_LAYOUT_STREAM);
    assert_cu_fails(upload_create(f->svc, &r, &u, &err), CU_ETOOLARGE, err);
    r.total_size = -1;
    assert_cu_ok(upload_create(f->svc, &r, &u, &err), err);
    assert_cu_fails(upload_declare_length(f->svc, u.id, 5001, &err), CU_ETOOLARGE, err);
    /* A write that says it goes past the limit is refused before any byte. */
    upload_write_request wr = {.id = u.id, .offset = 0, .length = 5001};
    upload_write *w;
    assert_cu_fails(upload_write_begin(f->svc, &wr, &w, &err), CU_ETOOLARGE, err);
    assert_non_null(strstr(err.msg, "5000"));
    /* One of unknown length is cut off where it would pass it; what came before stays. */
    assert_cu_ok(append(f, u.id, 0, data, 4000, NULL, &err), err);
    wr = (upload_write_request){.id = u.id, .offset = 4000, .length = -1};
    assert_cu_ok(upload_write_begin(f->svc, &wr, &w, &err), err);
    assert_cu_ok(upload_write_data(w, data + 4000, 1000, &err), err);
    assert_cu_fails(upload_write_data(w, data + 5000, 1, &err), CU_ETOOLARGE, err);
    assert_non_null(strstr(err.msg, "largest file allowed (5000 bytes)"));
    upload_write_abort(w);
    grown = reload(f, u.id);
    assert_int_equal(grown.durable_offset, 5000);
    meta_upload_clear(&grown);
    assert_cu_ok(upload_declare_length(f->svc, u.id, 5000, &err), err);
    meta_upload done;
    assert_cu_ok(upload_complete(f->svc, u.id, NULL, &done, &err), err);
    assert_file(done.final_path, data, 5000);
    meta_upload_clear(&done);
    /* Pieces each under the limit, together over it. */
    meta_upload p[2];
    const char *ids[2];
    for (int i = 0; i < 2; i++) {
        upload_create_request pr = kind_request("", NULL, 3000, UPLOAD_LAYOUT_STREAM);
        pr.partial = true;
        assert_cu_ok(upload_create(f->svc, &pr, &p[i], &err), err);
        assert_cu_ok(append(f, p[i].id, 0, data, 3000, NULL, &err), err);
        ids[i] = p[i].id;
    }
    upload_create_request cr = kind_request("joined.bin", NULL, 0, UPLOAD_LAYOUT_STREAM);
    assert_cu_fails(upload_concat(f->svc, &cr, ids, 2, &done, &err), CU_ETOOLARGE, err);
    for (int i = 0; i < 2; i++)
        meta_upload_clear(&p[i]);
    meta_upload_clear(&u);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slot_arithmetic),
        T(test_create_and_status),
        T(test_create_refusals),
        T(test_slots_any_order_then_complete),
        T(test_slot_write_refusals),
        T(test_claim_comes_before_the_state_read),
        T(test_racing_writers_store_once),
        T(test_concurrent_completions_agree),
        T(test_stalled_writer_is_taken_over),
        T(test_trickling_writer_is_taken_over),
        T(test_stream_appends_and_completes),
        T(test_stream_deferred_length),
        T(test_stream_one_write_records_digest),
        T(test_concatenation),
        T(test_partial_upload_ends),
        T(test_files),
        T(test_complete_checksum_mismatch),
        T(test_cancel_and_expiry),
        T(test_complete_blocked_by_file),
        T(test_every_halfway_failure),
        T(test_kinds_at_creation),
        T(test_kinds_slot_refused_and_removed),
        T(test_kinds_slot_accepted_and_recorded),
        T(test_kinds_digest_first),
        T(test_kinds_stream),
        T(test_kinds_text_and_empty),
        T(test_kinds_off_and_turned_on),
        T(test_kinds_concatenation),
        T(test_max_file_size_everywhere),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
