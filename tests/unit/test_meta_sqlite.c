/* test_meta_sqlite.c - the SQLite metadata store, against a real database file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/log.h"
#include "meta/meta.h"
#include "meta/migrations.h"
#include "unit_helpers.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>
#include <time.h>

typedef struct {
    char *dir;
    char *db_path;
    meta_t *meta;
} fixture;

static int setup(void **state)
{
    log_set_level(LOG_ERROR + 1); /* expected failures are not news */
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    f->dir = tmpdir_make();
    if (!f->dir)
        return -1;
    f->db_path = path_join(f->dir, "meta.db");
    cu_error err = {0};
    if (meta_sqlite_open(f->db_path, false, &f->meta, &err) != 0) {
        print_error("meta_sqlite_open: %s\n", err.msg);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    meta_close(f->meta);
    tmpdir_remove(f->dir);
    free(f->db_path);
    free(f);
    return 0;
}

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

/* A pending upload of 3000 bytes in 3 parts of 1024 (the last 952); optional strings unset. */
static meta_upload new_upload(void)
{
    meta_upload u;
    memset(&u, 0, sizeof u);
    assert_int_equal(util_uuid_v4(u.id), 0);
    snprintf(u.protocol, sizeof u.protocol, "seed");
    u.filename = "videos/a.bin";
    u.total_size = 3000;
    u.chunk_size = 1024;
    u.total_parts = 3;
    u.state = UPLOAD_PENDING;
    u.created_at = now_s();
    u.expires_at = u.created_at + 3600;
    return u;
}

/* Creates u with its 3 parts (given in reverse order, to check that listing sorts them). */
static void create(fixture *f, const meta_upload *u)
{
    meta_part parts[3];
    memset(parts, 0, sizeof parts);
    for (int i = 0; i < 3; i++) {
        parts[i].part = 2 - i;
        parts[i].size = 2 - i == 2 ? 952 : 1024;
        util_sha256_hex(&parts[i].part, sizeof parts[i].part, parts[i].token_sha256);
    }
    cu_error err;
    assert_cu_ok(meta_upload_create(f->meta, u, parts, 3, NULL, &err), err);
}

/* An upload's parts, in order (its record read with them is dropped). */
static int parts_list(meta_t *m, const char *id, meta_part **parts, int *n, cu_error *err)
{
    meta_upload u;
    int rc = meta_upload_with_parts(m, id, &u, parts, n, err);
    if (rc == 0)
        meta_upload_clear(&u);
    return rc;
}

static upload_state state_of(fixture *f, const char *id)
{
    meta_upload got;
    cu_error err;
    assert_cu_ok(meta_upload_get(f->meta, id, &got, &err), err);
    upload_state s = got.state;
    meta_upload_clear(&got);
    return s;
}

static int uploaded_of(fixture *f, const char *id)
{
    meta_upload got;
    cu_error err;
    assert_cu_ok(meta_upload_get(f->meta, id, &got, &err), err);
    int n = got.uploaded_parts;
    meta_upload_clear(&got);
    return n;
}

static void test_create_and_get(void **state)
{
    fixture *f = *state;
    cu_error err;

    meta_upload bare = new_upload();
    create(f, &bare);
    meta_upload got;
    assert_cu_ok(meta_upload_get(f->meta, bare.id, &got, &err), err);
    assert_string_equal(got.id, bare.id);
    assert_string_equal(got.protocol, "seed");
    assert_string_equal(got.filename, "videos/a.bin");
    assert_int_equal(got.total_size, 3000);
    assert_int_equal(got.chunk_size, 1024);
    assert_int_equal(got.total_parts, 3);
    assert_int_equal(got.uploaded_parts, 0);
    assert_int_equal(got.state, UPLOAD_PENDING);
    assert_null(got.checksum_sha256);
    assert_null(got.webhook_url);
    assert_null(got.storage_ref);
    assert_null(got.final_path);
    assert_int_equal(got.created_at, bare.created_at);
    assert_int_equal(got.expires_at, bare.expires_at);
    assert_int_equal(got.completed_at, 0);
    meta_upload_clear(&got);
    assert_null(got.filename);

    meta_upload full = new_upload();
    full.filename = "\xc3\xa9t\xc3\xa9 'quoted'.bin";
    full.total_size = (int64_t)3 << 40; /* 3 TiB */
    full.checksum_sha256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    full.webhook_url = "https://example.invalid/hook?x=1";
    full.storage_ref = "mpu-123";
    create(f, &full);
    assert_cu_ok(meta_upload_get(f->meta, full.id, &got, &err), err);
    assert_string_equal(got.filename, full.filename);
    assert_true(got.total_size == full.total_size);
    assert_string_equal(got.checksum_sha256, full.checksum_sha256);
    assert_string_equal(got.webhook_url, full.webhook_url);
    assert_string_equal(got.storage_ref, "mpu-123");
    assert_null(got.final_path);
    meta_upload_clear(&got);

    /* The same id twice is refused and leaves the first record alone. */
    meta_part p = {.part = 0, .size = 1};
    assert_int_not_equal(meta_upload_create(f->meta, &bare, &p, 1, NULL, &err), 0);
    assert_cu_ok(meta_upload_get(f->meta, bare.id, &got, &err), err);
    assert_int_equal(got.total_size, 3000);
    meta_upload_clear(&got);
}

