/* test_storage_s3.c - the S3 backend's own promises, beyond the storage contract.
 *
 * Addressing needs no S3 and always runs. The rest runs when S3_ENDPOINT is set, as
 * tests/integration/test_s3.py does against the test S3 server (s3rver behind
 * tests/s3/launcher.js, configured like the server: S3_*, AWS_*, TEMP_STORAGE_PATH): what an
 * append leaves in the spool across a crash and a restart, reads in small pieces (and
 * resumed when the launcher breaks downloads off), concatenation of sources below S3's part
 * minimum, and finishing again after a crash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/log.h"
#include "base/util.h"
#include "storage/storage.h"
#include "unit_helpers.h"

#include <openssl/sha.h>
#include <signal.h>
#include <sys/wait.h>

static void expect_base_url(const char *endpoint, const char *bucket, const char *region,
                            const char *want)
{
    char *got = storage_s3_base_url(endpoint, bucket, region);
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static void test_base_url(void **state)
{
    (void)state;
    /* An endpoint (MinIO, R2, Ceph, ...): path style, trailing slashes dropped. */
    expect_base_url("http://127.0.0.1:9000", "b", "us-east-1", "http://127.0.0.1:9000/b");
    expect_base_url("https://minio.example//", "my.bucket", "eu-west-1",
                    "https://minio.example/my.bucket");
    /* AWS itself: virtual-host style... */
    expect_base_url(NULL, "uploads", "eu-central-1",
                    "https://uploads.s3.eu-central-1.amazonaws.com");
    expect_base_url("", "uploads", "us-east-1", "https://uploads.s3.us-east-1.amazonaws.com");
    /* ...but path style when the bucket name has dots (TLS wildcard certificates). */
    expect_base_url(NULL, "media.example.com", "us-west-2",
                    "https://s3.us-west-2.amazonaws.com/media.example.com");
}

static void test_endpoint(void **state)
{
    (void)state;
    char *e = storage_s3_endpoint("http://host:9000/", "us-east-1");
    assert_string_equal(e, "http://host:9000");
    free(e);
    e = storage_s3_endpoint(NULL, "ap-south-1");
    assert_string_equal(e, "https://s3.ap-south-1.amazonaws.com");
    free(e);
}

/* ---- against an S3 server ---- */

#define MIB ((int64_t)1 << 20)

static storage_t *store;
static const int64_t P = 5 * MIB; /* the part size: S3's minimum */

static int open_store(storage_t **out)
{
    storage_s3_options o = {.endpoint = getenv("S3_ENDPOINT"),
                            .bucket = getenv("S3_BUCKET"),
                            .region = getenv("S3_REGION"),
                            .access_key_id = getenv("AWS_ACCESS_KEY_ID"),
                            .secret_access_key = getenv("AWS_SECRET_ACCESS_KEY"),
                            .session_token = getenv("AWS_SESSION_TOKEN"),
                            .spool_dir = getenv("TEMP_STORAGE_PATH")};
    cu_error err;
    int rc = storage_s3_open(&o, out, &err);
    if (rc)
        print_error("storage_s3_open: %s\n", err.msg);
    return rc;
}

static unsigned char *pattern(int64_t len, unsigned seed)
{
    unsigned char *p = malloc((size_t)len);
    assert_non_null(p);
    for (int64_t i = 0; i < len; i++)
        p[i] = (unsigned char)((i * 167 + seed * 13 + (i >> 11)) & 0xff);
    return p;
}

/* An upload as the upload service keeps it: what storage made of it, and the chunks it was
 * told about (a chunk reported again under its index replaces the old one). */
typedef struct {
    char id[CU_UUID_LEN + 1];
    char key[128];
    char *ref;
    storage_upload u;
    storage_chunk chunks[64];
    int nchunks;
} upload;

static void begin(upload *up, const char *name, int64_t total)
{
    memset(up, 0, sizeof *up);
    assert_int_equal(util_uuid_v4(up->id), 0);
    snprintf(up->key, sizeof up->key, "s3test/%s_%s", up->id, name);
    up->u = (storage_upload){.id = up->id, .key = up->key, .total_size = total, .part_size = P};
    cu_error err;
    assert_cu_ok(storage_stage_create(store, &up->u, &up->ref, &err), err);
    up->u.storage_ref = up->ref;
}

