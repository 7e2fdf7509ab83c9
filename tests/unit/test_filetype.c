/* test_filetype.c - content type essences, type patterns and extension lists; and libmagic's
 * findings on real file beginnings (the sniffer). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/filetype.h"
#include "core/sniff.h"
#include "unit_helpers.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void assert_essence(const char *value, const char *want)
{
    char got[FILETYPE_MAX];
    int rc = filetype_essence(value, strlen(value), got);
    if (want && (rc != 0 || strcmp(got, want) != 0))
        print_error("\"%s\": got %d \"%s\", expected \"%s\"\n", value, rc, got, want);
    if (!want && rc == 0)
        print_error("\"%s\": read as \"%s\", expected a refusal\n", value, got);
    assert_int_equal(rc, want ? 0 : -1);
    if (want)
        assert_string_equal(got, want);
}

static void test_essence(void **state)
{
    (void)state;
    assert_essence("image/png", "image/png");
    assert_essence("Image/PNG", "image/png");
    assert_essence("  text/html ; charset=UTF-8", "text/html");
    assert_essence("text/html;charset=utf-8", "text/html");
    assert_essence("application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                   "application/vnd.openxmlformats-officedocument.wordprocessingml.document");
    assert_essence("image/svg+xml\t", "image/svg+xml");
    assert_essence("", NULL);
    assert_essence("image", NULL);
    assert_essence("image/", NULL);
    assert_essence("/png", NULL);
    assert_essence("image/png extra", NULL);
    assert_essence("image/png/x", NULL);
    assert_essence("image /png", NULL);
    assert_essence("image/*", NULL); /* a pattern, not a type */
    assert_essence("*/*", NULL);
    assert_essence("im(age/png", NULL);
    assert_essence("image/p\xc3\xa9ng", NULL);
    /* A NUL ends nothing: the length decides. */
    char got[FILETYPE_MAX];
    assert_int_equal(filetype_essence("image/png\0x", 11, got), -1);
    assert_int_equal(filetype_essence("image/png\0x", 9, got), 0);
    /* Longer than any real type: refused, never cut. */
    char longer[600];
    memset(longer, 'a', sizeof longer);
    longer[300] = '/';
    assert_int_equal(filetype_essence(longer, sizeof longer, got), -1);
    assert_int_equal(filetype_essence(NULL, 0, got), -1);
}

static filetype_list *patterns(const char *text)
{
    filetype_list *l = NULL;
    cu_error err;
    assert_cu_ok(filetype_patterns_parse(text, &l, &err), err);
    return l;
}

static void test_patterns(void **state)
{
    (void)state;
    filetype_list *l = patterns(" image/* , Video/MP4,application/pdf ");
    assert_true(filetype_patterns_match(l, "image/png"));
    assert_true(filetype_patterns_match(l, "image/svg+xml"));
    assert_true(filetype_patterns_match(l, "video/mp4"));
    assert_true(filetype_patterns_match(l, "application/pdf"));
    assert_false(filetype_patterns_match(l, "video/webm"));
    assert_false(filetype_patterns_match(l, "text/plain"));
    assert_false(filetype_patterns_match(l, "imagex/png")); /* the whole type, not a prefix */
    assert_false(filetype_patterns_match(l, "application/pdfx"));
    assert_false(filetype_patterns_match(l, NULL));
    filetype_list_free(l);

    l = patterns("*/*");
    assert_true(filetype_patterns_match(l, "application/octet-stream"));
    filetype_list_free(l);

    l = NULL;
    cu_error err;
    assert_cu_ok(filetype_patterns_parse("", &l, &err), err);
    assert_null(l);
    assert_cu_ok(filetype_patterns_parse(NULL, &l, &err), err);
    assert_null(l);
    assert_false(filetype_patterns_match(NULL, "image/png"));

    const char *bad[] = {"image",      "image/png,", ",image/png", "image/png,,video/mp4",
                         "*/png",      "**/*",       "image/*x",   "image/png; q=1",
                         "image/p ng", "image/",     "/*",         "*"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (filetype_patterns_parse(bad[i], &l, &err) != CU_EINVAL)
            print_error("\"%s\" was taken as a pattern list\n", bad[i]);
        assert_cu_fails(filetype_patterns_parse(bad[i], &l, &err), CU_EINVAL, err);
        assert_null(l);
    }
    assert_non_null(strstr(err.msg, "\"*\""));
}