static void test_parts_list(void **state)
{
    fixture *f = *state;
    cu_error err;
    meta_upload u = new_upload();
    create(f, &u);

    meta_part *parts = NULL;
    int n = -1;
    assert_cu_ok(parts_list(f->meta, u.id, &parts, &n, &err), err);
    assert_int_equal(n, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(parts[i].part, i);
        assert_int_equal(parts[i].state, PART_PENDING);
        assert_int_equal(parts[i].size, i == 2 ? 952 : 1024);
        assert_string_equal(parts[i].checksum_sha256, "");
        char want[65];
        util_sha256_hex(&i, sizeof i, want);
        assert_string_equal(parts[i].token_sha256, want);
        assert_null(parts[i].storage_ref);
    }
    meta_parts_free(parts, n);

    meta_part one;
    assert_cu_ok(meta_part_get(f->meta, u.id, 2, &one, &err), err);
    assert_int_equal(one.part, 2);
    assert_int_equal(one.size, 952);
    free(one.storage_ref);
    assert_cu_fails(meta_part_get(f->meta, u.id, 3, &one, &err), CU_ENOTFOUND, err);

    /* Unknown uploads have no parts. */
    char other[CU_UUID_LEN + 1];
    util_uuid_v4(other);
    assert_cu_fails(parts_list(f->meta, other, &parts, &n, &err), CU_ENOTFOUND, err);
    assert_int_equal(n, 0);
    assert_null(parts);
}

static void test_part_mark_uploaded(void **state)
{
    fixture *f = *state;
    cu_error err;
    meta_upload u = new_upload();
    create(f, &u);
    const char *sum1 = "1111111111111111111111111111111111111111111111111111111111111111";
    const char *sum2 = "2222222222222222222222222222222222222222222222222222222222222222";

    int uploaded = -1;
    assert_cu_ok(meta_part_store(f->meta, u.id, 1, 1024, sum1, "etag-1", &uploaded, &err), err);
    assert_int_equal(uploaded, 1);
    assert_cu_ok(meta_part_store(f->meta, u.id, 2, 952, sum2, NULL, &uploaded, &err), err);
    assert_int_equal(uploaded, 2);
    assert_int_equal(uploaded_of(f, u.id), 2);

    /* A second mark of the same part is a conflict and counts nothing. */
    uploaded = -1;
    assert_cu_fails(meta_part_store(f->meta, u.id, 1, 1024, sum2, NULL, &uploaded, &err),
                    CU_ECONFLICT, err);
    assert_int_equal(uploaded_of(f, u.id), 2);

    meta_part *parts = NULL;
    int n = 0;
    assert_cu_ok(parts_list(f->meta, u.id, &parts, &n, &err), err);
    assert_int_equal(n, 3);
    assert_int_equal(parts[0].state, PART_PENDING);
    assert_string_equal(parts[0].checksum_sha256, "");
    assert_int_equal(parts[1].state, PART_UPLOADED);
    assert_string_equal(parts[1].checksum_sha256, sum1); /* the first mark's, not the refused one */
    assert_string_equal(parts[1].storage_ref, "etag-1");
    assert_int_equal(parts[2].state, PART_UPLOADED);
    assert_string_equal(parts[2].checksum_sha256, sum2);
    assert_null(parts[2].storage_ref);
    meta_parts_free(parts, n);

    /* Not while the upload is no longer pending. */
    assert_cu_ok(meta_upload_transition(f->meta, u.id, UPLOAD_PENDING, UPLOAD_FINALIZING, &err),
                 err);
    assert_cu_fails(meta_part_store(f->meta, u.id, 0, 1024, sum1, NULL, &uploaded, &err),
                    CU_ECONFLICT, err);
    meta_part p0;
    assert_cu_ok(meta_part_get(f->meta, u.id, 0, &p0, &err), err);
    assert_int_equal(p0.state, PART_PENDING);
    free(p0.storage_ref);
    assert_int_equal(uploaded_of(f, u.id), 2);

    /* Nor for an unknown upload or part. */
    assert_cu_fails(meta_part_store(f->meta, "nope", 0, 1, sum1, NULL, &uploaded, &err),
                    CU_ECONFLICT, err);
}

static void test_transition_is_compare_and_set(void **state)
{
    fixture *f = *state;
    cu_error err;
    meta_upload u = new_upload();
    create(f, &u);

    assert_cu_fails(meta_upload_transition(f->meta, u.id, UPLOAD_FINALIZING, UPLOAD_COMPLETE, &err),
                    CU_ECONFLICT, err);
    assert_int_equal(state_of(f, u.id), UPLOAD_PENDING);
    assert_cu_ok(meta_upload_transition(f->meta, u.id, UPLOAD_PENDING, UPLOAD_FINALIZING, &err),
                 err);
    assert_int_equal(state_of(f, u.id), UPLOAD_FINALIZING);
    assert_cu_fails(meta_upload_transition(f->meta, u.id, UPLOAD_PENDING, UPLOAD_FINALIZING, &err),
                    CU_ECONFLICT, err);
    assert_int_equal(state_of(f, u.id), UPLOAD_FINALIZING);
    /* And back (what complete does when storage refuses). */
    assert_cu_ok(meta_upload_transition(f->meta, u.id, UPLOAD_FINALIZING, UPLOAD_PENDING, &err),
                 err);
    assert_int_equal(state_of(f, u.id), UPLOAD_PENDING);
}

static int webhooks_due_count(fixture *f, int64_t at, meta_webhook **out)
{
    meta_webhook *list = NULL;
    int n = -1;
    cu_error err;
    assert_cu_ok(meta_webhooks_due(f->meta, at, NULL, 16, &list, &n, &err), err);
    if (out)
        *out = list;
    else
        meta_webhooks_free(list, n);
    return n;
}

