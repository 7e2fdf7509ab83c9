/* test_util.c - ids, time, hex, base64, digests, number parsing, mkdir -p. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/util.h"
#include "unit_helpers.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void test_uuid_v4(void **state)
{
    (void)state;
    enum { N = 200 };
    static char ids[N][CU_UUID_LEN + 1];
    for (int i = 0; i < N; i++) {
        memset(ids[i], 'X', sizeof ids[i]);
        assert_int_equal(util_uuid_v4(ids[i]), 0);
        const char *u = ids[i];
        assert_int_equal(strlen(u), CU_UUID_LEN);
        for (int k = 0; k < CU_UUID_LEN; k++) {
            if (k == 8 || k == 13 || k == 18 || k == 23)
                assert_int_equal(u[k], '-');
            else
                assert_non_null(strchr("0123456789abcdef", u[k])); /* lowercase hex */
        }
        assert_int_equal(u[14], '4');           /* version 4 */
        assert_non_null(strchr("89ab", u[19])); /* RFC 4122 variant */
        assert_true(util_is_uuid(u));
        for (int j = 0; j < i; j++)
            assert_string_not_equal(ids[j], u);
    }
}

static void test_is_uuid(void **state)
{
    (void)state;
    assert_true(util_is_uuid("550e8400-e29b-41d4-a716-446655440000"));
    assert_true(util_is_uuid("550E8400-E29B-41D4-A716-446655440000"));
    assert_false(util_is_uuid(""));
    assert_false(util_is_uuid("550e8400-e29b-41d4-a716-44665544000"));   /* one short */
    assert_false(util_is_uuid("550e8400-e29b-41d4-a716-4466554400000")); /* one long */
    assert_false(util_is_uuid("550e8400e29b-41d4-a716-4466554400000"));  /* dash moved */
    assert_false(util_is_uuid("550e8400-e29b-41d4-a716-44665544000g"));
    assert_false(util_is_uuid("550e8400-e29b-41d4-a716_446655440000"));
    assert_false(util_is_uuid("../../../../etc/passwd-aaaaaaaaaaaaa"));
}

static void test_rfc3339(void **state)
{
    (void)state;
    char out[21];
    util_rfc3339(0, out);
    assert_string_equal(out, "1970-01-01T00:00:00Z");
    util_rfc3339(1700000000, out);
    assert_string_equal(out, "2023-11-14T22:13:20Z");
    util_rfc3339(951782400, out);
    assert_string_equal(out, "2000-02-29T00:00:00Z");
    util_rfc3339(4102444799, out); /* after 2038 */
    assert_string_equal(out, "2099-12-31T23:59:59Z");

    double now = util_now();
    assert_true(now > 1700000000.0);
}

static void test_hex_round_trip(void **state)
{
    (void)state;
    const unsigned char bytes[] = {0x00, 0x01, 0xab, 0xff, 0x10};
    char hex[11];
    util_hex(bytes, sizeof bytes, hex);
    assert_string_equal(hex, "0001abff10");

    unsigned char digest[32], back[32];
    for (int i = 0; i < 32; i++)
        digest[i] = (unsigned char)(i * 37 + 5);
    char h64[65];
    util_hex(digest, 32, h64);
    assert_int_equal(strlen(h64), 64);
    assert_int_equal(util_unhex_sha256(h64, back), 0);
    assert_memory_equal(back, digest, 32);

    /* Uppercase is accepted too. */
    for (char *p = h64; *p; p++)
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 'a' + 'A');
    memset(back, 0, sizeof back);
    assert_int_equal(util_unhex_sha256(h64, back), 0);
    assert_memory_equal(back, digest, 32);
}

static void test_unhex_rejects(void **state)
{
    (void)state;
    unsigned char out[32];
    char s[80];
    memset(s, 'a', 63);
    s[63] = '\0';
    assert_int_equal(util_unhex_sha256(s, out), -1); /* 63 */
    memset(s, 'a', 65);
    s[65] = '\0';
    assert_int_equal(util_unhex_sha256(s, out), -1); /* 65 */
    memset(s, 'a', 64);
    s[64] = '\0';
    assert_int_equal(util_unhex_sha256(s, out), 0);
    s[10] = 'g';
    assert_int_equal(util_unhex_sha256(s, out), -1);
    s[10] = ' ';
    assert_int_equal(util_unhex_sha256(s, out), -1);
    s[10] = 'a';
    s[63] = 'x';
    assert_int_equal(util_unhex_sha256(s, out), -1);
    assert_int_equal(util_unhex_sha256("", out), -1);
}