static void test_extensions(void **state)
{
    (void)state;
    filetype_list *l = NULL;
    cu_error err;
    assert_cu_ok(filetype_extensions_parse(".jpg, PNG,tar.gz", &l, &err), err);
#define MATCH(name) filetype_extensions_match(l, name, strlen(name))
    assert_true(MATCH("photo.jpg"));
    assert_true(MATCH("photo.JPG"));
    assert_true(MATCH("dir/sub/photo.Png"));
    assert_true(MATCH("backup.tar.gz"));
    assert_true(MATCH("a.b.jpg"));
    assert_false(MATCH(".jpg"));       /* a hidden file with no extension */
    assert_false(MATCH("photojpg"));   /* no dot */
    assert_false(MATCH("photo.jpeg")); /* another extension */
    assert_false(MATCH("photo.gz"));
    assert_false(MATCH("jpg.txt"));
    assert_false(MATCH("photo.jpg/x.txt")); /* only the last component counts */
    assert_false(MATCH("dir.jpg/"));
    assert_false(MATCH(""));
#undef MATCH
    assert_false(filetype_extensions_match(l, "photo.jpg\0", 10)); /* a NUL is not an extension */
    assert_true(filetype_extensions_match(l, "photo.jpgxx", 9));   /* the length decides */
    assert_false(filetype_extensions_match(NULL, "a.jpg", 5));
    filetype_list_free(l);

    const char *bad[] = {".", "..jpg", "jpg.", "a/b", "j pg", "jpg,", "*", "a..b"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (filetype_extensions_parse(bad[i], &l, &err) != CU_EINVAL)
            print_error("\"%s\" was taken as an extension list\n", bad[i]);
        assert_cu_fails(filetype_extensions_parse(bad[i], &l, &err), CU_EINVAL, err);
        assert_null(l);
    }
}

/* ---- the sniffer (libmagic, its real database) ---- */

static const unsigned char png_start[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0,
                                          0,    13,  'I', 'H', 'D',  'R',  0,    0,    0, 1,
                                          0,    0,   0,   1,   8,    6,    0,    0,    0};

static void assert_sniffs(content_sniffer *s, const void *buf, size_t len, const char *want)
{
    char got[FILETYPE_MAX];
    cu_error err;
    assert_cu_ok(sniff_type(s, buf, len, got, &err), err);
    if (strcmp(got, want) != 0)
        print_error("sniffed %s, expected %s\n", got, want);
    assert_string_equal(got, want);
}

static void test_sniff(void **state)
{
    (void)state;
    content_sniffer *s = NULL;
    cu_error err;
    assert_cu_ok(sniff_open(2, &s, &err), err);
    assert_sniffs(s, png_start, sizeof png_start, "image/png");
    assert_sniffs(s, "\xff\xd8\xff\xe0\0\x10JFIF\0", 11, "image/jpeg");
    assert_sniffs(s, "%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", 16, "application/pdf");
    assert_sniffs(s, "just some words\nand more\n", 25, "text/plain");
    assert_sniffs(s, "", 0, "application/x-empty");
    unsigned char noise[4096];
    unsigned x = 12345;
    for (size_t i = 0; i < sizeof noise; i++)
        noise[i] = (unsigned char)((x = x * 1103515245 + 12345) >> 16);
    assert_sniffs(s, noise, sizeof noise, "application/octet-stream");
    sniff_close(s);
    sniff_close(NULL);
}

typedef struct {
    content_sniffer *s;
    int bad;
} sniff_worker;

static void *sniff_many(void *arg)
{
    sniff_worker *w = arg;
    for (int i = 0; i < 200; i++) {
        char got[FILETYPE_MAX];
        cu_error err;
        if (sniff_type(w->s, png_start, sizeof png_start, got, &err) != 0 ||
            strcmp(got, "image/png") != 0)
            w->bad++;
    }
    return NULL;
}

/* More callers than handles: each waits for a free one, none shares one. */
static void test_sniff_threads(void **state)
{
    (void)state;
    content_sniffer *s = NULL;
    cu_error err;
    assert_cu_ok(sniff_open(2, &s, &err), err);
    pthread_t t[6];
    sniff_worker w[6];
    for (int i = 0; i < 6; i++) {
        w[i] = (sniff_worker){.s = s};
        assert_int_equal(pthread_create(&t[i], NULL, sniff_many, &w[i]), 0);
    }
    for (int i = 0; i < 6; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].bad, 0);
    }
    sniff_close(s);
}

/* A database libmagic cannot load is refused when the sniffer opens, with its reason. */
static void test_sniff_bad_database(void **state)
{
    (void)state;
    char *dir = tmpdir_make();
    char *path = path_join(dir, "bad.mgc");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("this is not a magic database\n", f);
    fclose(f);
    setenv("MAGIC", path, 1);
    content_sniffer *s = (content_sniffer *)&s;
    cu_error err;
    assert_cu_fails(sniff_open(1, &s, &err), CU_EIO, err);
    assert_null(s);
    assert_non_null(strstr(err.msg, "libmagic"));
    unsetenv("MAGIC");
    free(path);
    tmpdir_remove(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_essence),       cmocka_unit_test(test_patterns),
        cmocka_unit_test(test_extensions),    cmocka_unit_test(test_sniff),
        cmocka_unit_test(test_sniff_threads), cmocka_unit_test(test_sniff_bad_database),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
