/* storage_contract.c - the storage interface's promises, checked against one real backend.
 *
 * The same suite runs against every backend (tests/integration/test_storage_contract.py
 * starts the real servers and runs this binary once per backend, configured like the server
 * itself: STORAGE_BACKEND, LOCAL_STORAGE_PATH, S3_*, SMB_*). A backend must keep every core
 * promise; each optional capability it claims (storage_caps) is held to its contract, and
 * one it does not claim must be refused with CU_ENOTSUP, never half done. Content is always
 * checked by reading it back through the backend's read capability, so a backend must have
 * that one for the suite to pass. */
#include <sys/statvfs.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/config.h"
#include "base/log.h"
#include "base/util.h"
#include "storage/storage.h"
#include "../unit/unit_helpers.h"

#include <curl/curl.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static storage_t *store;
static int64_t part_size;

static const char *env_lookup(void *ctx, const char *name)
{
    (void)ctx;
    if (!strcmp(name, "API_KEY"))
        return "contract";
    if (!strcmp(name, "JWT_SECRET"))
        return "contract-secret-0123456789";
    return getenv(name);
}

static void fill(unsigned char *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (unsigned char)((i * 131 + seed * 7 + (i >> 9)) & 0xff);
}

/* A staged upload and the pieces its writers reported. */
typedef struct {
    char id[CU_UUID_LEN + 1];
    char key[128];
    char *ref;
    storage_upload u;
    storage_chunk chunks[64];
    int nchunks;
} staged;

static void stage(staged *st, const char *name, int64_t total)
{
    memset(st, 0, sizeof *st);
    assert_int_equal(util_uuid_v4(st->id), 0);
    snprintf(st->key, sizeof st->key, "contract/%s_%s", st->id, name);
    st->u =
        (storage_upload){.id = st->id, .key = st->key, .total_size = total, .part_size = part_size};
    cu_error err;
    assert_cu_ok(storage_stage_create(store, &st->u, &st->ref, &err), err);
    st->u.storage_ref = st->ref;
}

static void keep_chunks(staged *st, storage_written *w)
{
    for (int i = 0; i < w->nchunks; i++) {
        assert_true(st->nchunks < 64);
        st->chunks[st->nchunks++] = w->chunks[i];
        w->chunks[i].ref = NULL; /* now owned by st */
    }
    storage_written_clear(w);
}

/* Chunks in index order, as finish wants them (writers may report them in any order). */
static void sort_chunks(staged *st)
{
    for (int i = 1; i < st->nchunks; i++)
        for (int j = i; j > 0 && st->chunks[j - 1].index > st->chunks[j].index; j--) {
            storage_chunk t = st->chunks[j];
            st->chunks[j] = st->chunks[j - 1];
            st->chunks[j - 1] = t;
        }
}

static void unstage(staged *st)
{
    for (int i = 0; i < st->nchunks; i++)
        free(st->chunks[i].ref);
    free(st->ref);
    memset(st, 0, sizeof *st);
}

static void write_slot(staged *st, int64_t offset, const unsigned char *data, int64_t len,
                       size_t piece)
{
    storage_writer_t *w = NULL;
    cu_error err;
    assert_cu_ok(storage_writer_open(store, &st->u, offset, len, &w, &err), err);
    for (int64_t done = 0; done < len;) {
        size_t n = len - done < (int64_t)piece ? (size_t)(len - done) : piece;
        assert_cu_ok(storage_writer_write(w, data + done, n, &err), err);
        done += (int64_t)n;
    }
    unsigned char md[32];
    SHA256(data, (size_t)len, md);
    storage_written written;
    assert_cu_ok(storage_writer_finish(w, md, &written, &err), err);
    assert_int_equal(written.durable, len);
    keep_chunks(st, &written);
}

static char *finish(staged *st)
{
    sort_chunks(st);
    char *final_path = NULL;
    cu_error err;
    assert_cu_ok(storage_finish(store, &st->u, st->chunks, st->nchunks, &final_path, &err), err);
    assert_non_null(final_path);
    return final_path;
}