static void record(upload *up, storage_written *w)
{
    for (int i = 0; i < w->nchunks; i++) {
        int at = 0;
        while (at < up->nchunks && up->chunks[at].index < w->chunks[i].index)
            at++;
        if (at < up->nchunks && up->chunks[at].index == w->chunks[i].index) {
            free(up->chunks[at].ref);
        } else {
            assert_true(up->nchunks < 64);
            memmove(&up->chunks[at + 1], &up->chunks[at],
                    (size_t)(up->nchunks - at) * sizeof *up->chunks);
            up->nchunks++;
        }
        up->chunks[at] = w->chunks[i];
        w->chunks[i].ref = NULL;
    }
    storage_written_clear(w);
}

/* One append of len bytes at `at` (one request); its chunks are recorded only when keep (a
 * crash before the caller recorded them is an append whose chunks are dropped). */
static void append(upload *up, int64_t at, const unsigned char *data, int64_t len, bool keep)
{
    storage_writer_t *w = NULL;
    cu_error err;
    assert_cu_ok(storage_append_open(store, &up->u, at, &w, &err), err);
    for (int64_t done = 0; done < len;) {
        size_t n = len - done < 70001 ? (size_t)(len - done) : 70001;
        assert_cu_ok(storage_writer_write(w, data + done, n, &err), err);
        done += (int64_t)n;
    }
    storage_written written;
    assert_cu_ok(storage_writer_finish(w, NULL, &written, &err), err);
    assert_int_equal(written.durable, len);
    if (keep)
        record(up, &written);
    storage_written_clear(&written);
}

static void complete(upload *up)
{
    char *final_path = NULL;
    cu_error err;
    assert_cu_ok(storage_finish(store, &up->u, up->chunks, up->nchunks, &final_path, &err), err);
    free(final_path);
}

static void end(upload *up)
{
    for (int i = 0; i < up->nchunks; i++)
        free(up->chunks[i].ref);
    free(up->ref);
    memset(up, 0, sizeof *up);
}

/* [offset, offset + len) of the object at key is want, read in pieces of at most piece. */
static void expect_range(const char *key, int64_t offset, int64_t len, const unsigned char *want,
                         size_t piece)
{
    storage_reader_t *r = NULL;
    cu_error err;
    assert_cu_ok(storage_read_open(store, key, offset, len, &r, &err), err);
    unsigned char *buf = malloc(piece);
    assert_non_null(buf);
    int64_t have = 0;
    for (ssize_t n; (n = storage_read(r, buf, piece, &err)) != 0; have += n) {
        if (n < 0)
            print_error("storage_read: %s\n", err.msg);
        assert_true(n > 0 && have + n <= len);
        assert_memory_equal(buf, want + have, (size_t)n);
    }
    assert_int_equal(have, len);
    storage_reader_close(r);
    free(buf);
}

static void expect_object(const char *key, const unsigned char *want, int64_t len)
{
    storage_file_info info;
    cu_error err;
    assert_cu_ok(storage_stat(store, key, &info, &err), err);
    assert_int_equal(info.size, len);
    expect_range(key, 0, len, want, 1 << 16);
}

static void expect_gone(const char *key)
{
    storage_file_info info;
    cu_error err;
    assert_cu_fails(storage_stat(store, key, &info, &err), CU_ENOTFOUND, err);
}

/* The names in the upload's append spool, as one string "0 1" (sorted), into out. */
static void spool_names(const upload *up, char *out, size_t cap)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/appends/%s", getenv("TEMP_STORAGE_PATH"), up->id);
    out[0] = '\0';
    struct dirent **names = NULL;
    int n = scandir(dir, &names, NULL, alphasort);
    for (int i = 0; i < n; i++) {
        if (names[i]->d_name[0] != '.')
            snprintf(out + strlen(out), cap - strlen(out), "%s%s", out[0] ? " " : "",
                     names[i]->d_name);
        free(names[i]);
    }
    free(names);
}

static void test_reads_in_small_pieces(void **state)
{
    (void)state;
    int64_t total = 2 * P + 3 * MIB + 11;
    unsigned char *data = pattern(total, 1);
    upload up;
    begin(&up, "read.bin", total);
    append(&up, 0, data, total, true);
    complete(&up);
    /* Far smaller pieces than libcurl hands over: the spill and the pauses at work. */
    expect_range(up.key, 0, total, data, 999);
    expect_range(up.key, P - 3, 1000, data + P - 3, 7);
    expect_range(up.key, total - 1, 1, data + total - 1, 1);
    cu_error err;
    assert_cu_ok(storage_remove(store, up.key, &err), err);
    expect_gone(up.key);
    end(&up);
    free(data);
}

