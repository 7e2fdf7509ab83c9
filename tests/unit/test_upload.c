/* test_upload.c - the upload service with a real SQLite store and local storage. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/config.h"
#include "base/log.h"
#include "core/token.h"
#include "core/upload.h"
#include "base/util.h"
#include "unit_helpers.h"

#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SECRET "upload-test-secret-0123456789abcdef"
#define CHUNK 1024

typedef struct {
    char *dir;
    char *root;
    cu_config cfg;
    meta_t *meta;
    storage_t *storage;
    upload_service *svc;
    int webhooks_queued;
} fixture;

static void on_queued(void *ctx)
{
    ((fixture *)ctx)->webhooks_queued++;
}

static int setup(void **state)
{
    log_set_level(LOG_ERROR + 1); /* expected failures are not news */
    fixture *f = calloc(1, sizeof *f);
    if (!f || !(f->dir = tmpdir_make()))
        return -1;
    f->root = path_join(f->dir, "store");
    char *db = path_join(f->dir, "meta.db");

    const var env[] = {
        {"API_KEY", "key"}, {"JWT_SECRET", SECRET}, {"DURABILITY", "none"}, {NULL, NULL}};
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
    int rc = meta_sqlite_open(db, false, &f->meta, &err);
    free(db);
    if (rc == 0)
        rc = storage_local_open(f->root, false, &f->storage, &err);
    if (rc != 0) {
        print_error("setup: %s\n", err.msg);
        return -1;
    }
    upload_deps deps = {.cfg = &f->cfg,
                        .meta = f->meta,
                        .storage = f->storage,
                        .on_webhook_queued = on_queued,
                        .on_webhook_queued_ctx = f};
    f->svc = upload_service_new(&deps);
    *state = f;
    return f->svc ? 0 : -1;
}

