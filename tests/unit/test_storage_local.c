/* test_storage_local.c - the local disk blob store, in a temp dir. */
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct {
    char *dir;  /* the temp dir */
    char *root; /* dir/store: the storage root */
    storage_t *s;
} fixture;

static int setup(void **state)
{
    log_set_level(LOG_ERROR + 1); /* expected failures are not news */
    fixture *f = calloc(1, sizeof *f);
    if (!f || !(f->dir = tmpdir_make()))
        return -1;
    f->root = path_join(f->dir, "store");
    cu_error err = {0};
    if (storage_local_open(f->root, true, &f->s, &err) != 0) {
        print_error("storage_local_open: %s\n", err.msg);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    storage_destroy(f->s);
    tmpdir_remove(f->dir);
    free(f->root);
    free(f);
    return 0;
}

/* root/.staging/<id>.data (malloc'ed). */
static char *staging_path(const fixture *f, const char *id)
{
    char rel[128];
    snprintf(rel, sizeof rel, ".staging/%s.data", id);
    return path_join(f->root, rel);
}

static void fill(unsigned char *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (unsigned char)((i * 131 + seed * 7 + (i >> 8)) & 0xff);
}

/* Writes data[0..len) as part `part` at offset through a fresh writer, in pieces of at most
 * `piece` bytes, and finishes it. */
/* Local storage does not use the part digest the upload service passes on. */
static const unsigned char no_digest[32];

static int stage(storage_t *s, const char *id, int64_t size, char **ref, cu_error *err)
{
    storage_upload u = {.id = id, .key = id, .total_size = size, .part_size = 1 << 20};
    return storage_stage_create(s, &u, ref, err);
}

/* Finishes u into key. */
static int finish_at(storage_t *s, const storage_upload *u, const char *key, char **final_path,
                     cu_error *err)
{
    storage_upload at = *u;
    at.key = key;
    return storage_finish(s, &at, NULL, 0, final_path, err);
}

static void write_part(fixture *f, const storage_upload *u, int part, int64_t offset,
                       const unsigned char *data, size_t len, size_t piece)
{
    storage_writer_t *w = NULL;
    cu_error err;
    (void)part;
    assert_cu_ok(storage_writer_open(f->s, u, offset, (int64_t)len, &w, &err), err);
    for (size_t done = 0; done < len;) {
        size_t n = len - done < piece ? len - done : piece;
        assert_cu_ok(storage_writer_write(w, data + done, n, &err), err);
        done += n;
    }
    storage_written written;
    assert_cu_ok(storage_writer_finish(w, no_digest, &written, &err), err);
    assert_int_equal(written.durable, (int64_t)len);
    storage_written_clear(&written);
}

static void test_open_creates_layout(void **state)
{
    fixture *f = *state;
    struct stat st;
    char *staging = path_join(f->root, ".staging"), *files = path_join(f->root, "files");
    assert_int_equal(stat(staging, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(stat(files, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(dir_count(staging), 0); /* the write probe is cleaned up */
    assert_string_equal(f->s->name, "local");
    free(staging);
    free(files);

    /* A nested root that does not exist yet, given with a trailing slash. */
    char *nested = path_join(f->dir, "a/b/c/");
    storage_t *s2 = NULL;
    cu_error err;
    assert_cu_ok(storage_local_open(nested, false, &s2, &err), err);
    char *nested_files = path_join(f->dir, "a/b/c/files");
    assert_int_equal(stat(nested_files, &st), 0);
    assert_true(S_ISDIR(st.st_mode));

    /* Final paths are reported under the root as configured, without a doubled slash. */
    char *ref = NULL;
    assert_cu_ok(stage(s2, "id-1", 0, &ref, &err), err);
    storage_upload u = {.id = "id-1", .storage_ref = ref, .total_size = 0, .part_size = 1 << 20};
    char *final_path = NULL;
    assert_cu_ok(finish_at(s2, &u, "k", &final_path, &err), err);
    char want[4096];
    snprintf(want, sizeof want, "%s/a/b/c/files/k", f->dir);
    assert_string_equal(final_path, want);
    free(final_path);
    free(ref);
    storage_destroy(s2);
    free(nested_files);
    free(nested);
}

static void test_open_refuses_root_under_file(void **state)
{
    fixture *f = *state;
    char *file = path_join(f->dir, "plain-file");
    assert_int_equal(file_write(file, "x", 1), 0);
    char *under = path_join(file, "store");
    storage_t *s2 = NULL;
    cu_error err;
    assert_cu_fails(storage_local_open(under, false, &s2, &err), CU_EIO, err);
    assert_non_null(strstr(err.msg, "LOCAL_STORAGE_PATH"));
    assert_cu_fails(storage_local_open(file, false, &s2, &err), CU_EIO, err);
    free(under);
    free(file);
}

static void test_stage_create_preallocates(void **state)
{
    fixture *f = *state;
    cu_error err;
    char *ref = NULL;
    assert_cu_ok(stage(f->s, "u-prealloc", 123457, &ref, &err), err);
    free(ref);
    char *path = staging_path(f, "u-prealloc");
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_size, 123457);

    /* The same id twice is refused (never truncates a live upload). */
    assert_int_not_equal(stage(f->s, "u-prealloc", 10, &ref, &err), 0);
    free(ref);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, 123457);
    free(path);
}

static void test_parts_finish_and_content(void **state)
{
    fixture *f = *state;
    cu_error err;
    enum { CHUNK = 4096, TOTAL = CHUNK * 2 + 1000 };
    static unsigned char data[TOTAL];
    fill(data, TOTAL, 1);

    char id[CU_UUID_LEN + 1];
    util_uuid_v4(id);
    char *ref = NULL;
    assert_cu_ok(stage(f->s, id, TOTAL, &ref, &err), err);
    storage_upload u = {.id = id, .storage_ref = ref, .total_size = TOTAL, .part_size = CHUNK};

    /* Parts in reverse order, each in several pieces of odd sizes. */
    write_part(f, &u, 2, 2 * CHUNK, data + 2 * CHUNK, 1000, 333);
    write_part(f, &u, 1, CHUNK, data + CHUNK, CHUNK, 1000);
    write_part(f, &u, 0, 0, data, CHUNK, 7);

    /* A writer refuses to write past its part's end, and writes nothing when it does. */
    storage_writer_t *w = NULL;
    assert_cu_ok(storage_writer_open(f->s, &u, 0, CHUNK, &w, &err), err);
    static unsigned char junk[CHUNK + 1];
    memset(junk, 0xee, sizeof junk);
    assert_int_not_equal(storage_writer_write(w, junk, CHUNK + 1, &err), 0);
    assert_cu_ok(storage_writer_write(w, data, CHUNK - 10, &err), err); /* same bytes again */
    assert_int_not_equal(storage_writer_write(w, junk, 11, &err), 0);
    storage_writer_abort(w);

    unsigned char got[32], want[32];
    SHA256(data, TOTAL, want);
    assert_cu_ok(storage_stage_sha256(f->s, &u, got, &err), err);
    assert_memory_equal(got, want, 32);

    char key[256];
    snprintf(key, sizeof key, "videos/2024/%s_movie.bin", id);
    char *final_path = NULL;
    assert_cu_ok(finish_at(f->s, &u, key, &final_path, &err), err);
    char want_path[4096];
    snprintf(want_path, sizeof want_path, "%s/files/%s", f->root, key);
    assert_string_equal(final_path, want_path);

    size_t len = 0;
    unsigned char *content = file_read(final_path, &len);
    assert_non_null(content);
    assert_int_equal(len, TOTAL);
    assert_memory_equal(content, data, TOTAL);
    free(content);
    char *staging = staging_path(f, id);
    assert_false(path_exists(staging)); /* moved, not copied */

    /* Again (a completion cut short after the rename): same answer, file untouched. */
    char *again = NULL;
    assert_cu_ok(finish_at(f->s, &u, key, &again, &err), err);
    assert_string_equal(again, final_path);
    content = file_read(final_path, &len);
    assert_non_null(content);
    assert_int_equal(len, TOTAL);
    assert_memory_equal(content, data, TOTAL);
    free(content);

    free(again);
    free(staging);
    free(final_path);
    free(ref);
}

/* Parts of whole MiB (as the server cuts them), larger than any write buffer the backend may
 * keep, written in pieces that do not line up with pages, with an unaligned last part; once
 * with durability on and once off. */
static void big_parts_round_trip(storage_t *s, const char *root)
{
    enum { MIB = 1 << 20, TOTAL = 2 * MIB + 5000 };
    unsigned char *data = malloc(TOTAL);
    assert_non_null(data);
    fill(data, TOTAL, 9);
    cu_error err;
    char id[CU_UUID_LEN + 1];
    util_uuid_v4(id);
    char *ref = NULL;
    assert_cu_ok(stage(s, id, TOTAL, &ref, &err), err);
    storage_upload u = {.id = id, .storage_ref = ref, .total_size = TOTAL, .part_size = MIB};

    static const struct {
        int part;
        int64_t offset, length;
        size_t piece;
    } parts[] = {{2, 2 * MIB, 5000, 999}, {0, 0, MIB, 100003}, {1, MIB, MIB, MIB}};
    for (size_t i = 0; i < 3; i++) {
        storage_writer_t *w = NULL;
        assert_cu_ok(storage_writer_open(s, &u, parts[i].offset, parts[i].length, &w, &err), err);
        const unsigned char *p = data + parts[i].offset;
        size_t len = (size_t)parts[i].length;
        /* Past the end is refused however much is still held back in a buffer. */
        assert_int_not_equal(storage_writer_write(w, p, len + 1, &err), 0);
        /* All but the last byte in pieces; then 2 bytes is one too many, 1 is right. */
        for (size_t done = 0; done < len - 1;) {
            size_t n = len - 1 - done < parts[i].piece ? len - 1 - done : parts[i].piece;
            assert_cu_ok(storage_writer_write(w, p + done, n, &err), err);
            done += n;
        }
        assert_int_not_equal(storage_writer_write(w, p + len - 1, 2, &err), 0);
        assert_cu_ok(storage_writer_write(w, p + len - 1, 1, &err), err);
        assert_int_not_equal(storage_writer_write(w, p, 1, &err), 0);
        storage_written written;
        assert_cu_ok(storage_writer_finish(w, no_digest, &written, &err), err);
        assert_int_equal(written.durable, parts[i].length);
        storage_written_clear(&written);
    }

    unsigned char got[32], want[32];
    SHA256(data, TOTAL, want);
    assert_cu_ok(storage_stage_sha256(s, &u, got, &err), err);
    assert_memory_equal(got, want, 32);

    char *final_path = NULL;
    assert_cu_ok(finish_at(s, &u, "big/file.bin", &final_path, &err), err);
    char want_path[4096];
    snprintf(want_path, sizeof want_path, "%s/files/big/file.bin", root);
    assert_string_equal(final_path, want_path);
    size_t len = 0;
    unsigned char *content = file_read(final_path, &len);
    assert_non_null(content);
    assert_int_equal(len, TOTAL);
    assert_memory_equal(content, data, TOTAL);
    free(content);
    free(final_path);
    free(ref);
    free(data);
}

static void test_big_parts(void **state)
{
    fixture *f = *state;
    big_parts_round_trip(f->s, f->root); /* durable */

    char *root2 = path_join(f->dir, "store-nosync");
    storage_t *s2 = NULL;
    cu_error err;
    assert_cu_ok(storage_local_open(root2, false, &s2, &err), err);
    big_parts_round_trip(s2, root2);
    storage_destroy(s2);
    free(root2);
}

static void test_abort(void **state)
{
    fixture *f = *state;
    cu_error err;
    char *ref = NULL;
    assert_cu_ok(stage(f->s, "u-abort", 4096, &ref, &err), err);
    storage_upload u = {
        .id = "u-abort", .storage_ref = ref, .total_size = 4096, .part_size = 1 << 20};
    char *path = staging_path(f, "u-abort");
    assert_true(path_exists(path));

    assert_cu_ok(storage_abort(f->s, &u, &err), err);
    assert_false(path_exists(path));
    assert_cu_ok(storage_abort(f->s, &u, &err), err); /* already gone: fine */

    /* Writing to it afterwards says the data is gone. */
    storage_writer_t *w = NULL;
    assert_cu_fails(storage_writer_open(f->s, &u, 0, 10, &w, &err), CU_EGONE, err);
    assert_false(path_exists(path));

    storage_upload unknown = {.id = "never-created", .total_size = 5, .part_size = 1 << 20};
    assert_cu_ok(storage_abort(f->s, &unknown, &err), err);
    free(path);
    free(ref);
}

/* One long stream (a tus PATCH): its buffers are written behind it by a thread of the
 * writer's. Whatever the moment a stream ends (all of it, cut in the middle of a buffer,
 * aborted with a buffer in flight), the file holds exactly the bytes reported durable. */
static void test_long_append_written_behind(void **state)
{
    fixture *f = *state;
    enum { TOTAL = 7 * 1024 * 1024 + 333 };
    unsigned char *data = malloc(TOTAL);
    fill(data, TOTAL, 9);
    cu_error err;
    char *ref = NULL;
    assert_cu_ok(stage(f->s, "u-long", TOTAL, &ref, &err), err);
    storage_upload u = {
        .id = "u-long", .storage_ref = ref, .total_size = TOTAL, .part_size = 1 << 20};
    storage_writer_t *w = NULL;
    storage_written written;
    /* 3 MiB and a bit in odd pieces, then cut: all of it is kept. */
    const size_t cut = 3 * 1024 * 1024 + 4097;
    assert_cu_ok(storage_append_open(f->s, &u, 0, &w, &err), err);
    for (size_t at = 0; at < cut;) {
        size_t n = cut - at < 65519 ? cut - at : 65519;
        assert_cu_ok(storage_writer_write(w, data + at, n, &err), err);
        at += n;
    }
    assert_cu_ok(storage_writer_finish(w, NULL, &written, &err), err);
    assert_int_equal(written.durable, (int64_t)cut);
    storage_written_clear(&written);
    /* An abort with buffers handed over: nothing of it is reported, nothing breaks. */
    assert_cu_ok(storage_append_open(f->s, &u, (int64_t)cut, &w, &err), err);
    assert_cu_ok(storage_writer_write(w, data + cut, 2 * 1024 * 1024, &err), err);
    storage_writer_abort(w);
    /* The rest from the durable end, in one piece larger than both buffers. */
    assert_cu_ok(storage_append_open(f->s, &u, (int64_t)cut, &w, &err), err);
    assert_cu_ok(storage_writer_write(w, data + cut, TOTAL - cut, &err), err);
    assert_int_not_equal(storage_writer_write(w, data, 1, &err), 0); /* past the end */
    assert_cu_ok(storage_writer_finish(w, NULL, &written, &err), err);
    assert_int_equal(written.durable, (int64_t)(TOTAL - cut));
    storage_written_clear(&written);
    unsigned char got[32], want[32];
    SHA256(data, TOTAL, want);
    assert_cu_ok(storage_stage_sha256(f->s, &u, got, &err), err);
    assert_memory_equal(got, want, 32);
    assert_cu_ok(storage_abort(f->s, &u, &err), err);
    free(ref);
    free(data);
}

static void test_empty_upload(void **state)
{
    fixture *f = *state;
    cu_error err;
    char *ref = NULL;
    assert_cu_ok(stage(f->s, "u-empty", 0, &ref, &err), err);
    storage_upload u = {.id = "u-empty", .storage_ref = ref, .total_size = 0, .part_size = 1 << 20};
    unsigned char got[32], want[32];
    SHA256((const unsigned char *)"", 0, want);
    assert_cu_ok(storage_stage_sha256(f->s, &u, got, &err), err);
    assert_memory_equal(got, want, 32);

    char *final_path = NULL;
    assert_cu_ok(finish_at(f->s, &u, "u-empty_empty.bin", &final_path, &err), err);
    struct stat st;
    assert_int_equal(stat(final_path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_size, 0);
    free(final_path);
    free(ref);
}

static void test_symlink_cannot_escape(void **state)
{
    fixture *f = *state;
    cu_error err;
    char *outside = tmpdir_make(); /* a directory outside the storage root */
    assert_non_null(outside);
    char *evil = path_join(f->root, "files/evil");
    assert_int_equal(symlink(outside, evil), 0);

    char *ref = NULL;
    assert_cu_ok(stage(f->s, "u-evil", 3, &ref, &err), err);
    storage_upload u = {.id = "u-evil", .storage_ref = ref, .total_size = 3, .part_size = 1 << 20};
    write_part(f, &u, 0, 0, (const unsigned char *)"abc", 3, 3);

    char *final_path = NULL;
    memset(&err, 0, sizeof err);
    int rc = finish_at(f->s, &u, "evil/x", &final_path, &err);
    assert_int_equal(rc, CU_ECONFLICT); /* a path conflict (409), never a 500 */
    assert_int_equal(err.code, rc);
    assert_null(final_path);
    assert_int_equal(dir_count(outside), 0); /* nothing written outside the root */
    char *staging = staging_path(f, "u-evil");
    assert_true(path_exists(staging)); /* the data is still there for a retry */

    /* Deeper: a real directory, then the symlink. */
    char *real = path_join(f->root, "files/real");
    assert_int_equal(mkdir(real, 0750), 0);
    char *deeper = path_join(f->root, "files/real/link");
    assert_int_equal(symlink(outside, deeper), 0);
    assert_cu_fails(finish_at(f->s, &u, "real/link/sub/x", &final_path, &err), CU_ECONFLICT, err);
    assert_int_equal(dir_count(outside), 0);

    /* A symlink where the file itself goes is replaced, not followed. */
    char *target = path_join(outside, "victim");
    char *leaf = path_join(f->root, "files/leaf");
    assert_int_equal(symlink(target, leaf), 0);
    assert_cu_ok(finish_at(f->s, &u, "leaf", &final_path, &err), err);
    assert_false(path_exists(target));
    struct stat st;
    assert_int_equal(lstat(leaf, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_size, 3);
    assert_int_equal(dir_count(outside), 0);

    free(final_path);
    free(leaf);
    free(target);
    free(deeper);
    free(real);
    free(staging);
    free(ref);
    free(evil);
    tmpdir_remove(outside);
}

/* A symbolic link planted where an upload's staging file is: no write, read or append
 * follows it out of the root. */
static void test_staging_symlink_is_not_followed(void **state)
{
    fixture *f = *state;
    cu_error err;
    char *outside = tmpdir_make();
    assert_non_null(outside);
    char *victim = path_join(outside, "victim");
    FILE *v = fopen(victim, "w");
    assert_non_null(v);
    fputs("untouched", v);
    fclose(v);
    char *ref = NULL;
    assert_cu_ok(stage(f->s, "u-planted", 9, &ref, &err), err);
    char *staging = staging_path(f, "u-planted");
    assert_int_equal(unlink(staging), 0);
    assert_int_equal(symlink(victim, staging), 0);
    storage_upload u = {
        .id = "u-planted", .storage_ref = ref, .total_size = 9, .part_size = 1 << 20};

    storage_writer_t *w = NULL;
    assert_cu_fails(storage_writer_open(f->s, &u, 0, 9, &w, &err), CU_EIO, err);
    assert_null(w);
    assert_cu_fails(storage_append_open(f->s, &u, 0, &w, &err), CU_EIO, err);
    unsigned char sum[32];
    assert_cu_fails(storage_stage_sha256(f->s, &u, sum, &err), CU_EIO, err);

    char got[32] = "";
    v = fopen(victim, "r");
    assert_non_null(v);
    assert_non_null(fgets(got, sizeof got, v));
    fclose(v);
    assert_string_equal(got, "untouched");
    struct stat st;
    assert_int_equal(lstat(staging, &st), 0);
    assert_true(S_ISLNK(st.st_mode));                 /* left as found */
    assert_cu_ok(storage_abort(f->s, &u, &err), err); /* removes the link, not the victim */
    assert_int_equal(stat(victim, &st), 0);
    free(staging);
    free(ref);
    free(victim);
    tmpdir_remove(outside);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_open_creates_layout),
        T(test_open_refuses_root_under_file),
        T(test_stage_create_preallocates),
        T(test_parts_finish_and_content),
        T(test_big_parts),
        T(test_abort),
        T(test_long_append_written_behind),
        T(test_empty_upload),
        T(test_symlink_cannot_escape),
        T(test_staging_symlink_is_not_followed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