static void test_append_cuts_what_was_never_recorded(void **state)
{
    (void)state;
    unsigned char *data = pattern(1700, 2), *junk = pattern(500, 99);
    upload up;
    begin(&up, "cut.bin", 1700);
    append(&up, 0, data, 1000, true);
    append(&up, 1000, junk, 500, false); /* the server died before the caller recorded it */
    append(&up, 1000, data + 1000, 700, true);
    complete(&up);
    expect_object(up.key, data, 1700);
    end(&up);
    free(data);
    free(junk);
}

static void test_append_sends_a_part_again_after_a_crash(void **state)
{
    (void)state;
    int64_t total = P + 190;
    unsigned char *data = pattern(total, 3), *junk = pattern(100, 98);
    upload up;
    begin(&up, "resend.bin", total);
    append(&up, 0, data, P - 10, true);
    /* Fills part 1 (S3 gets it with bytes the caller never recorded) and starts part 2. */
    append(&up, P - 10, junk, 100, false);
    char names[256];
    spool_names(&up, names, sizeof names);
    assert_string_equal(names, "0 1"); /* the part it started in stays */
    /* From the recorded offset: part 1 is rebuilt from the spool and sent again. */
    append(&up, P - 10, data + P - 10, 200, true);
    spool_names(&up, names, sizeof names);
    assert_string_equal(names, "0 1");
    complete(&up);
    spool_names(&up, names, sizeof names);
    assert_string_equal(names, "");
    expect_object(up.key, data, total);
    end(&up);
    free(data);
    free(junk);
}

static void test_one_large_append_keeps_two_spool_files(void **state)
{
    (void)state;
    int64_t total = 4 * P + 10;
    unsigned char *data = pattern(total, 4);
    upload up;
    begin(&up, "large.bin", total);
    append(&up, 0, data, 1000, true);
    append(&up, 1000, data + 1000, total - 1000, true); /* sends parts 1 to 4 */
    assert_int_equal(up.nchunks, 4);
    char names[256];
    spool_names(&up, names, sizeof names);
    assert_string_equal(names, "0 4"); /* where it started, and the tail */
    complete(&up);
    expect_object(up.key, data, total);
    end(&up);
    free(data);
}

static void test_spool_survives_kill_and_restart(void **state)
{
    (void)state;
    int64_t total = P + 77;
    unsigned char *data = pattern(total, 5), *junk = pattern(2000, 97);
    upload up;
    begin(&up, "killed.bin", -1);
    storage_destroy(store); /* the child shares no connection with us */
    store = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* A server that acknowledges 3000 appended bytes, takes 2000 more and dies by
         * SIGKILL before it can record them. */
        storage_writer_t *w = NULL;
        storage_written written;
        bool ok = open_store(&store) == 0 && storage_append_open(store, &up.u, 0, &w, NULL) == 0 &&
                  storage_writer_write(w, data, 3000, NULL) == 0 &&
                  storage_writer_finish(w, NULL, &written, NULL) == 0 && written.durable == 3000 &&
                  storage_append_open(store, &up.u, 3000, &w, NULL) == 0 &&
                  storage_writer_write(w, junk, 2000, NULL) == 0;
        if (ok)
            kill(getpid(), SIGKILL);
        _exit(1);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    assert_int_equal(open_store(&store), 0); /* the restarted server */
    append(&up, 3000, data + 3000, 1000, true);
    cu_error err;
    assert_cu_ok(storage_declare_length(store, &up.u, total, &err), err);
    up.u.total_size = total;
    append(&up, 4000, data + 4000, total - 4000, true);
    complete(&up);
    expect_object(up.key, data, total);
    end(&up);
    free(data);
    free(junk);
}