static void test_complete_queues_webhook(void **state)
{
    fixture *f = *state;
    cu_error err;
    int64_t now = now_s();

    meta_upload hooked = new_upload();
    hooked.webhook_url = "http://example.invalid/hook";
    create(f, &hooked);

    /* Only from finalizing. */
    assert_cu_fails(meta_upload_complete(f->meta, hooked.id, "/final", now, NULL, "{}", &err),
                    CU_ECONFLICT, err);
    assert_int_equal(state_of(f, hooked.id), UPLOAD_PENDING);
    assert_int_equal(webhooks_due_count(f, now + 10, NULL), 0);

    assert_cu_ok(
        meta_upload_transition(f->meta, hooked.id, UPLOAD_PENDING, UPLOAD_FINALIZING, &err), err);
    const char *digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    assert_cu_ok(meta_upload_complete(f->meta, hooked.id, "/srv/files/x_a.bin", now, digest,
                                      "{\"event\":\"upload.complete\"}", &err),
                 err);
    meta_upload got;
    assert_cu_ok(meta_upload_get(f->meta, hooked.id, &got, &err), err);
    assert_int_equal(got.state, UPLOAD_COMPLETE);
    assert_string_equal(got.final_path, "/srv/files/x_a.bin");
    assert_int_equal(got.completed_at, now);
    assert_string_equal(got.sha256, digest); /* the file's digest, known at completion */
    meta_upload_clear(&got);

    /* Completing twice is a conflict. */
    assert_cu_fails(meta_upload_complete(f->meta, hooked.id, "/other", now, NULL, "{}", &err),
                    CU_ECONFLICT, err);

    meta_webhook *due = NULL;
    assert_int_equal(webhooks_due_count(f, now - 1, NULL), 0); /* not before completed_at */
    assert_int_equal(webhooks_due_count(f, now, &due), 1);
    assert_string_equal(due[0].upload_id, hooked.id);
    assert_string_equal(due[0].url, "http://example.invalid/hook");
    assert_string_equal(due[0].body, "{\"event\":\"upload.complete\"}");
    assert_int_equal(due[0].attempts, 0);
    meta_webhooks_free(due, 1);
    int64_t when = 0;
    assert_cu_ok(meta_webhook_next_due(f->meta, 0, &when, &err), err);
    assert_int_equal(when, now);

    /* No webhook_url: a body queues nothing. A webhook_url without a body: nothing either. */
    meta_upload plain = new_upload();
    create(f, &plain);
    assert_cu_ok(meta_upload_transition(f->meta, plain.id, UPLOAD_PENDING, UPLOAD_FINALIZING, &err),
                 err);
    assert_cu_ok(meta_upload_complete(f->meta, plain.id, "/p", now, NULL, "{}", &err), err);
    meta_upload nobody = new_upload();
    nobody.webhook_url = "http://example.invalid/other";
    create(f, &nobody);
    assert_cu_ok(
        meta_upload_transition(f->meta, nobody.id, UPLOAD_PENDING, UPLOAD_FINALIZING, &err), err);
    assert_cu_ok(meta_upload_complete(f->meta, nobody.id, "/n", now, NULL, NULL, &err), err);
    assert_int_equal(state_of(f, plain.id), UPLOAD_COMPLETE);
    assert_int_equal(state_of(f, nobody.id), UPLOAD_COMPLETE);
    assert_int_equal(webhooks_due_count(f, now + 100000, NULL), 1); /* still only the first */
}

/* Completes a fresh upload with a webhook; returns the webhook's id. */
static int64_t queue_webhook(fixture *f, int64_t at)
{
    cu_error err;
    meta_upload u = new_upload();
    u.webhook_url = "http://example.invalid/hook";
    create(f, &u);
    assert_cu_ok(meta_upload_transition(f->meta, u.id, UPLOAD_PENDING, UPLOAD_FINALIZING, &err),
                 err);
    assert_cu_ok(meta_upload_complete(f->meta, u.id, "/f", at, NULL, "{}", &err), err);
    meta_webhook *due = NULL;
    int n = webhooks_due_count(f, at, &due);
    int64_t id = -1;
    for (int i = 0; i < n; i++)
        if (!strcmp(due[i].upload_id, u.id))
            id = due[i].id;
    meta_webhooks_free(due, n);
    assert_true(id > 0);
    return id;
}

/* Claims id at now for a lease of 40 s; returns the lease. */
static int64_t claim(fixture *f, int64_t id, int64_t now)
{
    cu_error err;
    int attempts = -1;
    assert_cu_ok(meta_webhook_claim(f->meta, id, now, now + 40, &attempts, &err), err);
    assert_true(attempts >= 0);
    return now + 40;
}

static void test_webhook_results(void **state)
{
    fixture *f = *state;
    cu_error err;
    int64_t now = now_s();
    int64_t id = queue_webhook(f, now);

    /* A failed try with a retry in the future: not due now, due then, attempts counted. */
    int64_t lease = claim(f, id, now);
    assert_cu_ok(meta_webhook_result(f->meta, id, lease, false, now + 600, false, "HTTP 500", &err),
                 err);
    assert_int_equal(webhooks_due_count(f, now, NULL), 0);
    assert_int_equal(webhooks_due_count(f, now + 599, NULL), 0);
    meta_webhook *due = NULL;
    assert_int_equal(webhooks_due_count(f, now + 600, &due), 1);
    assert_int_equal(due[0].id, id);
    assert_int_equal(due[0].attempts, 1);
    assert_int_equal(due[0].next_attempt_at, now + 600);
    assert_int_equal(due[0].claimed_until, 0); /* the result ended the claim */
    meta_webhooks_free(due, 1);
    int64_t when = 0;
    assert_cu_ok(meta_webhook_next_due(f->meta, 0, &when, &err), err);
    assert_int_equal(when, now + 600);
    /* The claim is over: its holder cannot record a second result. */
    assert_cu_fails(meta_webhook_result(f->meta, id, lease, true, now, false, NULL, &err),
                    CU_ECONFLICT, err);

    /* Delivered: never due again, never claimed again. */
    lease = claim(f, id, now + 600);
    assert_cu_ok(meta_webhook_result(f->meta, id, lease, true, now + 600, false, NULL, &err), err);
    assert_int_equal(webhooks_due_count(f, now + 10000000, NULL), 0);
    assert_cu_fails(meta_webhook_next_due(f->meta, 0, &when, &err), CU_ENOTFOUND, err);
    int attempts;
    assert_cu_fails(meta_webhook_claim(f->meta, id, now + 700, now + 740, &attempts, &err),
                    CU_ECONFLICT, err);

    /* Given up: never due again either. */
    int64_t id2 = queue_webhook(f, now);
    lease = claim(f, id2, now);
    assert_cu_ok(meta_webhook_result(f->meta, id2, lease, false, now + 5, true, "gone", &err), err);
    assert_int_equal(webhooks_due_count(f, now + 10000000, NULL), 0);
    assert_cu_fails(meta_webhook_next_due(f->meta, 0, &when, &err), CU_ENOTFOUND, err);
    assert_cu_fails(meta_webhook_claim(f->meta, id2, now + 10, now + 50, &attempts, &err),
                    CU_ECONFLICT, err);
}