/* Reads [offset, offset+len) of key back and compares it with want. */
static void assert_range(const char *key, int64_t offset, int64_t len, const unsigned char *want)
{
    storage_reader_t *r = NULL;
    cu_error err;
    assert_cu_ok(storage_read_open(store, key, offset, len, &r, &err), err);
    unsigned char *got = malloc((size_t)len + 1);
    assert_non_null(got);
    int64_t have = 0;
    for (;;) {
        ssize_t n =
            storage_read(r, got + have,
                         (size_t)(len + 1 - have) < 65536 ? (size_t)(len + 1 - have) : 65536, &err);
        assert_true(n >= 0);
        if (n == 0)
            break;
        have += n;
        assert_true(have <= len); /* never more than the range */
    }
    assert_int_equal(have, len);
    assert_memory_equal(got, want, (size_t)len);
    int fd = -1;
    int64_t at = -1;
    int fdrc = storage_reader_fd(r, &fd, &at);
    if (storage_caps(store) & STORAGE_CAP_READ_FD) {
        assert_int_equal(fdrc, 0);
        assert_true(fd >= 0);
    } else {
        assert_int_equal(fdrc, CU_ENOTSUP);
    }
    storage_reader_close(r);
    free(got);
}

static void assert_file(const char *key, const unsigned char *want, int64_t len)
{
    storage_file_info info;
    cu_error err;
    assert_cu_ok(storage_stat(store, key, &info, &err), err);
    assert_int_equal(info.size, len);
    assert_true(info.mtime > 1500000000);
    assert_range(key, 0, len, want);
}

static bool has(unsigned cap)
{
    return (storage_caps(store) & cap) != 0;
}

/* ---- core ---- */

static void test_slots_in_any_order(void **state)
{
    (void)state;
    int64_t total = 2 * part_size + 12345;
    unsigned char *data = malloc((size_t)total);
    assert_non_null(data);
    fill(data, (size_t)total, 1);
    staged st;
    stage(&st, "slots.bin", total);
    write_slot(&st, 2 * part_size, data + 2 * part_size, 12345, 999);
    write_slot(&st, 0, data, part_size, 65536 + 7);
    write_slot(&st, part_size, data + part_size, part_size, 1 << 20);
    if (has(STORAGE_CAP_STAGE_READ)) {
        unsigned char got[32], want[32];
        cu_error err;
        SHA256(data, (size_t)total, want);
        assert_cu_ok(storage_stage_sha256(store, &st.u, got, &err), err);
        assert_memory_equal(got, want, 32);
    }
    char *final_path = finish(&st);
    assert_non_null(strstr(final_path, st.key));
    assert_file(st.key, data, total);
    /* Finishing again (a completion cut short after the storage step) changes nothing. */
    char *again = finish(&st);
    assert_string_equal(again, final_path);
    assert_file(st.key, data, total);
    free(again);
    free(final_path);
    unstage(&st);
    free(data);
}

static void test_writer_refuses_past_its_end(void **state)
{
    (void)state;
    staged st;
    stage(&st, "bounds.bin", part_size + 10);
    storage_writer_t *w = NULL;
    cu_error err;
    assert_cu_ok(storage_writer_open(store, &st.u, part_size, 10, &w, &err), err);
    unsigned char buf[11] = "0123456789";
    assert_int_not_equal(storage_writer_write(w, buf, 11, &err), 0);
    storage_writer_abort(w);
    assert_cu_ok(storage_abort(store, &st.u, &err), err);
    unstage(&st);
}