static void test_base64_decode(void **state)
{
    (void)state;
    /* RFC 4648 section 10. */
    static const struct {
        const char *in, *out;
    } v[] = {{"", ""},
             {"Zg==", "f"},
             {"Zm8=", "fo"},
             {"Zm9v", "foo"},
             {"Zm9vYg==", "foob"},
             {"Zm9vYmE=", "fooba"},
             {"Zm9vYmFy", "foobar"}};
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        unsigned char out[16];
        memset(out, 0xee, sizeof out);
        int n = util_base64_decode(v[i].in, strlen(v[i].in), out, sizeof out);
        assert_int_equal(n, (int)strlen(v[i].out));
        assert_memory_equal(out, v[i].out, (size_t)n);
    }

    /* A 32-byte digest, as in Content-Digest: sha-256=:...: */
    unsigned char digest[32];
    assert_int_equal(
        util_base64_decode("ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=", 44, digest, 32), 32);
    char hex[65];
    util_hex(digest, 32, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");

    unsigned char out[16];
    assert_int_equal(util_base64_decode("Zm9", 3, out, sizeof out), -1);      /* bad length */
    assert_int_equal(util_base64_decode("Zg=", 3, out, sizeof out), -1);      /* bad length */
    assert_int_equal(util_base64_decode("Zm9vY", 5, out, sizeof out), -1);    /* bad length */
    assert_int_equal(util_base64_decode("Zm9*", 4, out, sizeof out), -1);     /* bad char */
    assert_int_equal(util_base64_decode("====", 4, out, sizeof out), -1);     /* all padding */
    assert_int_equal(util_base64_decode("Zg==Zg==", 8, out, sizeof out), -1); /* inner pad */
    assert_int_equal(util_base64_decode("Zm 9", 4, out, sizeof out), -1);     /* space */
    assert_int_equal(util_base64_decode("Zm9vYmFy", 8, out, 5), -1);          /* no room */
    assert_int_equal(util_base64_decode("Zm9vYmFy", 8, out, 6), 6);           /* just fits */
    assert_int_equal(util_base64_decode("Zm9vYg==", 8, out, 4), 4);           /* padding */
}

static void test_sha256_hex(void **state)
{
    (void)state;
    char out[CU_SHA256_HEX_LEN + 1];
    util_sha256_hex("abc", 3, out);
    assert_string_equal(out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    util_sha256_hex("", 0, out);
    assert_string_equal(out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    util_sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56, out);
    assert_string_equal(out, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

static void test_secret_equal(void **state)
{
    (void)state;
    assert_true(util_secret_equal("s3cret-key", "s3cret-key"));
    assert_true(util_secret_equal("", ""));
    assert_false(util_secret_equal("s3cret-key", "s3cret-kex"));
    assert_false(util_secret_equal("s3cret-key", "s3cret-ke"));
    assert_false(util_secret_equal("s3cret-key", "s3cret-key2"));
    assert_false(util_secret_equal("", "x"));
    assert_false(util_secret_equal("S3CRET-KEY", "s3cret-key"));
}

static void test_parse_i64(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        int64_t v;
    } ok[] = {{"0", 0},
              {"42", 42},
              {"-42", -42},
              {"+7", 7},
              {"007", 7},
              {"9223372036854775807", INT64_MAX},
              {"-9223372036854775808", INT64_MIN}};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        int64_t v = 12345;
        assert_int_equal(util_parse_i64(ok[i].s, &v), 0);
        assert_true(v == ok[i].v);
    }
    const char *bad[] = {" 1",
                         "1 ",
                         "",
                         "9223372036854775808",
                         "-9223372036854775809",
                         "1x",
                         "0x10",
                         "1.0",
                         "-",
                         "+",
                         "1e3",
                         "\t1",
                         "1\n",
                         "abc"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int64_t v = 12345;
        if (util_parse_i64(bad[i], &v) != -1)
            print_error("util_parse_i64(\"%s\") accepted\n", bad[i]);
        assert_int_equal(util_parse_i64(bad[i], &v), -1);
    }
    int64_t v;
    assert_int_equal(util_parse_i64(NULL, &v), -1);
}

static void test_parse_double(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        double v;
    } ok[] = {{"0", 0}, {"1.5", 1.5}, {"-2", -2}, {"0.5", 0.5}, {"1e3", 1000}, {".25", 0.25}};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        double v = -999;
        assert_int_equal(util_parse_double(ok[i].s, &v), 0);
        assert_true(v == ok[i].v);
    }
    const char *bad[] = {" 1",    "1 ",   "",    "nan", "NaN", "inf",  "-inf", "infinity",
                         "1e400", "1.5x", "abc", "\t2", ".",   "0x10", "0x1p3"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        double v = -999;
        if (util_parse_double(bad[i], &v) != -1)
            print_error("util_parse_double(\"%s\") accepted\n", bad[i]);
        assert_int_equal(util_parse_double(bad[i], &v), -1);
    }
}