static void test_webhook_claims(void **state)
{
    fixture *f = *state;
    cu_error err;
    int64_t now = now_s(), when = 0;
    int64_t id = queue_webhook(f, now);
    int attempts = -1;

    /* Not before it is due. */
    assert_cu_fails(meta_webhook_claim(f->meta, id, now - 1, now + 39, &attempts, &err),
                    CU_ECONFLICT, err);
    int64_t lease = claim(f, id, now);

    /* While the claim holds, nobody else takes it, and it is not listed as due; it falls
     * due again when the lease runs out. */
    assert_cu_fails(meta_webhook_claim(f->meta, id, now, now + 40, &attempts, &err), CU_ECONFLICT,
                    err);
    assert_cu_fails(meta_webhook_claim(f->meta, id, lease - 1, lease + 39, &attempts, &err),
                    CU_ECONFLICT, err);
    assert_int_equal(webhooks_due_count(f, now, NULL), 0);
    assert_int_equal(webhooks_due_count(f, lease - 1, NULL), 0);
    assert_cu_ok(meta_webhook_next_due(f->meta, now, &when, &err), err);
    assert_int_equal(when, lease);

    /* Only the holder's lease ends the claim. */
    assert_cu_fails(meta_webhook_result(f->meta, id, lease + 1, true, now, false, NULL, &err),
                    CU_ECONFLICT, err);
    assert_cu_fails(meta_webhook_release(f->meta, id, lease - 1, &err), CU_ECONFLICT, err);

    /* The holder died: once the lease has run out another claim takes over, and the first
     * holder, should it wake up, can record nothing. */
    assert_int_equal(webhooks_due_count(f, lease, NULL), 1);
    int64_t second = lease + 40;
    assert_cu_ok(meta_webhook_claim(f->meta, id, lease, second, &attempts, &err), err);
    assert_int_equal(attempts, 0);
    assert_cu_fails(meta_webhook_result(f->meta, id, lease, true, now, false, NULL, &err),
                    CU_ECONFLICT, err);
    assert_cu_fails(meta_webhook_release(f->meta, id, lease, &err), CU_ECONFLICT, err);

    /* Released (cut short by shutdown): due again at once, no try counted. */
    assert_cu_ok(meta_webhook_release(f->meta, id, second, &err), err);
    meta_webhook *due = NULL;
    assert_int_equal(webhooks_due_count(f, now, &due), 1);
    assert_int_equal(due[0].attempts, 0);
    assert_int_equal(due[0].claimed_until, 0);
    meta_webhooks_free(due, 1);
    assert_cu_fails(meta_webhook_release(f->meta, id, second, &err), CU_ECONFLICT, err);
    assert_int_equal(claim(f, id, now), now + 40);
    assert_cu_fails(meta_webhook_claim(f->meta, -5, now, now + 40, &attempts, &err), CU_ECONFLICT,
                    err);
}

/* Paging through the due deliveries visits each once, in order, skipping claimed ones. */
static void test_webhooks_due_pages(void **state)
{
    fixture *f = *state;
    cu_error err;
    int64_t now = now_s();
    int64_t ids[7];
    for (int i = 0; i < 7; i++)
        ids[i] = queue_webhook(f, now - 7 + i); /* due one second apart, oldest first */
    claim(f, ids[3], now);
    int64_t seen[8];
    int nseen = 0;
    meta_webhook cursor = {0};
    for (int page = 0;; page++) {
        meta_webhook *due = NULL;
        int n = -1;
        assert_cu_ok(meta_webhooks_due(f->meta, now, page ? &cursor : NULL, 2, &due, &n, &err),
                     err);
        assert_true(n >= 0 && n <= 2 && nseen + n <= 6);
        for (int i = 0; i < n; i++)
            seen[nseen++] = due[i].id;
        if (n) {
            cursor.id = due[n - 1].id;
            cursor.next_attempt_at = due[n - 1].next_attempt_at;
        }
        meta_webhooks_free(due, n);
        if (n < 2)
            break;
    }
    assert_int_equal(nseen, 6);
    int64_t want[] = {ids[0], ids[1], ids[2], ids[4], ids[5], ids[6]};
    for (int i = 0; i < 6; i++)
        assert_int_equal(seen[i], want[i]);
}

/* Many workers race to claim the same deliveries: each is claimed exactly once. */
typedef struct {
    fixture *f;
    const int64_t *ids;
    int nids;
    int64_t now;
    int claimed[16];
} race;

static void *claim_all(void *arg)
{
    race *r = arg;
    for (int i = 0; i < r->nids; i++) {
        cu_error err;
        int attempts;
        int rc = meta_webhook_claim(r->f->meta, r->ids[i], r->now, r->now + 40, &attempts, &err);
        r->claimed[i] = rc == 0;
        if (rc != 0 && rc != CU_ECONFLICT)
            r->claimed[i] = -1;
    }
    return NULL;
}