static void test_abort_removes_and_is_idempotent(void **state)
{
    (void)state;
    staged st;
    stage(&st, "abort.bin", part_size);
    unsigned char *data = calloc(1, (size_t)part_size);
    assert_non_null(data);
    write_slot(&st, 0, data, part_size, 1 << 20);
    cu_error err;
    assert_cu_ok(storage_abort(store, &st.u, &err), err);
    assert_cu_ok(storage_abort(store, &st.u, &err), err);
    storage_writer_t *w = NULL;
    int rc = storage_writer_open(store, &st.u, 0, part_size, &w, &err);
    if (rc == 0) /* a backend may only find out when it writes or finishes */
        storage_writer_abort(w);
    else
        assert_true(rc == CU_EGONE || rc == CU_EUPSTREAM || rc == CU_EIO);
    storage_file_info info;
    assert_cu_fails(storage_stat(store, st.key, &info, &err), CU_ENOTFOUND, err);
    free(data);
    unstage(&st);
}

static void test_empty_file(void **state)
{
    (void)state;
    staged st;
    stage(&st, "empty.bin", 0);
    char *final_path = finish(&st);
    storage_file_info info;
    cu_error err;
    assert_cu_ok(storage_stat(store, st.key, &info, &err), err);
    assert_int_equal(info.size, 0);
    free(final_path);
    unstage(&st);
}

/* ---- capabilities ---- */

static void test_read_ranges(void **state)
{
    (void)state;
    assert_true(has(STORAGE_CAP_READ)); /* the suite reads everything back through it */
    int64_t total = part_size + 777;
    unsigned char *data = malloc((size_t)total);
    fill(data, (size_t)total, 3);
    staged st;
    stage(&st, "ranges.bin", total);
    write_slot(&st, 0, data, part_size, 300000);
    write_slot(&st, part_size, data + part_size, 777, 777);
    free(finish(&st));
    assert_range(st.key, 0, 1, data);
    assert_range(st.key, total - 1, 1, data + total - 1);
    assert_range(st.key, 1000, 5000, data + 1000);
    assert_range(st.key, part_size - 3, 10, data + part_size - 3);
    assert_range(st.key, 17, 0, data);
    storage_file_info info;
    cu_error err;
    assert_cu_fails(storage_stat(store, "contract/no-such-file", &info, &err), CU_ENOTFOUND, err);
    storage_reader_t *r = NULL;
    assert_int_not_equal(storage_read_open(store, "contract/no-such-file", 0, 1, &r, &err), 0);
    assert_null(r);
    free(data);
    unstage(&st);
}

static void test_remove(void **state)
{
    (void)state;
    cu_error err;
    if (!has(STORAGE_CAP_REMOVE)) {
        assert_cu_fails(storage_remove(store, "contract/x", &err), CU_ENOTSUP, err);
        return;
    }
    staged st;
    stage(&st, "remove.bin", 3);
    storage_writer_t *w = NULL;
    assert_cu_ok(storage_writer_open(store, &st.u, 0, 3, &w, &err), err);
    assert_cu_ok(storage_writer_write(w, "abc", 3, &err), err);
    storage_written written;
    unsigned char md[32];
    SHA256((const unsigned char *)"abc", 3, md);
    assert_cu_ok(storage_writer_finish(w, md, &written, &err), err);
    keep_chunks(&st, &written);
    free(finish(&st));
    assert_file(st.key, (const unsigned char *)"abc", 3);
    assert_cu_ok(storage_remove(store, st.key, &err), err);
    storage_file_info info;
    assert_cu_fails(storage_stat(store, st.key, &info, &err), CU_ENOTFOUND, err);
    assert_cu_ok(storage_remove(store, st.key, &err), err); /* gone already: fine */
    unstage(&st);
}

/* Appends data in the given piece sizes (each its own writer, as separate requests). */
static void append_all(staged *st, const unsigned char *data, const int64_t *pieces, int n)
{
    int64_t at = 0;
    cu_error err;
    for (int i = 0; i < n; i++) {
        storage_writer_t *w = NULL;
        assert_cu_ok(storage_append_open(store, &st->u, at, &w, &err), err);
        for (int64_t done = 0; done < pieces[i];) {
            size_t step = pieces[i] - done < 100000 ? (size_t)(pieces[i] - done) : 100000;
            assert_cu_ok(storage_writer_write(w, data + at + done, step, &err), err);
            done += (int64_t)step;
        }
        unsigned char md[32];
        SHA256(data + at, (size_t)pieces[i], md);
        storage_written written;
        assert_cu_ok(storage_writer_finish(w, md, &written, &err), err);
        assert_int_equal(written.durable, pieces[i]);
        keep_chunks(st, &written);
        at += pieces[i];
    }
}

