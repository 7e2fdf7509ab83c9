/* test_tus_header.c - reading tus's Upload-Metadata, Upload-Concat, Upload-Checksum and byte
 * counts (src/api/tus_header.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "api/tus_header.h"

#include <string.h>

static void test_metadata(void **state)
{
    (void)state;
    tus_metadata md;
    cu_error err;
    /* tus-js-client's form, the specification's (unpadded, a key without value), blanks. */
    assert_int_equal(tus_metadata_parse("filename ZGlyL2EudHh0,filetype dGV4dC9wbGFpbg==, "
                                        "is_confidential ,,\tempty ",
                                        &md, &err),
                     0);
    assert_int_equal(md.n, 4);
    const tus_metadata_pair *p = tus_metadata_get(&md, "filename");
    assert_non_null(p);
    assert_string_equal(p->value, "dir/a.txt");
    assert_int_equal(p->value_len, 9);
    assert_string_equal(tus_metadata_get(&md, "filetype")->value, "text/plain");
    p = tus_metadata_get(&md, "is_confidential");
    assert_null(p->value);
    assert_int_equal(p->value_len, 0);
    assert_null(tus_metadata_get(&md, "name"));
    assert_string_equal(md.pairs[3].key, "empty");
    tus_metadata_clear(&md);
    /* Unpadded, and a NUL inside a value is kept (the filename policy refuses it later). */
    assert_int_equal(tus_metadata_parse("n YQ,z AAB4AA==", &md, &err), 0);
    assert_string_equal(tus_metadata_get(&md, "n")->value, "a");
    p = tus_metadata_get(&md, "z");
    assert_int_equal(p->value_len, 4);
    assert_memory_equal(p->value, "\0\0x\0", 4);
    tus_metadata_clear(&md);
    assert_int_equal(tus_metadata_parse(NULL, &md, &err), 0);
    assert_int_equal(md.n, 0);
    assert_int_equal(tus_metadata_parse("", &md, &err), 0);
    assert_int_equal(md.n, 0);
    tus_metadata_clear(&md);

    const char *bad[] = {"a YQ,a Yg", "a Y Q",    "a ====", "a Y",
                         "a Y*==",    "k\x01 YQ", "a YQ=",  "\xc3\xa9 YQ"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(tus_metadata_parse(bad[i], &md, &err), CU_EINVAL);
        assert_int_equal(md.n, 0);
        assert_null(md.pairs);
    }
    char many[TUS_METADATA_MAX + 2];
    memset(many, 'k', sizeof many - 1);
    many[sizeof many - 1] = '\0';
    assert_int_equal(tus_metadata_parse(many, &md, &err), CU_EINVAL);
    assert_non_null(strstr(err.msg, "bytes"));
    char pairs[1024] = "";
    for (int i = 0; i <= TUS_METADATA_MAX_PAIRS; i++)
        snprintf(pairs + strlen(pairs), sizeof pairs - strlen(pairs), "k%d,", i);
    assert_int_equal(tus_metadata_parse(pairs, &md, &err), CU_EINVAL);
    assert_non_null(strstr(err.msg, "pairs"));
}

#define ID1 "8d5f743c-647e-40f8-9333-ce3204b1c02d"
#define ID2 "0c6c3b0e-7e7e-4b7a-9a37-2f7e1b0a5b11"