static void test_percent_encode(void **state)
{
    (void)state;
    char out[64] = "x/";
    util_percent_encode(out, sizeof out, "a b/c~d_e.f-g+h=%\xc3\xa9", true);
    assert_string_equal(out, "x/a%20b/c~d_e.f-g%2Bh%3D%25%C3%A9");
    out[0] = '\0';
    util_percent_encode(out, sizeof out, "a/b", false);
    assert_string_equal(out, "a%2Fb");
    /* Never overflows: stops before an escape that would not fit. */
    char fits[6] = "", tight[5] = "";
    util_percent_encode(fits, sizeof fits, "ab cd", true);
    assert_string_equal(fits, "ab%20"); /* exactly fills the buffer */
    util_percent_encode(tight, sizeof tight, "ab cd", true);
    assert_string_equal(tight, "ab"); /* "%20" would not fit */
}

static void test_utf8_scrub(void **state)
{
    (void)state;
    struct {
        const char *in, *out;
    } cases[] = {
        {"", ""},
        {"plain ascii", "plain ascii"},
        {"\xc3\xa9t\xc3\xa9 \xe6\x96\x87 \xf0\x9f\x8e\xac",
         "\xc3\xa9t\xc3\xa9 \xe6\x96\x87 \xf0\x9f\x8e\xac"},
        {"near '\"\\\xc7'", "near '\"\\?'"}, /* a character cut after its first byte */
        {"a\xff"
         "b\xfe",
         "a?b?"},                                 /* bytes UTF-8 never uses */
        {"\x80x", "?x"},                          /* a stray continuation byte */
        {"\xe6\x96", "??"},                       /* truncated at the end */
        {"\xc0\xaf", "??"},                       /* an overlong '/' */
        {"\xed\xa0\x80", "???"},                  /* a UTF-16 surrogate */
        {"\xf4\x90\x80\x80", "????"},             /* past U+10FFFF */
        {"\xf4\x8f\xbf\xbf", "\xf4\x8f\xbf\xbf"}, /* U+10FFFF itself */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char buf[64];
        snprintf(buf, sizeof buf, "%s", cases[i].in);
        util_utf8_scrub(buf);
        assert_string_equal(buf, cases[i].out);
        json_t *s = json_string(buf); /* what the scrub is for: jansson takes the result */
        assert_non_null(s);
        json_decref(s);
    }
}

static void test_mkdir_p(void **state)
{
    (void)state;
    char *dir = tmpdir_make();
    assert_non_null(dir);
    char *nested = path_join(dir, "a/b/c");
    struct stat st;

    assert_int_equal(util_mkdir_p(nested, 0755), 0);
    assert_int_equal(stat(nested, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(util_mkdir_p(nested, 0755), 0); /* existing is fine */
    assert_int_equal(util_mkdir_p(dir, 0755), 0);

    char *trailing = path_join(dir, "d/e/");
    assert_int_equal(util_mkdir_p(trailing, 0755), 0);
    char *de = path_join(dir, "d/e");
    assert_int_equal(stat(de, &st), 0);
    assert_true(S_ISDIR(st.st_mode));

    /* Below a regular file. */
    char *file = path_join(dir, "file");
    assert_int_equal(file_write(file, "x", 1), 0);
    char *under = path_join(file, "sub/dir");
    assert_int_equal(util_mkdir_p(under, 0755), -ENOTDIR);
    assert_int_equal(util_mkdir_p(file, 0755), -ENOTDIR); /* the file itself */
    char *sub = path_join(file, "sub");
    assert_false(path_exists(sub));

    assert_true(util_mkdir_p("", 0755) < 0);

    free(sub);
    free(under);
    free(file);
    free(de);
    free(trailing);
    free(nested);
    tmpdir_remove(dir);
}

static void test_list_next(void **state)
{
    (void)state;
    char text[] = " a, b ,,\t, c d ,e,";
    const char *want[] = {"a", "b", "c d", "e"};
    char *cursor = text;
    for (size_t i = 0; i < 4; i++) {
        char *item = util_list_next(&cursor);
        assert_non_null(item);
        assert_string_equal(item, want[i]);
    }
    assert_null(util_list_next(&cursor));
    assert_null(util_list_next(&cursor)); /* and stays at the end */
    char blank[] = " , ,";
    cursor = blank;
    assert_null(util_list_next(&cursor));
    cursor = NULL;
    assert_null(util_list_next(&cursor));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uuid_v4),        cmocka_unit_test(test_is_uuid),
        cmocka_unit_test(test_rfc3339),        cmocka_unit_test(test_hex_round_trip),
        cmocka_unit_test(test_unhex_rejects),  cmocka_unit_test(test_base64_decode),
        cmocka_unit_test(test_sha256_hex),     cmocka_unit_test(test_secret_equal),
        cmocka_unit_test(test_parse_i64),      cmocka_unit_test(test_parse_double),
        cmocka_unit_test(test_percent_encode), cmocka_unit_test(test_utf8_scrub),
        cmocka_unit_test(test_mkdir_p),        cmocka_unit_test(test_list_next),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