static void test_append_any_size(void **state)
{
    (void)state;
    cu_error err;
    if (!has(STORAGE_CAP_APPEND)) {
        staged st;
        stage(&st, "noappend.bin", 10);
        storage_writer_t *w = NULL;
        assert_cu_fails(storage_append_open(store, &st.u, 0, &w, &err), CU_ENOTSUP, err);
        assert_cu_ok(storage_abort(store, &st.u, &err), err);
        unstage(&st);
        return;
    }
    /* Tiny and odd pieces, some crossing part boundaries, one bigger than a part. */
    const int64_t pieces[] = {1, 1000, part_size - 1001, 2, part_size + 5, 300, 4000};
    int64_t total = 0;
    for (size_t i = 0; i < sizeof pieces / sizeof *pieces; i++)
        total += pieces[i];
    unsigned char *data = malloc((size_t)total);
    fill(data, (size_t)total, 5);
    staged st;
    stage(&st, "append.bin", total);
    append_all(&st, data, pieces, (int)(sizeof pieces / sizeof *pieces));
    free(finish(&st));
    assert_file(st.key, data, total);
    free(data);
    unstage(&st);
}

static void test_append_cut_short_keeps_what_arrived(void **state)
{
    (void)state;
    if (!has(STORAGE_CAP_APPEND))
        return; /* refusal checked by test_append_any_size */
    int64_t total = 3000;
    unsigned char data[3000];
    fill(data, sizeof data, 6);
    staged st;
    stage(&st, "cut.bin", total);
    cu_error err;
    storage_writer_t *w = NULL;
    /* A request that meant to send everything, cut off after 1234 bytes: its finish (with no
     * digest, the caller cannot know one) keeps them. */
    assert_cu_ok(storage_append_open(store, &st.u, 0, &w, &err), err);
    assert_cu_ok(storage_writer_write(w, data, 1234, &err), err);
    storage_written written;
    assert_cu_ok(storage_writer_finish(w, NULL, &written, &err), err);
    assert_int_equal(written.durable, 1234);
    keep_chunks(&st, &written);
    /* An append that gets nothing at all keeps nothing and breaks nothing. */
    assert_cu_ok(storage_append_open(store, &st.u, 1234, &w, &err), err);
    assert_cu_ok(storage_writer_finish(w, NULL, &written, &err), err);
    assert_int_equal(written.durable, 0);
    keep_chunks(&st, &written);
    const int64_t rest[] = {total - 1234};
    st.u.total_size = total;
    /* The rest, from where the durable bytes end. */
    assert_cu_ok(storage_append_open(store, &st.u, 1234, &w, &err), err);
    assert_cu_ok(storage_writer_write(w, data + 1234, (size_t)rest[0], &err), err);
    assert_cu_ok(storage_writer_finish(w, NULL, &written, &err), err);
    assert_int_equal(written.durable, rest[0]);
    keep_chunks(&st, &written);
    free(finish(&st));
    assert_file(st.key, data, total);
    unstage(&st);
}