static void test_webhook_claim_race(void **state)
{
    fixture *f = *state;
    int64_t now = now_s(), ids[16];
    for (int i = 0; i < 16; i++)
        ids[i] = queue_webhook(f, now);
    race races[8];
    pthread_t threads[8];
    for (int t = 0; t < 8; t++) {
        races[t] = (race){.f = f, .ids = ids, .nids = 16, .now = now};
        assert_int_equal(pthread_create(&threads[t], NULL, claim_all, &races[t]), 0);
    }
    for (int t = 0; t < 8; t++)
        pthread_join(threads[t], NULL);
    for (int i = 0; i < 16; i++) {
        int winners = 0;
        for (int t = 0; t < 8; t++) {
            assert_int_not_equal(races[t].claimed[i], -1);
            winners += races[t].claimed[i];
        }
        assert_int_equal(winners, 1);
    }
}

static void test_upload_end(void **state)
{
    fixture *f = *state;
    cu_error err;
    meta_upload u = new_upload();
    create(f, &u);
    int uploaded;
    assert_cu_ok(meta_part_store(f->meta, u.id, 0, 1024,
                                 "1111111111111111111111111111111111111111111111111111111111111111",
                                 NULL, &uploaded, &err),
                 err);

    assert_cu_fails(meta_upload_end(f->meta, u.id, UPLOAD_FINALIZING, UPLOAD_CANCELLED, &err),
                    CU_ECONFLICT, err);
    assert_int_equal(state_of(f, u.id), UPLOAD_PENDING);

    assert_cu_ok(meta_upload_end(f->meta, u.id, UPLOAD_PENDING, UPLOAD_CANCELLED, &err), err);
    meta_upload got;
    assert_cu_ok(meta_upload_get(f->meta, u.id, &got, &err), err); /* the row stays */
    assert_int_equal(got.state, UPLOAD_CANCELLED);
    assert_string_equal(got.filename, "videos/a.bin");
    meta_upload_clear(&got);
    meta_part *parts = NULL;
    int n = -1;
    assert_cu_ok(parts_list(f->meta, u.id, &parts, &n, &err), err);
    assert_int_equal(n, 0); /* parts and their token digests are gone */
    meta_parts_free(parts, n);
    meta_part p;
    assert_cu_fails(meta_part_get(f->meta, u.id, 1, &p, &err), CU_ENOTFOUND, err);

    /* Ending twice is a conflict; so is ending as expired now. */
    assert_cu_fails(meta_upload_end(f->meta, u.id, UPLOAD_PENDING, UPLOAD_EXPIRED, &err),
                    CU_ECONFLICT, err);
    assert_int_equal(state_of(f, u.id), UPLOAD_CANCELLED);

    meta_upload e = new_upload();
    create(f, &e);
    assert_cu_ok(meta_upload_end(f->meta, e.id, UPLOAD_PENDING, UPLOAD_EXPIRED, &err), err);
    assert_int_equal(state_of(f, e.id), UPLOAD_EXPIRED);
}

/* A failed upload ends like a cancelled one, keeping why; its data is to be removed, and its
 * record is pruned like any ended one. A pending upload's sniffed type is recorded. */
static void test_upload_fail_and_type(void **state)
{
    fixture *f = *state;
    cu_error err;
    meta_upload u = new_upload(), other = new_upload();
    u.detected_type = "image/png"; /* a concatenation's record is created with one */
    create(f, &u);
    create(f, &other);
    meta_upload got;
    assert_cu_ok(meta_upload_get(f->meta, u.id, &got, &err), err);
    assert_string_equal(got.detected_type, "image/png");
    assert_int_equal(got.failure_code, 0);
    assert_null(got.failure_reason);
    meta_upload_clear(&got);
    assert_cu_ok(meta_upload_set_type(f->meta, other.id, "text/plain", &err), err);
    assert_cu_ok(meta_upload_get(f->meta, other.id, &got, &err), err);
    assert_string_equal(got.detected_type, "text/plain");
    meta_upload_clear(&got);

    assert_cu_fails(meta_upload_fail(f->meta, u.id, UPLOAD_COMPLETE, CU_EMEDIATYPE, "why", &err),
                    CU_ECONFLICT, err);
    assert_cu_ok(meta_upload_fail(f->meta, u.id, UPLOAD_PENDING, CU_EMEDIATYPE,
                                  "The file's content is text/plain", &err),
                 err);
    assert_cu_ok(meta_upload_get(f->meta, u.id, &got, &err), err);
    assert_int_equal(got.state, UPLOAD_FAILED);
    assert_int_equal(got.failure_code, CU_EMEDIATYPE);
    assert_string_equal(got.failure_reason, "The file's content is text/plain");
    meta_upload_clear(&got);
    meta_part *parts = NULL;
    int n = -1;
    assert_cu_ok(parts_list(f->meta, u.id, &parts, &n, &err), err);
    assert_int_equal(n, 0);
    meta_parts_free(parts, n);
    /* No longer pending: its type stays as it was. */
    assert_cu_fails(meta_upload_set_type(f->meta, u.id, "image/gif", &err), CU_ECONFLICT, err);

    meta_upload *list = NULL;
    assert_cu_ok(meta_uploads_to_purge(f->meta, 10, &list, &n, &err), err);
    assert_int_equal(n, 1);
    assert_string_equal(list[0].id, u.id);
    meta_uploads_free(list, n);
    assert_cu_ok(meta_upload_mark_purged(f->meta, u.id, &err), err);
    int uploads = -1, webhooks = -1;
    assert_cu_ok(meta_prune(f->meta, now_s() + 10, &uploads, &webhooks, &err), err);
    assert_int_equal(uploads, 1);
    assert_cu_fails(meta_upload_get(f->meta, u.id, &got, &err), CU_ENOTFOUND, err);
}

