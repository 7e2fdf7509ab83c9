/* test_filename.c - the policy for client-chosen file names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/filename.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void assert_accepted_len(const char *name, size_t len)
{
    cu_error err = {0};
    int rc = filename_check(name, len, &err);
    if (rc != 0)
        print_error("\"%.*s\" (%zu bytes) refused: %s\n", (int)(len > 80 ? 80 : len), name, len,
                    err.msg);
    assert_int_equal(rc, 0);
}

static void assert_refused_len(const char *name, size_t len)
{
    cu_error err = {0};
    int rc = filename_check(name, len, &err);
    if (rc != CU_EINVAL)
        print_error("\"%.*s\" (%zu bytes) not refused (rc %d)\n", (int)(len > 80 ? 80 : len), name,
                    len, rc);
    assert_int_equal(rc, CU_EINVAL);
    assert_int_equal(err.code, CU_EINVAL);
    assert_true(err.msg[0] != '\0');
}

static void assert_accepted(const char *name)
{
    assert_accepted_len(name, strlen(name));
}

static void assert_refused(const char *name)
{
    assert_refused_len(name, strlen(name));
}

/* A string of n copies of c (malloc'ed). */
static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

static void test_accepts_ordinary_names(void **state)
{
    (void)state;
    assert_accepted("a.bin");
    assert_accepted("videos/2024/movie.mp4");
    assert_accepted("my holiday video (final).mp4");
    assert_accepted(
        "\xc3\xa9t\xc3\xa9/\xe6\x96\x87\xe4\xbb\xb6 \xf0\x9f\x8e\xac.txt"); /* été/文件 🎬 */
    assert_accepted(".hidden");
    assert_accepted("..foo/a..b/...");
    assert_accepted("x");
}

static void test_refuses_bad_paths(void **state)
{
    (void)state;
    const char *bad[] = {"",     "/etc/passwd", "../x", "a/../b", "./a", "a/./b", "a//b", "a/",
                         "a/..", "a/.",         ".",    "..",     "/",   "a\\b",  "\\x"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_refused(bad[i]);
}

/* A directory named like a stored file could stand where another upload's file must go. */
static void test_refuses_directories_named_like_stored_files(void **state)
{
    (void)state;
    assert_refused("0b0b0b0b-0000-4000-8000-000000000001_movie.mp4/x");
    assert_refused("dir/0B0B0B0B-0000-4000-8000-000000000001_a/x");
    assert_refused("a/b/0b0b0b0b-0000-4000-8000-000000000001_/x");
    /* As the file's own name it is harmless (it is stored as "<id>_<name>"), and a directory
     * that only looks similar is fine. */
    assert_accepted("0b0b0b0b-0000-4000-8000-000000000001_movie.mp4");
    assert_accepted("0b0b0b0b-0000-4000-8000-000000000001/x");
    assert_accepted("0b0b0b0b-0000-4000-8000-00000000000_x/y");
    assert_accepted("0b0b0b0b-0000-4000-8000-00000000000g_x/y");
}

static void test_refuses_control_characters(void **state)
{
    (void)state;
    assert_refused_len("a\0b", 3); /* an embedded NUL, inside the declared length */
    assert_refused_len("ab\0", 3);
    assert_refused("\n");
    assert_refused("a\nb");
    assert_refused("a\tb");
    assert_refused("a\rb");
    assert_refused("\x7f");
    assert_refused("dir\x1b/x");
    /* Only len bytes are looked at: a NUL after them does not matter. */
    assert_accepted_len("abc\0def", 3);
}

static void test_component_limits(void **state)
{
    (void)state;
    char buf[2048];

    /* A directory component of 255 bytes is fine, 256 is not. */
    char *c255 = repeat('d', 255), *c256 = repeat('d', 256);
    snprintf(buf, sizeof buf, "%s/x", c255);
    assert_accepted(buf);
    snprintf(buf, sizeof buf, "%s/x", c256);
    assert_refused(buf);
    assert_refused(c256);
    free(c255);
    free(c256);

    /* The base name: at most FILENAME_MAX_BASENAME (218) bytes, so "<uuid>_<name>" fits. */
    assert_int_equal(FILENAME_MAX_BASENAME, 218);
    char *b218 = repeat('b', 218), *b219 = repeat('b', 219);
    assert_accepted(b218);
    assert_refused(b219);
    snprintf(buf, sizeof buf, "dir/%s", b218);
    assert_accepted(buf);
    snprintf(buf, sizeof buf, "dir/%s", b219);
    assert_refused(buf);
    free(b218);
    free(b219);
}

/* d1/d2/d3/d4/base with directories of 200, 200, 200 and last_dir bytes and a 218-byte base:
 * 4 slashes + 600 + last_dir + 218 = 822 + last_dir bytes. */
static char *long_name(size_t last_dir)
{
    char *d = repeat('d', 200), *last = repeat('e', last_dir), *base = repeat('b', 218);
    size_t len = 822 + last_dir + 1;
    char *name = malloc(len);
    assert_non_null(name);
    snprintf(name, len, "%s/%s/%s/%s/%s", d, d, d, last, base);
    free(d);
    free(last);
    free(base);
    return name;
}

static void test_total_limit(void **state)
{
    (void)state;
    assert_int_equal(FILENAME_MAX_TOTAL, 1024);
    char *exact = long_name(202), *over = long_name(203);
    assert_int_equal(strlen(exact), 1024);
    assert_int_equal(strlen(over), 1025);
    assert_accepted(exact);
    assert_refused(over); /* every component is within its limit: only the total is over */
    free(exact);
    free(over);

    char *huge = repeat('h', 5000);
    assert_refused(huge);
    free(huge);
}

static void test_split(void **state)
{
    (void)state;
    size_t dir_len = 99;
    const char *name = "videos/2024/movie.mp4";
    const char *base = filename_split(name, &dir_len);
    assert_int_equal(dir_len, 11);
    assert_ptr_equal(base, name + 12);
    assert_string_equal(base, "movie.mp4");

    const char *flat = "a.bin";
    dir_len = 99;
    assert_ptr_equal(filename_split(flat, &dir_len), flat);
    assert_int_equal(dir_len, 0);

    dir_len = 99;
    assert_string_equal(filename_split("d/x", &dir_len), "x");
    assert_int_equal(dir_len, 1);
}

static void test_storage_rules(void **state)
{
    (void)state;
    cu_error err;
    const char *smb_forbidden = "\\:*?\"<>|";
    assert_int_equal(filename_check_for_storage("a/b c (1).txt", smb_forbidden, false, "smb", &err),
                     0);
    const char *bad[] = {"a:b", "a*b",  "a?b",  "a\"b",   "a<b",   "a>b",
                         "a|b", "end.", "end ", "dir./x", "dir /x"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(filename_check_for_storage(bad[i], smb_forbidden, false, "smb", &err),
                         CU_EINVAL);
        assert_non_null(strstr(err.msg, "smb"));
    }
    /* Local disk and S3 take all of them. */
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(filename_check_for_storage(bad[i], NULL, true, "local", &err), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepts_ordinary_names),
        cmocka_unit_test(test_refuses_bad_paths),
        cmocka_unit_test(test_refuses_directories_named_like_stored_files),
        cmocka_unit_test(test_refuses_control_characters),
        cmocka_unit_test(test_component_limits),
        cmocka_unit_test(test_total_limit),
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_storage_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