static void test_concat(void **state)
{
    (void)state;
    tus_concat c;
    cu_error err;
    assert_int_equal(tus_concat_parse(NULL, "/files/", &c, &err), 0);
    assert_int_equal(c.kind, TUS_CONCAT_NONE);
    assert_int_equal(tus_concat_parse("partial", "/files/", &c, &err), 0);
    assert_int_equal(c.kind, TUS_CONCAT_PARTIAL);
    /* Absolute URLs (as tus-js-client sends the Locations it got), paths, a proxy's prefix,
     * upper case. */
    assert_int_equal(tus_concat_parse("final;http://127.0.0.1:3000/files/" ID1
                                      "  HTTPS://h.example/api/files/" ID2,
                                      "/files/", &c, &err),
                     0);
    assert_int_equal(c.kind, TUS_CONCAT_FINAL);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.ids[0], ID1);
    assert_string_equal(c.ids[1], ID2);
    tus_concat_clear(&c);
    assert_int_equal(
        tus_concat_parse("final;/files/8D5F743C-647E-40F8-9333-CE3204B1C02D", "/files/", &c, &err),
        0);
    assert_string_equal(c.ids[0], ID1);
    tus_concat_clear(&c);

    const char *bad[] = {"Partial",
                         "final",
                         "final;",
                         "final; ",
                         "final;/files/" ID1 " /files/" ID1,
                         "final;/other/" ID1,
                         "final;/files/" ID1 "/",
                         "final;/files/" ID1 "?a",
                         "final;http:///files/" ID1,
                         "final;files/" ID1,
                         "final;/files/" ID1 "x",
                         "final;/files/x" ID1};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (tus_concat_parse(bad[i], "/files/", &c, &err) != CU_EINVAL)
            print_error("taken: \"%s\"\n", bad[i]);
        assert_int_equal(c.kind, TUS_CONCAT_NONE);
        assert_null(c.ids);
    }
}

static void test_checksum(void **state)
{
    (void)state;
    upload_digest_alg alg;
    unsigned char d[64];
    cu_error err;
    /* SHA-1 of "hello", in base64. */
    assert_int_equal(tus_checksum_parse("sha1 qvTGHdzF6KLavt4PO0gs2a6pQ00=", &alg, d, &err), 0);
    assert_int_equal(alg, UPLOAD_DIGEST_SHA1);
    static const unsigned char sha1_hello[20] = {0xaa, 0xf4, 0xc6, 0x1d, 0xdc, 0xc5, 0xe8,
                                                 0xa2, 0xda, 0xbe, 0xde, 0x0f, 0x3b, 0x48,
                                                 0x2c, 0xd9, 0xae, 0xa9, 0x43, 0x4d};
    assert_memory_equal(d, sha1_hello, 20);
    assert_int_equal(d[20], 0);
    assert_int_equal(tus_checksum_parse("MD5 XUFAKrxLKna5cZ2REBfFkg==", &alg, d, &err), 0);
    assert_int_equal(alg, UPLOAD_DIGEST_MD5);
    assert_int_equal(
        tus_checksum_parse("sha256 LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ", &alg, d, &err), 0);
    assert_int_equal(alg, UPLOAD_DIGEST_SHA256);
    assert_int_equal(tus_checksum_parse("crc32 AAAAAA==", &alg, d, &err), CU_EINVAL);
    assert_non_null(strstr(err.msg, "unsupported algorithm"));
    const char *bad[] = {"sha1", "sha1 ", "sha1  qvTGHdzF6KLavt4PO0gs2a6pQ00=",
                         "sha256 qvTGHdzF6KLavt4PO0gs2a6pQ00=", "sha1 qvTGHdzF6KLavt4PO0gs2a6pQ0*"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(tus_checksum_parse(bad[i], &alg, d, &err), CU_EINVAL);
}

static void test_sizes(void **state)
{
    (void)state;
    int64_t n = -1;
    assert_int_equal(tus_parse_size("0", &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(tus_parse_size("9223372036854775807", &n), 0);
    assert_int_equal(n, INT64_MAX);
    const char *bad[] = {"", "-1", "+1", " 1", "1 ", "9223372036854775808", "0x10", "1e3"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(tus_parse_size(bad[i], &n), -1);
    assert_int_equal(tus_parse_size(NULL, &n), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metadata),
        cmocka_unit_test(test_concat),
        cmocka_unit_test(test_checksum),
        cmocka_unit_test(test_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