static void test_deferred_length(void **state)
{
    (void)state;
    cu_error err;
    staged st;
    if (!has(STORAGE_CAP_DEFER_LENGTH)) {
        storage_upload u = {
            .id = "deferred", .key = "deferred", .total_size = -1, .part_size = part_size};
        char *ref = NULL;
        assert_cu_fails(storage_stage_create(store, &u, &ref, &err), CU_ENOTSUP, err);
        assert_null(ref);
        return;
    }
    assert_true(has(STORAGE_CAP_APPEND)); /* a length given later needs appends */
    stage(&st, "deferred.bin", -1);
    int64_t total = part_size + 99;
    unsigned char *data = malloc((size_t)total);
    fill(data, (size_t)total, 7);
    const int64_t first[] = {5000};
    append_all(&st, data, first, 1);
    assert_cu_ok(storage_declare_length(store, &st.u, total, &err), err);
    st.u.total_size = total;
    storage_writer_t *w = NULL;
    assert_cu_ok(storage_append_open(store, &st.u, 5000, &w, &err), err);
    assert_cu_ok(storage_writer_write(w, data + 5000, (size_t)(total - 5000), &err), err);
    storage_written written;
    assert_cu_ok(storage_writer_finish(w, NULL, &written, &err), err);
    assert_int_equal(written.durable, total - 5000);
    keep_chunks(&st, &written);
    free(finish(&st));
    assert_file(st.key, data, total);
    free(data);
    unstage(&st);
}

static void test_concatenate(void **state)
{
    (void)state;
    cu_error err;
    staged dst;
    if (!has(STORAGE_CAP_CONCAT)) {
        stage(&dst, "noconcat.bin", 1);
        storage_written out;
        assert_cu_fails(storage_concat(store, &dst.u, NULL, 0, &out, &err), CU_ENOTSUP, err);
        assert_cu_ok(storage_abort(store, &dst.u, &err), err);
        unstage(&dst);
        return;
    }
    /* Three partial uploads as tus clients make them: whole parts but for the last one. */
    const int64_t sizes[] = {part_size, 2 * part_size, 4321};
    int64_t total = sizes[0] + sizes[1] + sizes[2];
    unsigned char *data = malloc((size_t)total);
    fill(data, (size_t)total, 8);
    staged parts[3];
    storage_source srcs[3];
    int64_t at = 0;
    for (int i = 0; i < 3; i++) {
        stage(&parts[i], "partial", sizes[i]);
        for (int64_t off = 0; off < sizes[i]; off += part_size) {
            int64_t len = sizes[i] - off < part_size ? sizes[i] - off : part_size;
            write_slot(&parts[i], off, data + at + off, len, 1 << 20);
        }
        sort_chunks(&parts[i]);
        srcs[i] = (storage_source){
            .upload = parts[i].u, .chunks = parts[i].chunks, .nchunks = parts[i].nchunks};
        at += sizes[i];
    }
    stage(&dst, "concatenated.bin", total);
    storage_written out;
    assert_cu_ok(storage_concat(store, &dst.u, srcs, 3, &out, &err), err);
    assert_int_equal(out.durable, total);
    keep_chunks(&dst, &out);
    free(finish(&dst));
    assert_file(dst.key, data, total);
    for (int i = 0; i < 3; i++) {
        assert_cu_ok(storage_abort(store, &parts[i].u, &err), err);
        unstage(&parts[i]);
    }
    free(data);
    unstage(&dst);
}

typedef struct {
    const char *want;
    bool found;
    int64_t changed_at;
    char ref[256];
} staged_search;

static int find_staged(void *ctx, const storage_staged *st)
{
    staged_search *q = ctx;
    if (!strcmp(st->id, q->want)) {
        q->found = true;
        q->changed_at = st->changed_at;
        snprintf(q->ref, sizeof q->ref, "%s", st->storage_ref ? st->storage_ref : "");
    }
    return 0;
}

static void test_sweep_lists_staging_objects(void **state)
{
    (void)state;
    cu_error err;
    staged_search q = {0};
    if (!has(STORAGE_CAP_SWEEP)) {
        assert_cu_fails(storage_list_staged(store, find_staged, &q, &err), CU_ENOTSUP, err);
        return;
    }
    staged st;
    stage(&st, "swept.bin", 10);
    q.want = st.id;
    assert_cu_ok(storage_list_staged(store, find_staged, &q, &err), err);
    assert_true(q.found);
    assert_true(q.changed_at > (int64_t)util_now() - 300); /* made just now */
    if (st.ref)
        assert_string_equal(q.ref, st.ref); /* what abort needs to find it again */
    assert_cu_ok(storage_abort(store, &st.u, &err), err);
    q.found = false;
    assert_cu_ok(storage_list_staged(store, find_staged, &q, &err), err);
    assert_false(q.found);
    unstage(&st);
}