static int teardown(void **state)
{
    fixture *f = *state;
    upload_service_free(f->svc);
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

static void init_upload(fixture *f, const char *name, int64_t total, const char *webhook,
                        const char *checksum, upload_init_result *res)
{
    upload_init_request req = {.filename = name,
                               .filename_len = strlen(name),
                               .total_size = total,
                               .webhook_url = webhook,
                               .checksum_sha256 = checksum};
    cu_error err;
    assert_cu_ok(upload_init(f->svc, &req, res, &err), err);
}

/* Begins part n of res with its own token and the declared length. */
static int begin(fixture *f, const upload_init_result *res, int n, const char *token,
                 int64_t content_length, const unsigned char *digest, part_session **ps,
                 cu_error *err)
{
    part_request req = {.upload_id = res->upload.id,
                        .part_number = n,
                        .token = token,
                        .content_length = content_length,
                        .digest = digest};
    memset(err, 0, sizeof *err);
    return upload_part_begin(f->svc, &req, ps, err);
}

/* Sends part n of res (bytes data + n*CHUNK) whole; returns the rc of the first step that
 * failed (0 when stored). */
static int send_part(fixture *f, const upload_init_result *res, int n, const unsigned char *data,
                     part_result *out, cu_error *err)
{
    int64_t size = upload_part_size(res->upload.total_size, CHUNK, n);
    part_session *ps = NULL;
    int rc = begin(f, res, n, res->tokens[n], size, NULL, &ps, err);
    if (rc)
        return rc;
    const unsigned char *p = data + (int64_t)n * CHUNK;
    int64_t half = size / 2;
    rc = upload_part_write(ps, p, (size_t)half, err);
    if (rc == 0)
        rc = upload_part_write(ps, p + half, (size_t)(size - half), err);
    if (rc) {
        upload_part_abandon(ps);
        return rc;
    }
    part_result ignored;
    return upload_part_end(ps, out ? out : &ignored, err);
}

static void send_all(fixture *f, const upload_init_result *res, const unsigned char *data)
{
    cu_error err;
    for (int i = res->upload.total_parts - 1; i >= 0; i--)
        assert_cu_ok(send_part(f, res, i, data, NULL, &err), err);
}

static void expect_status(fixture *f, const char *id, upload_state state, int uploaded)
{
    meta_upload u;
    meta_part *parts = NULL;
    int n = 0;
    cu_error err;
    assert_cu_ok(upload_status(f->svc, id, &u, &parts, &n, &err), err);
    assert_int_equal(u.state, state);
    assert_int_equal(u.uploaded_parts, uploaded);
    int counted = 0;
    for (int i = 0; i < n; i++)
        counted += parts[i].state == PART_UPLOADED;
    assert_int_equal(counted, uploaded);
    meta_parts_free(parts, n);
    meta_upload_clear(&u);
}

static char *staging_of(fixture *f, const char *id)
{
    char rel[128];
    snprintf(rel, sizeof rel, ".staging/%s.data", id);
    return path_join(f->root, rel);
}

static void test_part_size(void **state)
{
    (void)state;
    assert_int_equal(upload_part_size(2500, 1024, 0), 1024);
    assert_int_equal(upload_part_size(2500, 1024, 1), 1024);
    assert_int_equal(upload_part_size(2500, 1024, 2), 452);
    assert_int_equal(upload_part_size(2048, 1024, 1), 1024);
    assert_int_equal(upload_part_size(1, 1024, 0), 1);
    /* 10 GiB in 50 MiB parts: 205 parts, the last one 40 MiB; no 32-bit overflow. */
    assert_int_equal(upload_part_size(10737418240, 52428800, 0), 52428800);
    assert_int_equal(upload_part_size(10737418240, 52428800, 204), 41943040);
    assert_int_equal(upload_part_size((int64_t)1 << 42, (int64_t)4096 << 20, 1023),
                     (int64_t)4096 << 20);
}

static void test_init(void **state)
{
    fixture *f = *state;
    upload_init_result res;
    init_upload(f, "videos/2024/movie.mp4", 2500, NULL, NULL, &res);
    const meta_upload *u = &res.upload;
    assert_true(util_is_uuid(u->id));
    assert_string_equal(u->filename, "videos/2024/movie.mp4");
    assert_int_equal(u->total_size, 2500);
    assert_int_equal(u->chunk_size, CHUNK);
    assert_int_equal(u->total_parts, 3);
    assert_int_equal(u->state, UPLOAD_PENDING);
    int64_t now = (int64_t)time(NULL);
    assert_in_range(u->expires_at - u->created_at, 3599, 3600);
    assert_in_range(u->created_at, now - 5, now + 1);

    /* Each token verifies and authorizes exactly its part and size until expires_at. */
    for (int i = 0; i < 3; i++) {
        assert_non_null(res.tokens[i]);
        token_claims c;
        cu_error err;
        assert_cu_ok(token_verify(SECRET, res.tokens[i], &c, &err), err);
        assert_string_equal(c.upload_id, u->id);
        assert_int_equal(c.part_number, i);
        assert_int_equal(c.expected_size, i == 2 ? 452 : 1024);
        assert_int_equal(c.exp, u->expires_at);
        for (int j = 0; j < i; j++)
            assert_string_not_equal(res.tokens[i], res.tokens[j]);
    }

    /* Recorded, with its parts, and its staging file reserved. */
    expect_status(f, u->id, UPLOAD_PENDING, 0);
    char *staging = staging_of(f, u->id);
    struct stat st;
    assert_int_equal(stat(staging, &st), 0);
    assert_int_equal(st.st_size, 2500);
    free(staging);
    upload_init_result_clear(&res);

    /* An exact multiple of the chunk size has no short last part. */
    init_upload(f, "b.bin", 2048, NULL, NULL, &res);
    assert_int_equal(res.upload.total_parts, 2);
    upload_init_result_clear(&res);
}

static void test_init_refusals(void **state)
{
    fixture *f = *state;
    upload_init_result res;
    cu_error err;
    upload_init_request req = {.filename = "../x", .filename_len = 4, .total_size = 1};
    assert_cu_fails(upload_init(f->svc, &req, &res, &err), CU_EINVAL, err);
    req = (upload_init_request){.filename = "a", .filename_len = 1, .total_size = -1};
    assert_cu_fails(upload_init(f->svc, &req, &res, &err), CU_EINVAL, err);
    req.total_size = 1;
    req.webhook_url = "ftp://example.invalid/";
    assert_cu_fails(upload_init(f->svc, &req, &res, &err), CU_EINVAL, err);
    req.webhook_url = NULL;
    req.checksum_sha256 = "abc";
    assert_cu_fails(upload_init(f->svc, &req, &res, &err), CU_EINVAL, err);
    req.checksum_sha256 = NULL;

    /* More than max_parts parts: refused, naming the largest size allowed. */
    req.total_size = 100 * CHUNK + 1;
    assert_cu_fails(upload_init(f->svc, &req, &res, &err), CU_EINVAL, err);
    assert_non_null(strstr(err.msg, "102400"));
    req.total_size = 100 * CHUNK;
    assert_cu_ok(upload_init(f->svc, &req, &res, &err), err);
    assert_int_equal(res.upload.total_parts, 100);
    upload_init_result_clear(&res);

    f->cfg.max_file_size = 5000;
    req.total_size = 5001;
    assert_cu_fails(upload_init(f->svc, &req, &res, &err), CU_ETOOLARGE, err);
    req.total_size = 5000;
    assert_cu_ok(upload_init(f->svc, &req, &res, &err), err);
    upload_init_result_clear(&res);

    /* Nothing was left behind by the refusals: only the two accepted staging files. */
    char *staging = path_join(f->root, ".staging");
    assert_int_equal(dir_count(staging), 2);
    free(staging);
}

static void test_part_begin_errors(void **state)
{
    fixture *f = *state;
    upload_init_result a, b;
    init_upload(f, "a.bin", 2500, NULL, NULL, &a);
    init_upload(f, "b.bin", 2500, NULL, NULL, &b);
    part_session *ps = NULL;
    cu_error err;

    assert_int_equal(begin(f, &a, 0, NULL, CHUNK, NULL, &ps, &err), CU_EAUTH);
    assert_null(ps);
    assert_int_equal(begin(f, &a, 0, "", CHUNK, NULL, &ps, &err), CU_EAUTH);
    assert_int_equal(begin(f, &a, 0, "not-a-token", CHUNK, NULL, &ps, &err), CU_EAUTH);
    /* Another upload's token for the same part number. */
    assert_int_equal(begin(f, &a, 0, b.tokens[0], CHUNK, NULL, &ps, &err), CU_EAUTH);
    /* This upload's token for another part. */
    assert_int_equal(begin(f, &a, 1, a.tokens[0], CHUNK, NULL, &ps, &err), CU_EAUTH);
    /* Out of range. */
    assert_int_equal(begin(f, &a, 3, a.tokens[0], CHUNK, NULL, &ps, &err), CU_EINVAL);
    assert_int_equal(begin(f, &a, -1, a.tokens[0], CHUNK, NULL, &ps, &err), CU_EINVAL);
    /* Content-Length. */
    assert_int_equal(begin(f, &a, 0, a.tokens[0], CHUNK + 1, NULL, &ps, &err), CU_ETOOLARGE);
    assert_int_equal(begin(f, &a, 0, a.tokens[0], CHUNK - 1, NULL, &ps, &err), CU_EINVAL);
    assert_int_equal(begin(f, &a, 2, a.tokens[2], 453, NULL, &ps, &err), CU_ETOOLARGE);
    assert_int_equal(begin(f, &a, 2, a.tokens[2], 0, NULL, &ps, &err), CU_EINVAL);
    assert_null(ps);

    /* A token signed with the right secret for the right claims, but not issued by init. */
    token_claims c = {.part_number = 0, .expected_size = CHUNK, .exp = a.upload.expires_at + 1};
    snprintf(c.upload_id, sizeof c.upload_id, "%s", a.upload.id);
    char *forged = token_issue(SECRET, &c);
    assert_int_equal(begin(f, &a, 0, forged, CHUNK, NULL, &ps, &err), CU_EAUTH);
    free(forged);

    /* An unknown upload. */
    upload_init_result ghost = a;
    util_uuid_v4(ghost.upload.id);
    c.exp = a.upload.expires_at;
    snprintf(c.upload_id, sizeof c.upload_id, "%s", ghost.upload.id);
    char *ghost_token = token_issue(SECRET, &c);
    assert_int_equal(begin(f, &ghost, 0, ghost_token, CHUNK, NULL, &ps, &err), CU_ENOTFOUND);
    free(ghost_token);

    /* One request per part at a time; other parts are not held up. */
    part_session *first = NULL, *other = NULL;
    assert_cu_ok(begin(f, &a, 0, a.tokens[0], CHUNK, NULL, &first, &err), err);
    assert_non_null(first);
    assert_int_equal(begin(f, &a, 0, a.tokens[0], CHUNK, NULL, &ps, &err), CU_ECONFLICT);
    assert_null(ps);
    assert_int_equal(begin(f, &a, 0, a.tokens[0], -1, NULL, &ps, &err), CU_ECONFLICT);
    assert_cu_ok(begin(f, &a, 1, a.tokens[1], -1, NULL, &other, &err), err); /* chunked */
    assert_cu_ok(begin(f, &b, 0, b.tokens[0], CHUNK, NULL, &ps, &err), err); /* same part of b */
    upload_part_abandon(ps);
    upload_part_abandon(other);

    static unsigned char data[2500];
    fill(data, sizeof data, 3);
    assert_cu_ok(upload_part_write(first, data, CHUNK, &err), err);
    part_result r;
    assert_cu_ok(upload_part_end(first, &r, &err), err);
    assert_string_equal(r.upload_id, a.upload.id);
    assert_int_equal(r.part_number, 0);
    assert_int_equal(r.uploaded_parts, 1);
    assert_int_equal(r.total_parts, 3);
    char want[65];
    util_sha256_hex(data, CHUNK, want);
    assert_string_equal(r.checksum_sha256, want);

    /* Already uploaded. */
    assert_int_equal(begin(f, &a, 0, a.tokens[0], CHUNK, NULL, &ps, &err), CU_ECONFLICT);
    assert_null(ps);
    expect_status(f, a.upload.id, UPLOAD_PENDING, 1);

    upload_init_result_clear(&a);
    upload_init_result_clear(&b);
}

static void test_part_digest(void **state)
{
    fixture *f = *state;
    upload_init_result a;
    init_upload(f, "d.bin", 2500, NULL, NULL, &a);
    static unsigned char data[2500];
    fill(data, sizeof data, 4);
    unsigned char right[32], wrong[32];
    SHA256(data, CHUNK, right);
    memcpy(wrong, right, 32);
    wrong[31] ^= 1;
    part_session *ps = NULL;
    cu_error err;

    assert_cu_ok(begin(f, &a, 0, a.tokens[0], CHUNK, wrong, &ps, &err), err);
    assert_cu_ok(upload_part_write(ps, data, CHUNK, &err), err);
    part_result r;
    assert_cu_fails(upload_part_end(ps, &r, &err), CU_EINVAL, err);
    expect_status(f, a.upload.id, UPLOAD_PENDING, 0); /* the part stays pending */

    /* And can be sent again, this time with the right digest. */
    assert_cu_ok(begin(f, &a, 0, a.tokens[0], CHUNK, right, &ps, &err), err);
    assert_cu_ok(upload_part_write(ps, data, CHUNK, &err), err);
    assert_cu_ok(upload_part_end(ps, &r, &err), err);
    assert_int_equal(r.uploaded_parts, 1);
    expect_status(f, a.upload.id, UPLOAD_PENDING, 1);
    upload_init_result_clear(&a);
}

static void test_part_body_sizes(void **state)
{
    fixture *f = *state;
    upload_init_result a;
    init_upload(f, "s.bin", 2500, NULL, NULL, &a);
    static unsigned char data[2500];
    fill(data, sizeof data, 5);
    part_session *ps = NULL;
    cu_error err;
    part_result r;

    /* Chunked transfer (no Content-Length): more than the part is refused as it arrives. */
    assert_cu_ok(begin(f, &a, 2, a.tokens[2], -1, NULL, &ps, &err), err);
    assert_cu_ok(upload_part_write(ps, data + 2048, 400, &err), err);
    assert_cu_fails(upload_part_write(ps, data + 2448, 53, &err), CU_ETOOLARGE, err);
    upload_part_abandon(ps);
    expect_status(f, a.upload.id, UPLOAD_PENDING, 0);

    /* A body shorter than the part. */
    assert_cu_ok(begin(f, &a, 2, a.tokens[2], -1, NULL, &ps, &err), err);
    assert_cu_ok(upload_part_write(ps, data + 2048, 451, &err), err);
    assert_cu_fails(upload_part_end(ps, &r, &err), CU_EINVAL, err);
    expect_status(f, a.upload.id, UPLOAD_PENDING, 0);

    /* Abandoned halfway (client gone): pending, the claim released, can be sent again. */
    assert_cu_ok(begin(f, &a, 2, a.tokens[2], 452, NULL, &ps, &err), err);
    assert_cu_ok(upload_part_write(ps, data + 2048, 100, &err), err);
    upload_part_abandon(ps);
    upload_part_abandon(NULL);
    expect_status(f, a.upload.id, UPLOAD_PENDING, 0);
    assert_cu_ok(send_part(f, &a, 2, data, &r, &err), err);
    assert_int_equal(r.part_number, 2);
    assert_int_equal(r.uploaded_parts, 1);
    expect_status(f, a.upload.id, UPLOAD_PENDING, 1);
    upload_init_result_clear(&a);
}

static void test_complete(void **state)
{
    fixture *f = *state;
    enum { TOTAL = 2500 };
    static unsigned char data[TOTAL];
    fill(data, TOTAL, 6);
    unsigned char md[32];
    char sum[65];
    SHA256(data, TOTAL, md);
    util_hex(md, 32, sum);

    upload_init_result a;
    init_upload(f, "videos/2024/movie.mp4", TOTAL, "http://example.invalid/hook", sum, &a);
    const char *id = a.upload.id;
    cu_error err;
    meta_upload out;
    part_result r;

    assert_cu_ok(send_part(f, &a, 1, data, &r, &err), err);
    assert_cu_fails(upload_complete(f->svc, id, &out, &err), CU_EINVAL, err);
    assert_string_equal(err.msg, "Not all parts uploaded: 1/3 complete");
    expect_status(f, id, UPLOAD_PENDING, 1);

    assert_cu_ok(send_part(f, &a, 2, data, &r, &err), err);
    assert_cu_fails(upload_complete(f->svc, id, &out, &err), CU_EINVAL, err);
    assert_string_equal(err.msg, "Not all parts uploaded: 2/3 complete"); /* one short */
    assert_cu_ok(send_part(f, &a, 0, data, &r, &err), err);
    assert_int_equal(r.uploaded_parts, 3);
    assert_int_equal(f->webhooks_queued, 0);

    assert_cu_ok(upload_complete(f->svc, id, &out, &err), err);
    assert_int_equal(out.state, UPLOAD_COMPLETE);
    char want[4096];
    snprintf(want, sizeof want, "%s/files/videos/2024/%s_movie.mp4", f->root, id);
    assert_string_equal(out.final_path, want);
    assert_true(out.completed_at >= out.created_at);
    assert_int_equal(out.total_size, TOTAL);
    int64_t completed_at = out.completed_at;
    meta_upload_clear(&out);

    size_t len = 0;
    unsigned char *content = file_read(want, &len);
    assert_non_null(content);
    assert_int_equal(len, TOTAL);
    assert_memory_equal(content, data, TOTAL);
    free(content);
    char *staging = staging_of(f, id);
    assert_false(path_exists(staging));
    free(staging);

    /* The webhook was queued (once) with the payload, and the deliverer was woken. */
    assert_int_equal(f->webhooks_queued, 1);
    meta_webhook *due = NULL;
    int n = 0;
    assert_cu_ok(meta_webhooks_due(f->meta, completed_at, 8, &due, &n, &err), err);
    assert_int_equal(n, 1);
    assert_string_equal(due[0].url, "http://example.invalid/hook");
    assert_non_null(strstr(due[0].body, "\"upload.complete\""));
    assert_non_null(strstr(due[0].body, id));
    meta_webhooks_free(due, n);

    /* Idempotent: the same answer again, nothing queued twice. */
    assert_cu_ok(upload_complete(f->svc, id, &out, &err), err);
    assert_int_equal(out.state, UPLOAD_COMPLETE);
    assert_string_equal(out.final_path, want);
    assert_int_equal(out.completed_at, completed_at);
    meta_upload_clear(&out);
    assert_int_equal(f->webhooks_queued, 1);
    expect_status(f, id, UPLOAD_COMPLETE, 3);

    /* No more parts, no cancel. */
    part_session *ps = NULL;
    assert_int_equal(begin(f, &a, 0, a.tokens[0], CHUNK, NULL, &ps, &err), CU_ECONFLICT);
    assert_cu_fails(upload_cancel(f->svc, id, &err), CU_ECONFLICT, err);
    upload_init_result_clear(&a);

    /* Without a webhook_url nothing is queued. */
    init_upload(f, "plain.bin", TOTAL, NULL, NULL, &a);
    send_all(f, &a, data);
    assert_cu_ok(upload_complete(f->svc, a.upload.id, &out, &err), err);
    meta_upload_clear(&out);
    assert_int_equal(f->webhooks_queued, 1);
    upload_init_result_clear(&a);
}

static void test_complete_checksum_mismatch(void **state)
{
    fixture *f = *state;
    static unsigned char data[2500];
    fill(data, sizeof data, 7);
    const char *wrong = "0000000000000000000000000000000000000000000000000000000000000000";
    upload_init_result a;
    init_upload(f, "c.bin", sizeof data, NULL, wrong, &a);
    send_all(f, &a, data);

    cu_error err;
    meta_upload out;
    assert_cu_fails(upload_complete(f->svc, a.upload.id, &out, &err), CU_ECHECKSUM, err);
    char sum[65];
    util_sha256_hex(data, sizeof data, sum);
    assert_non_null(strstr(err.msg, sum)); /* both digests in the message */
    assert_non_null(strstr(err.msg, wrong));
    /* Still pending, every part intact, the data still staged. */
    expect_status(f, a.upload.id, UPLOAD_PENDING, 3);
    char *staging = staging_of(f, a.upload.id);
    size_t len = 0;
    unsigned char *content = file_read(staging, &len);
    assert_non_null(content);
    assert_int_equal(len, sizeof data);
    assert_memory_equal(content, data, sizeof data);
    free(content);
    free(staging);
    assert_cu_fails(upload_complete(f->svc, a.upload.id, &out, &err), CU_ECHECKSUM, err);
    upload_init_result_clear(&a);
}

static void test_cancel(void **state)
{
    fixture *f = *state;
    static unsigned char data[2500];
    fill(data, sizeof data, 8);
    upload_init_result a;
    init_upload(f, "x.bin", sizeof data, NULL, NULL, &a);
    cu_error err;
    assert_cu_ok(send_part(f, &a, 0, data, NULL, &err), err);

    assert_cu_ok(upload_cancel(f->svc, a.upload.id, &err), err);
    char *staging = staging_of(f, a.upload.id);
    assert_false(path_exists(staging)); /* the data is removed */
    free(staging);

    part_session *ps = NULL;
    assert_int_equal(begin(f, &a, 1, a.tokens[1], CHUNK, NULL, &ps, &err), CU_ECONFLICT);
    assert_null(ps);
    meta_upload u;
    meta_part *parts = NULL;
    int n = 0;
    assert_cu_fails(upload_status(f->svc, a.upload.id, &u, &parts, &n, &err), CU_EGONE, err);
    assert_string_equal(err.msg, "Upload was cancelled");
    assert_null(parts);
    assert_cu_fails(upload_complete(f->svc, a.upload.id, &u, &err), CU_ECONFLICT, err);
    assert_cu_fails(upload_cancel(f->svc, a.upload.id, &err), CU_ECONFLICT, err);
    upload_init_result_clear(&a);
}

/* When removing an ended upload's data fails, the record remembers, and the next expiry
 * sweep removes it. */
static void test_failed_removal_is_retried(void **state)
{
    fixture *f = *state;
    upload_init_result a;
    init_upload(f, "x.bin", 10, NULL, NULL, &a);
    char *staging = staging_of(f, a.upload.id);
    /* A directory where the staging file was: unlink() fails with EISDIR. */
    assert_int_equal(unlink(staging), 0);
    assert_int_equal(mkdir(staging, 0700), 0);

    cu_error err;
    assert_cu_ok(upload_cancel(f->svc, a.upload.id, &err), err); /* the client is answered */
    assert_true(path_exists(staging));
    meta_upload *left = NULL;
    int n = -1;
    assert_cu_ok(meta_uploads_to_purge(f->meta, 10, &left, &n, &err), err);
    assert_int_equal(n, 1);
    meta_uploads_free(left, n);

    /* Storage recovers (here: a plain file again); the sweep removes it and records that. */
    assert_int_equal(rmdir(staging), 0);
    FILE *fp = fopen(staging, "w");
    assert_non_null(fp);
    fclose(fp);
    int expired = -1;
    assert_cu_ok(upload_expire_due(f->svc, &expired, &err), err);
    assert_int_equal(expired, 0);
    assert_false(path_exists(staging));
    assert_cu_ok(meta_uploads_to_purge(f->meta, 10, &left, &n, &err), err);
    assert_int_equal(n, 0);
    meta_uploads_free(left, n);
    free(staging);
    upload_init_result_clear(&a);
}

static void test_expiry(void **state)
{
    fixture *f = *state;
    upload_init_result short_lived, long_lived;
    f->cfg.upload_ttl_seconds = 1;
    init_upload(f, "short.bin", 100, NULL, NULL, &short_lived);
    f->cfg.upload_ttl_seconds = 3600;
    init_upload(f, "long.bin", 100, NULL, NULL, &long_lived);
    sleep(2);

    cu_error err;
    part_session *ps = NULL;
    assert_int_equal(begin(f, &short_lived, 0, short_lived.tokens[0], 100, NULL, &ps, &err),
                     CU_EGONE);
    meta_upload u;
    meta_part *parts = NULL;
    int n = 0;
    /* Past its expiry it is gone even before the reaper runs. */
    assert_cu_fails(upload_status(f->svc, short_lived.upload.id, &u, &parts, &n, &err), CU_EGONE,
                    err);

    int expired = -1;
    assert_cu_ok(upload_expire_due(f->svc, &expired, &err), err);
    assert_int_equal(expired, 1);
    assert_cu_fails(upload_status(f->svc, short_lived.upload.id, &u, &parts, &n, &err), CU_EGONE,
                    err);
    assert_string_equal(err.msg, "Upload expired");
    char *staging = staging_of(f, short_lived.upload.id);
    assert_false(path_exists(staging));
    free(staging);
    assert_cu_fails(upload_complete(f->svc, short_lived.upload.id, &u, &err), CU_EGONE, err);
    assert_cu_fails(upload_cancel(f->svc, short_lived.upload.id, &err), CU_EGONE, err);

    /* The other one is untouched; a second sweep finds nothing. */
    expect_status(f, long_lived.upload.id, UPLOAD_PENDING, 0);
    assert_cu_ok(upload_expire_due(f->svc, &expired, &err), err);
    assert_int_equal(expired, 0);

    upload_init_result_clear(&short_lived);
    upload_init_result_clear(&long_lived);
}

static void test_empty_upload(void **state)
{
    fixture *f = *state;
    upload_init_result a;
    init_upload(f, "dir/empty.bin", 0, NULL, NULL, &a);
    assert_int_equal(a.upload.total_parts, 0);
    expect_status(f, a.upload.id, UPLOAD_PENDING, 0);

    cu_error err;
    meta_upload out;
    assert_cu_ok(upload_complete(f->svc, a.upload.id, &out, &err), err);
    assert_int_equal(out.state, UPLOAD_COMPLETE);
    struct stat st;
    assert_int_equal(stat(out.final_path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_size, 0);
    char want[4096];
    snprintf(want, sizeof want, "%s/files/dir/%s_empty.bin", f->root, a.upload.id);
    assert_string_equal(out.final_path, want);
    meta_upload_clear(&out);
    upload_init_result_clear(&a);

    /* With the SHA-256 of nothing as its checksum. */
    init_upload(f, "e2.bin", 0, NULL,
                "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855", &a);
    assert_cu_ok(upload_complete(f->svc, a.upload.id, &out, &err), err);
    assert_int_equal(out.state, UPLOAD_COMPLETE);
    meta_upload_clear(&out);
    upload_init_result_clear(&a);
}

static void test_unknown_upload(void **state)
{
    fixture *f = *state;
    char id[CU_UUID_LEN + 1];
    util_uuid_v4(id);
    cu_error err;
    meta_upload u;
    meta_part *parts = NULL;
    int n = 0;
    assert_cu_fails(upload_status(f->svc, id, &u, &parts, &n, &err), CU_ENOTFOUND, err);
    assert_cu_fails(upload_complete(f->svc, id, &u, &err), CU_ENOTFOUND, err);
    assert_cu_fails(upload_cancel(f->svc, id, &err), CU_ENOTFOUND, err);
    assert_string_equal(upload_storage_name(f->svc), "local");
}

/* Storage refusing the move (a file where a directory must go) is an error the client
 * sees, and the upload goes back to pending, complete-able once the way is clear. */
static void test_complete_blocked_by_file(void **state)
{
    fixture *f = *state;
    upload_init_result a;
    init_upload(f, "evil/x.bin", 0, NULL, NULL, &a);
    char *blocker = path_join(f->root, "files/evil");
    FILE *fp = fopen(blocker, "w");
    assert_non_null(fp);
    fclose(fp);

    cu_error err;
    meta_upload out;
    assert_cu_fails(upload_complete(f->svc, a.upload.id, &out, &err), CU_ECONFLICT, err);
    expect_status(f, a.upload.id, UPLOAD_PENDING, 0);

    assert_int_equal(unlink(blocker), 0);
    assert_cu_ok(upload_complete(f->svc, a.upload.id, &out, &err), err);
    assert_int_equal(out.state, UPLOAD_COMPLETE);
    assert_non_null(out.final_path);
    meta_upload_clear(&out);
    free(blocker);
    upload_init_result_clear(&a);
}

/* Sizes near INT64_MAX must be refused as too many parts, not overflow. */
static void test_init_huge_size(void **state)
{
    fixture *f = *state;
    upload_init_request req = {.filename = "h.bin", .filename_len = 5, .total_size = INT64_MAX};
    upload_init_result res;
    cu_error err;
    assert_cu_fails(upload_init(f->svc, &req, &res, &err), CU_EINVAL, err);
    assert_non_null(strstr(err.msg, "largest file is"));
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_part_size),
        T(test_init),
        T(test_init_refusals),
        T(test_part_begin_errors),
        T(test_part_digest),
        T(test_part_body_sizes),
        T(test_complete),
        T(test_complete_checksum_mismatch),
        T(test_cancel),
        T(test_expiry),
        T(test_failed_removal_is_retried),
        T(test_empty_upload),
        T(test_unknown_upload),
        T(test_complete_blocked_by_file),
        T(test_init_huge_size),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