/* Ended uploads are listed for data removal until marked purged; others never are. */
static void test_uploads_to_purge(void **state)
{
    fixture *f = *state;
    cu_error err;
    meta_upload pending = new_upload(), cancelled = new_upload(), expired = new_upload();
    create(f, &pending);
    create(f, &cancelled);
    create(f, &expired);
    assert_cu_ok(meta_upload_end(f->meta, cancelled.id, UPLOAD_PENDING, UPLOAD_CANCELLED, &err),
                 err);
    assert_cu_ok(meta_upload_end(f->meta, expired.id, UPLOAD_PENDING, UPLOAD_EXPIRED, &err), err);

    meta_upload *list = NULL;
    int n = -1;
    assert_cu_ok(meta_uploads_to_purge(f->meta, 10, &list, &n, &err), err);
    assert_int_equal(n, 2);
    for (int i = 0; i < n; i++)
        assert_true(!strcmp(list[i].id, cancelled.id) || !strcmp(list[i].id, expired.id));
    meta_uploads_free(list, n);

    assert_cu_ok(meta_upload_mark_purged(f->meta, cancelled.id, &err), err);
    assert_cu_ok(meta_uploads_to_purge(f->meta, 10, &list, &n, &err), err);
    assert_int_equal(n, 1);
    assert_string_equal(list[0].id, expired.id);
    meta_uploads_free(list, n);

    assert_cu_ok(meta_upload_mark_purged(f->meta, expired.id, &err), err);
    assert_cu_ok(meta_uploads_to_purge(f->meta, 10, &list, &n, &err), err);
    assert_int_equal(n, 0);
    meta_uploads_free(list, n);
}