/* Free space: what the backend reports is the filesystem's (CONTRACT_SPACE_OF names a
 * directory on the filesystem that holds the store, where the test knows one). */
static void test_free_space(void **state)
{
    (void)state;
    cu_error err;
    int64_t bytes = -1;
    if (!has(STORAGE_CAP_SPACE)) {
        assert_cu_fails(storage_available(store, &bytes, &err), CU_ENOTSUP, err);
        return;
    }
    assert_cu_ok(storage_available(store, &bytes, &err), err);
    assert_true(bytes > 0);
    const char *dir = getenv("CONTRACT_SPACE_OF");
    struct statvfs st;
    if (dir && statvfs(dir, &st) == 0) {
        double want = (double)st.f_bavail * (double)st.f_frsize;
        double off = (double)bytes - want;
        if (off < 0)
            off = -off;
        if (off > want * 0.05 + (64 << 20))
            fail_msg("%s storage reports %lld bytes free, the filesystem %.0f", store->name,
                     (long long)bytes, want);
    }
}

/* What a GET of a presigned URL brought: the body (bounded) and two headers. */
typedef struct {
    unsigned char body[4096];
    size_t len;
    char type[128], disposition[512];
} fetched;

static size_t fetched_body(char *p, size_t size, size_t n, void *ctx)
{
    fetched *f = ctx;
    size_t len = size * n;
    if (f->len + len > sizeof f->body)
        return 0;
    memcpy(f->body + f->len, p, len);
    f->len += len;
    return len;
}

static size_t fetched_header(char *p, size_t size, size_t n, void *ctx)
{
    fetched *f = ctx;
    size_t len = size * n;
    char line[600];
    snprintf(line, sizeof line, "%.*s", (int)(len < sizeof line - 1 ? len : sizeof line - 1), p);
    line[strcspn(line, "\r\n")] = '\0';
    if (!strncasecmp(line, "content-type: ", 14))
        snprintf(f->type, sizeof f->type, "%.127s", line + 14);
    if (!strncasecmp(line, "content-disposition: ", 21))
        snprintf(f->disposition, sizeof f->disposition, "%.511s", line + 21);
    return len;
}

/* GETs url without any credential of ours; returns the HTTP status. */
static long fetch(const char *url, fetched *out)
{
    memset(out, 0, sizeof *out);
    CURL *h = curl_easy_init();
    assert_non_null(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, fetched_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, fetched_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, out);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
    assert_int_equal(curl_easy_perform(h), CURLE_OK);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    return status;
}

static void test_presigned_urls(void **state)
{
    (void)state;
    cu_error err;
    char *url = NULL;
    if (!has(STORAGE_CAP_PRESIGN)) {
        assert_cu_fails(storage_presign_get(store, "contract/x", 60, NULL, NULL, &url, &err),
                        CU_ENOTSUP, err);
        assert_null(url);
        return;
    }
    unsigned char data[3000];
    fill(data, sizeof data, 11);
    staged st;
    stage(&st, "presigned file.bin", sizeof data);
    write_slot(&st, 0, data, sizeof data, 1000);
    free(finish(&st));
    const char *disposition =
        "attachment; filename=\"r_sum_.bin\"; filename*=UTF-8''r%C3%A9sum%C3%A9.bin";
    assert_cu_ok(
        storage_presign_get(store, st.key, 60, "application/x-contract", disposition, &url, &err),
        err);
    fetched got;
    assert_int_equal(fetch(url, &got), 200);
    assert_int_equal(got.len, sizeof data);
    assert_memory_equal(got.body, data, sizeof data);
    assert_string_equal(got.type, "application/x-contract");
    assert_string_equal(got.disposition, disposition);
    /* The signature covers the URL: one changed byte of the key is refused. */
    char *tampered = strdup(url);
    char *at = strstr(tampered, "presigned");
    assert_non_null(at);
    at[0] = 'P';
    assert_int_equal(fetch(tampered, &got), 403);
    free(tampered);
    free(url);
    /* A URL stops working at its expiry. */
    assert_cu_ok(storage_presign_get(store, st.key, 1, NULL, NULL, &url, &err), err);
    util_sleep(2.1);
    assert_int_equal(fetch(url, &got), 403);
    free(url);
    assert_cu_fails(storage_presign_get(store, st.key, 0, NULL, NULL, &url, &err), CU_EINVAL, err);
    unstage(&st);
}