static void test_finish_again_after_a_crash_before_the_spool_went(void **state)
{
    (void)state;
    int64_t total = P + 5000;
    unsigned char *data = pattern(total, 6);
    upload up;
    begin(&up, "again.bin", total);
    append(&up, 0, data, total, true);
    /* Keep the spool's last part as a crash right after CompleteMultipartUpload would. */
    char tail[4096], saved[4096];
    snprintf(tail, sizeof tail, "%s/appends/%s/1", getenv("TEMP_STORAGE_PATH"), up.id);
    snprintf(saved, sizeof saved, "%s.saved", getenv("TEMP_STORAGE_PATH"));
    assert_int_equal(link(tail, saved), 0);
    complete(&up);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/appends/%s", getenv("TEMP_STORAGE_PATH"), up.id);
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(rename(saved, tail), 0);
    complete(&up); /* sends the part again: NoSuchUpload, and the object is there */
    char names[256];
    spool_names(&up, names, sizeof names);
    assert_string_equal(names, "");
    expect_object(up.key, data, total);
    end(&up);
    free(data);
}

static void test_concatenate_sources_below_the_part_minimum(void **state)
{
    (void)state;
    /* Whole parts (copied by S3), small sources and a small rest (through the spool). */
    const int64_t sizes[] = {P, 3 * MIB, 1, P + 2 * MIB, 2 * MIB, 4321};
    enum { N = sizeof sizes / sizeof *sizes };
    int64_t total = 0;
    for (int i = 0; i < N; i++)
        total += sizes[i];
    unsigned char *data = pattern(total, 7);
    upload srcs[N], dst;
    storage_source sources[N];
    int64_t at = 0;
    for (int i = 0; i < N; i++) {
        begin(&srcs[i], "partial", sizes[i]);
        append(&srcs[i], 0, data + at, sizes[i], true);
        sources[i] = (storage_source){
            .upload = srcs[i].u, .chunks = srcs[i].chunks, .nchunks = srcs[i].nchunks};
        at += sizes[i];
    }
    begin(&dst, "concatenated.bin", total);
    storage_written out;
    cu_error err;
    assert_cu_ok(storage_concat(store, &dst.u, sources, N, &out, &err), err);
    assert_int_equal(out.durable, total);
    for (int i = 0; i + 1 < out.nchunks; i++)
        assert_true(out.chunks[i].size >= P); /* S3 refuses smaller parts but for the last */
    record(&dst, &out);
    complete(&dst);
    expect_object(dst.key, data, total);
    for (int i = 0; i < N; i++) {
        assert_cu_ok(storage_abort(store, &srcs[i].u, &err), err);
        expect_gone(srcs[i].key);
        end(&srcs[i]);
    }
    end(&dst);
    free(data);
}

static void test_deferred_upload_finished_empty(void **state)
{
    (void)state;
    upload up;
    begin(&up, "nothing.bin", -1);
    assert_non_null(up.ref); /* a multipart upload, which finish must abort */
    cu_error err;
    assert_cu_ok(storage_declare_length(store, &up.u, 0, &err), err);
    up.u.total_size = 0;
    complete(&up);
    complete(&up);
    expect_object(up.key, (const unsigned char *)"", 0);
    end(&up);
}

int main(void)
{
    const struct CMUnitTest addressing[] = {
        cmocka_unit_test(test_base_url),
        cmocka_unit_test(test_endpoint),
    };
    int failed = cmocka_run_group_tests_name("s3 addressing", addressing, NULL, NULL);
    if (!getenv("S3_ENDPOINT"))
        return failed; /* the rest needs an S3 server: test_s3.py gives it one */
    log_set_level(LOG_ERROR + 1);
    if (getenv("CONTRACT_LOG_LEVEL"))
        log_set_level(log_level_parse(getenv("CONTRACT_LOG_LEVEL")));
    if (open_store(&store) != 0)
        return 2;
    const struct CMUnitTest s3[] = {
        cmocka_unit_test(test_reads_in_small_pieces),
        cmocka_unit_test(test_append_cuts_what_was_never_recorded),
        cmocka_unit_test(test_append_sends_a_part_again_after_a_crash),
        cmocka_unit_test(test_one_large_append_keeps_two_spool_files),
        cmocka_unit_test(test_spool_survives_kill_and_restart),
        cmocka_unit_test(test_finish_again_after_a_crash_before_the_spool_went),
        cmocka_unit_test(test_concatenate_sources_below_the_part_minimum),
        cmocka_unit_test(test_deferred_upload_finished_empty),
    };
    failed += cmocka_run_group_tests_name("s3 backend", s3, NULL, NULL);
    storage_destroy(store);
    return failed ? 1 : 0;
}
