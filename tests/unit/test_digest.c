/* test_digest.c - a part's declared SHA-256: Content-Digest (RFC 9530) and X-Checksum-SHA256. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "api/digest.h"
#include "unit_helpers.h"

#include <string.h>

/* SHA-256 of "abc", in base64 and in hex. */
#define ABC_B64 "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
#define ABC_HEX "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

static void test_content_digest_members(void **state)
{
    (void)state;
    unsigned char out[32], abc[32];
    bool found;
    cu_error err;
    assert_cu_ok(digest_parse_part(NULL, ABC_HEX, abc, &found, &err), err);
    const char *same[] = {"sha-256=:" ABC_B64 ":", "SHA-256=:" ABC_B64 ":",
                          "sha-512=:AAAA:, sha-256=:" ABC_B64 ":",
                          "md5=:x:,\tsha-256=:" ABC_B64 ":;p=1"};
    for (size_t i = 0; i < sizeof same / sizeof *same; i++) {
        memset(out, 0, sizeof out);
        assert_cu_ok(digest_parse_part(same[i], NULL, out, &found, &err), err);
        assert_true(found);
        assert_memory_equal(out, abc, 32);
    }
    /* Another algorithm whose name ends in sha-256 is not sha-256: no digest declared. */
    const char *other[] = {"id-sha-256=:" ABC_B64 ":", "xsha-256=:" ABC_B64 ":",
                           "sha-512=:AAAA:", ""};
    for (size_t i = 0; i < sizeof other / sizeof *other; i++) {
        assert_cu_ok(digest_parse_part(other[i], NULL, out, &found, &err), err);
        assert_false(found);
    }
    const char *bad[] = {"sha-256=" ABC_B64, "sha-256=:AAAA:", "sha-256=:" ABC_B64};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_cu_fails(digest_parse_part(bad[i], NULL, out, &found, &err), CU_EINVAL, err);
}

static void test_both_headers_must_agree(void **state)
{
    (void)state;
    unsigned char out[32];
    bool found;
    cu_error err;
    assert_cu_ok(digest_parse_part("sha-256=:" ABC_B64 ":", ABC_HEX, out, &found, &err), err);
    assert_true(found);
    assert_cu_fails(
        digest_parse_part("sha-256=:" ABC_B64 ":",
                          "0000000000000000000000000000000000000000000000000000000000000000", out,
                          &found, &err),
        CU_EINVAL, err);
    assert_string_equal(err.msg, "Content-Digest and X-Checksum-SHA256 disagree");
    assert_cu_fails(digest_parse_part(NULL, "abc", out, &found, &err), CU_EINVAL, err);
    assert_cu_ok(digest_parse_part(NULL, NULL, out, &found, &err), err);
    assert_false(found);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_content_digest_members),
        cmocka_unit_test(test_both_headers_must_agree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