static void test_unclaimed_capabilities_are_refused(void **state)
{
    (void)state;
    /* The mask is what the tables say, and the dispatcher refuses what is missing. */
    unsigned caps = storage_caps(store);
    assert_int_equal(!!(caps & STORAGE_CAP_READ), store->read != NULL);
    assert_int_equal(!!(caps & STORAGE_CAP_REMOVE), store->remove != NULL);
    assert_int_equal(!!(caps & STORAGE_CAP_CONCAT), store->concat != NULL);
    assert_int_equal(!!(caps & STORAGE_CAP_DEFER_LENGTH), store->defer != NULL);
    assert_int_equal(!!(caps & STORAGE_CAP_APPEND), store->append != NULL);
    assert_int_equal(!!(caps & STORAGE_CAP_STAGE_READ), store->stage_read != NULL);
    assert_int_equal(!!(caps & STORAGE_CAP_PRESIGN), store->presign != NULL);
    if (!(caps & STORAGE_CAP_STAGE_READ)) {
        staged st;
        stage(&st, "nostageread.bin", 1);
        unsigned char md[32];
        cu_error err;
        assert_cu_fails(storage_stage_sha256(store, &st.u, md, &err), CU_ENOTSUP, err);
        assert_cu_ok(storage_abort(store, &st.u, &err), err);
        unstage(&st);
    }
    char words[256];
    storage_caps_describe(caps, words, sizeof words);
    print_message("%s storage: %s\n", store->name, words);
}

int main(void)
{
    log_set_level(LOG_ERROR + 1);
    const char *level = getenv("CONTRACT_LOG_LEVEL");
    if (level)
        log_set_level(log_level_parse(level));
    cu_config cfg;
    char msg[512];
    if (config_load(&cfg, env_lookup, NULL, NULL, msg, sizeof msg) != 0) {
        fprintf(stderr, "storage_contract: configuration: %s\n", msg);
        return 2;
    }
    cu_error err;
    if (storage_open_configured(&cfg, &store, &err) != 0) {
        fprintf(stderr, "storage_contract: %s\n", err.msg);
        config_free(&cfg);
        return 2;
    }
    part_size = store->min_part_size > (1 << 20) ? store->min_part_size : 1 << 20;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slots_in_any_order),
        cmocka_unit_test(test_writer_refuses_past_its_end),
        cmocka_unit_test(test_abort_removes_and_is_idempotent),
        cmocka_unit_test(test_empty_file),
        cmocka_unit_test(test_read_ranges),
        cmocka_unit_test(test_remove),
        cmocka_unit_test(test_append_any_size),
        cmocka_unit_test(test_append_cut_short_keeps_what_arrived),
        cmocka_unit_test(test_deferred_length),
        cmocka_unit_test(test_concatenate),
        cmocka_unit_test(test_sweep_lists_staging_objects),
        cmocka_unit_test(test_free_space),
        cmocka_unit_test(test_presigned_urls),
        cmocka_unit_test(test_unclaimed_capabilities_are_refused),
    };
    int failed = cmocka_run_group_tests_name(store->name, tests, NULL, NULL);
    storage_destroy(store);
    config_free(&cfg);
    return failed ? 1 : 0;
}