/* A database made by schema version 1 (no data_removed column) is brought up to date. */
static void test_migrates_version_1(void **state)
{
    fixture *f = *state;
    char *old_path = path_join(f->dir, "v1.db");
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(old_path, &db), SQLITE_OK);
    assert_int_equal(meta_sqlite_migrations[0].version, 1);
    assert_int_equal(sqlite3_exec(db, meta_sqlite_migrations[0].sql, NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(db,
                     "INSERT INTO uploads VALUES ('0b0b0b0b-0000-4000-8000-000000000001', "
                     "'seed', 'old.bin', 5, 5, 1, 0, 'cancelled', NULL, NULL, NULL, NULL, 1, 2, "
                     "NULL);"
                     "PRAGMA user_version = 1;",
                     NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);

    meta_t *m = NULL;
    cu_error err;
    assert_cu_ok(meta_sqlite_open(old_path, false, &m, &err), err);
    meta_upload *list = NULL;
    int n = -1;
    assert_cu_ok(meta_uploads_to_purge(m, 10, &list, &n, &err), err);
    assert_int_equal(n, 1); /* the old cancelled upload: its data was never recorded removed */
    assert_string_equal(list[0].filename, "old.bin");
    meta_uploads_free(list, n);
    meta_close(m);
    assert_cu_ok(meta_sqlite_open(old_path, false, &m, &err), err); /* and again: no-op */
    meta_close(m);
    free(old_path);
}

static void test_uploads_due(void **state)
{
    fixture *f = *state;
    cu_error err;
    int64_t now = now_s();

    meta_upload due1 = new_upload(), due2 = new_upload(), fresh = new_upload(),
                finalizing = new_upload(), cancelled = new_upload(), completed = new_upload();
    due1.expires_at = now - 100;
    due2.expires_at = now; /* expires_at <= now counts */
    fresh.expires_at = now + 100;
    finalizing.expires_at = cancelled.expires_at = completed.expires_at = now - 1000;
    const meta_upload *all[] = {&due1, &due2, &fresh, &finalizing, &cancelled, &completed};
    for (size_t i = 0; i < 6; i++)
        create(f, all[i]);
    assert_cu_ok(
        meta_upload_transition(f->meta, finalizing.id, UPLOAD_PENDING, UPLOAD_FINALIZING, &err),
        err);
    assert_cu_ok(meta_upload_end(f->meta, cancelled.id, UPLOAD_PENDING, UPLOAD_CANCELLED, &err),
                 err);
    assert_cu_ok(
        meta_upload_transition(f->meta, completed.id, UPLOAD_PENDING, UPLOAD_FINALIZING, &err),
        err);
    assert_cu_ok(meta_upload_complete(f->meta, completed.id, "/c", now, NULL, NULL, &err), err);

    meta_upload *list = NULL;
    int n = -1;
    assert_cu_ok(meta_uploads_due(f->meta, now, 64, &list, &n, &err), err);
    assert_int_equal(n, 2);
    assert_string_equal(list[0].id, due1.id); /* oldest expiry first */
    assert_string_equal(list[1].id, due2.id);
    assert_int_equal(list[0].state, UPLOAD_PENDING);
    assert_string_equal(list[0].filename, "videos/a.bin");
    meta_uploads_free(list, n);

    assert_cu_ok(meta_uploads_due(f->meta, now, 1, &list, &n, &err), err);
    assert_int_equal(n, 1); /* the limit holds */
    assert_string_equal(list[0].id, due1.id);
    meta_uploads_free(list, n);

    assert_cu_ok(meta_uploads_due(f->meta, now - 101, 64, &list, &n, &err), err);
    assert_int_equal(n, 0);
    meta_uploads_free(list, n);

    assert_cu_ok(meta_uploads_due(f->meta, now + 100, 64, &list, &n, &err), err);
    assert_int_equal(n, 3); /* fresh too, once its time has come */
    meta_uploads_free(list, n);
}

static void test_persists_across_reopen(void **state)
{
    fixture *f = *state;
    cu_error err;
    meta_upload u = new_upload();
    u.webhook_url = "http://example.invalid/hook";
    create(f, &u);
    int uploaded;
    const char *sum = "abababababababababababababababababababababababababababababababab";
    assert_cu_ok(meta_part_store(f->meta, u.id, 2, 952, sum, "ref-2", &uploaded, &err), err);
    meta_close(f->meta);
    f->meta = NULL;

    /* Reopened with the other durability setting: same data. */
    assert_cu_ok(meta_sqlite_open(f->db_path, true, &f->meta, &err), err);
    meta_upload got;
    assert_cu_ok(meta_upload_get(f->meta, u.id, &got, &err), err);
    assert_int_equal(got.uploaded_parts, 1);
    assert_int_equal(got.state, UPLOAD_PENDING);
    assert_string_equal(got.webhook_url, "http://example.invalid/hook");
    meta_upload_clear(&got);
    meta_part p;
    assert_cu_ok(meta_part_get(f->meta, u.id, 2, &p, &err), err);
    assert_int_equal(p.state, PART_UPLOADED);
    assert_string_equal(p.checksum_sha256, sum);
    assert_string_equal(p.storage_ref, "ref-2");
    free(p.storage_ref);

    /* And it keeps working. */
    assert_cu_ok(meta_part_store(f->meta, u.id, 0, 1024, sum, NULL, &uploaded, &err), err);
    assert_int_equal(uploaded, 2);
}

static void test_unknown_ids(void **state)
{
    fixture *f = *state;
    cu_error err;
    char id[CU_UUID_LEN + 1];
    util_uuid_v4(id);
    meta_upload got;
    assert_cu_fails(meta_upload_get(f->meta, id, &got, &err), CU_ENOTFOUND, err);
    assert_cu_fails(meta_upload_get(f->meta, "", &got, &err), CU_ENOTFOUND, err);
    meta_part p;
    assert_cu_fails(meta_part_get(f->meta, id, 0, &p, &err), CU_ENOTFOUND, err);
    assert_cu_fails(meta_upload_transition(f->meta, id, UPLOAD_PENDING, UPLOAD_FINALIZING, &err),
                    CU_ECONFLICT, err);
    assert_cu_fails(meta_upload_end(f->meta, id, UPLOAD_PENDING, UPLOAD_CANCELLED, &err),
                    CU_ECONFLICT, err);
}

static void test_open_refuses_bad_path(void **state)
{
    fixture *f = *state;
    cu_error err;
    char *bad = path_join(f->dir, "no/such/dir/meta.db");
    meta_t *m = NULL;
    assert_cu_fails(meta_sqlite_open(bad, false, &m, &err), CU_EIO, err);
    free(bad);
}

static void test_state_names(void **state)
{
    (void)state;
    const char *names[] = {"pending", "finalizing", "complete", "failed", "cancelled", "expired"};
    for (int i = 0; i < 6; i++) {
        assert_string_equal(upload_state_name((upload_state)i), names[i]);
        assert_int_equal(upload_state_parse(names[i]), i);
    }
    assert_int_equal(upload_state_parse("done"), -1);
}

/* An owner's limits are checked in the transaction that would go past them. */
static void test_owner_limits(void **state)
{
    fixture *f = *state;
    cu_error err;
    meta_limits limits = {.max_open = 2, .max_reserved = 5000};
    meta_upload a = new_upload(), b = new_upload(), c = new_upload(), other = new_upload();
    a.owner = b.owner = c.owner = "alice";
    other.owner = "bob";
    assert_cu_ok(meta_upload_create(f->meta, &a, NULL, 0, &limits, &err), err);
    int open = -1;
    int64_t reserved = -1;
    assert_cu_ok(meta_owner_usage(f->meta, "alice", &open, &reserved, &err), err);
    assert_int_equal(open, 1);
    assert_int_equal(reserved, 3000);
    /* 3000 + 3000 bytes is past 5000. */
    assert_cu_fails(meta_upload_create(f->meta, &b, NULL, 0, &limits, &err), CU_ENOSPC, err);
    assert_non_null(strstr(err.msg, "3000"));
    assert_non_null(strstr(err.msg, "5000"));
    b.total_size = 2000;
    assert_cu_ok(meta_upload_create(f->meta, &b, NULL, 0, &limits, &err), err);
    c.total_size = 0;
    assert_cu_fails(meta_upload_create(f->meta, &c, NULL, 0, &limits, &err), CU_ELIMIT, err);
    assert_non_null(strstr(err.msg, "2 are open"));
    /* Someone else's uploads do not count; an ended one no longer counts. */
    assert_cu_ok(meta_upload_create(f->meta, &other, NULL, 0, &limits, &err), err);
    assert_cu_ok(meta_upload_end(f->meta, a.id, UPLOAD_PENDING, UPLOAD_CANCELLED, &err), err);
    assert_cu_ok(meta_upload_create(f->meta, &c, NULL, 0, &limits, &err), err);
    /* A length declared later counts against the bytes too. */
    meta_upload d = new_upload();
    d.owner = "carol";
    d.total_size = -1;
    d.layout = UPLOAD_LAYOUT_STREAM;
    d.total_parts = 0;
    assert_cu_ok(meta_upload_create(f->meta, &d, NULL, 0, &limits, &err), err);
    assert_cu_fails(meta_declare_length(f->meta, d.id, 6000, &limits, &err), CU_ENOSPC, err);
    assert_cu_ok(meta_declare_length(f->meta, d.id, 4000, &limits, &err), err);
}

/* Ended uploads are forgotten once their data is gone and the retention time has passed. */
static void test_prune(void **state)
{
    fixture *f = *state;
    cu_error err;
    meta_upload kept = new_upload(), ended = new_upload(), unpurged = new_upload(),
                pending = new_upload();
    create(f, &kept);
    create(f, &ended);
    create(f, &unpurged);
    create(f, &pending);
    assert_cu_ok(meta_upload_end(f->meta, kept.id, UPLOAD_PENDING, UPLOAD_CANCELLED, &err), err);
    assert_cu_ok(meta_upload_end(f->meta, ended.id, UPLOAD_PENDING, UPLOAD_EXPIRED, &err), err);
    assert_cu_ok(meta_upload_end(f->meta, unpurged.id, UPLOAD_PENDING, UPLOAD_CANCELLED, &err),
                 err);
    assert_cu_ok(meta_upload_mark_purged(f->meta, kept.id, &err), err);
    assert_cu_ok(meta_upload_mark_purged(f->meta, ended.id, &err), err);
    int uploads = -1, webhooks = -1;
    /* Ended just now: younger than any retention. */
    assert_cu_ok(meta_prune(f->meta, now_s() - 3600, &uploads, &webhooks, &err), err);
    assert_int_equal(uploads, 0);
    /* With the cut-off in the future: the two whose data is gone go; the one whose data is not
     * yet removed stays (the reaper still needs it), and so does the pending one. */
    assert_cu_ok(meta_prune(f->meta, now_s() + 10, &uploads, &webhooks, &err), err);
    assert_int_equal(uploads, 2);
    meta_upload got;
    assert_cu_fails(meta_upload_get(f->meta, kept.id, &got, &err), CU_ENOTFOUND, err);
    assert_cu_fails(meta_upload_get(f->meta, ended.id, &got, &err), CU_ENOTFOUND, err);
    assert_cu_ok(meta_upload_get(f->meta, unpurged.id, &got, &err), err);
    meta_upload_clear(&got);
    assert_cu_ok(meta_upload_get(f->meta, pending.id, &got, &err), err);
    meta_upload_clear(&got);
    assert_cu_ok(meta_check(f->meta, &err), err);
}

/* PRAGMA name of the database file, read on a connection of its own. */
static int64_t pragma_of(const char *path, const char *name)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA %s", name);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* Pruning gives the pages it frees back to the file system: the file shrinks, and what is
 * left on the free list is a handful of pages. */
static void test_prune_shrinks_the_file(void **state)
{
    fixture *f = *state;
    cu_error err;
    char name[512];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    meta_upload keep = new_upload();
    create(f, &keep);
    for (int i = 0; i < 1500; i++) {
        meta_upload u = new_upload();
        u.filename = name;
        create(f, &u);
        assert_cu_ok(meta_upload_end(f->meta, u.id, UPLOAD_PENDING, UPLOAD_CANCELLED, &err), err);
        assert_cu_ok(meta_upload_mark_purged(f->meta, u.id, &err), err);
    }
    assert_cu_ok(meta_check(f->meta, &err), err); /* a checkpoint: the pages reach the file */
    int64_t before = pragma_of(f->db_path, "page_count");
    assert_true(before > 200);
    int uploads = 0, webhooks = 0;
    assert_cu_ok(meta_prune(f->meta, now_s() + 10, &uploads, &webhooks, &err), err);
    assert_int_equal(uploads, 1500);
    assert_cu_ok(meta_check(f->meta, &err), err);
    int64_t after = pragma_of(f->db_path, "page_count");
    int64_t free_pages = pragma_of(f->db_path, "freelist_count");
    if (after * 4 > before || free_pages > 16)
        fail_msg("pruning left %lld of %lld pages, %lld of them free", (long long)after,
                 (long long)before, (long long)free_pages);
    meta_upload got;
    assert_cu_ok(meta_upload_get(f->meta, keep.id, &got, &err), err);
    meta_upload_clear(&got);
}

/* A complete file's record stays for as long as the file does, with its parts' sizes and
 * digests; the digests of the part tokens are dropped after the retention time. */
static void test_prune_keeps_complete_files_but_not_their_tokens(void **state)
{
    fixture *f = *state;
    cu_error err;
    meta_upload u = new_upload();
    create(f, &u);
    for (int i = 0; i < 3; i++) {
        int up = 0;
        assert_cu_ok(
            meta_part_store(f->meta, u.id, i, i == 2 ? 952 : 1024,
                            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                            NULL, &up, &err),
            err);
    }
    assert_cu_ok(meta_upload_transition(f->meta, u.id, UPLOAD_PENDING, UPLOAD_FINALIZING, &err),
                 err);
    assert_cu_ok(meta_upload_complete(f->meta, u.id, "/f", now_s() - 100, NULL, NULL, &err), err);
    int uploads = 0, webhooks = 0;
    assert_cu_ok(meta_prune(f->meta, now_s() - 200, &uploads, &webhooks, &err), err);
    meta_part *parts = NULL;
    int n = 0;
    assert_cu_ok(parts_list(f->meta, u.id, &parts, &n, &err), err);
    assert_int_equal(n, 3);
    assert_true(parts[0].token_sha256[0] != '\0'); /* completed after the cut-off: kept */
    meta_parts_free(parts, n);
    assert_cu_ok(meta_prune(f->meta, now_s(), &uploads, &webhooks, &err), err);
    assert_int_equal(uploads, 0);
    assert_cu_ok(parts_list(f->meta, u.id, &parts, &n, &err), err);
    assert_int_equal(n, 3);
    for (int i = 0; i < n; i++) {
        assert_string_equal(parts[i].token_sha256, "");
        assert_int_equal(parts[i].state, PART_UPLOADED);
        assert_int_equal(parts[i].checksum_sha256[0], 'a');
    }
    meta_parts_free(parts, n);
    meta_upload got;
    assert_cu_ok(meta_upload_get(f->meta, u.id, &got, &err), err);
    assert_int_equal(got.state, UPLOAD_COMPLETE);
    meta_upload_clear(&got);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_create_and_get),
        T(test_parts_list),
        T(test_part_mark_uploaded),
        T(test_transition_is_compare_and_set),
        T(test_complete_queues_webhook),
        T(test_webhook_results),
        T(test_webhook_claims),
        T(test_webhooks_due_pages),
        T(test_webhook_claim_race),
        T(test_upload_end),
        T(test_uploads_due),
        T(test_uploads_to_purge),
        T(test_owner_limits),
        T(test_prune),
        T(test_upload_fail_and_type),
        T(test_prune_shrinks_the_file),
        T(test_prune_keeps_complete_files_but_not_their_tokens),
        T(test_migrates_version_1),
        T(test_persists_across_reopen),
        T(test_unknown_ids),
        T(test_open_refuses_bad_path),
        cmocka_unit_test(test_state_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
