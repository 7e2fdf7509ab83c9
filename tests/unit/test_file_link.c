/* test_file_link.c - signed links (src/api/file_link.c) and the listing's query
 * (src/api/files_query.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "api/file_link.h"
#include "api/files_query.h"
#include "unit_helpers.h"

#include <stdio.h>
#include <string.h>

static const char id[] = "550e8400-e29b-41d4-a716-446655440000";

static void test_link_signature(void **state)
{
    (void)state;
    unsigned char key[FILE_LINK_KEY_LEN], other[FILE_LINK_KEY_LEN];
    file_link_key("jwt-secret-0123456789", key);
    file_link_key("jwt-secret-0123456780", other);
    assert_memory_not_equal(key, other, sizeof key);
    char sig[FILE_LINK_SIG_LEN + 1], sig2[FILE_LINK_SIG_LEN + 1];
    file_link_sign(key, id, 2000000000, sig);
    assert_int_equal(strlen(sig), FILE_LINK_SIG_LEN);
    assert_null(strpbrk(sig, "+/=")); /* base64url: safe in a query as it is */
    file_link_sign(key, id, 2000000001, sig2);
    assert_string_not_equal(sig, sig2); /* the expiry is signed */
    file_link_sign(key, "550e8400-e29b-41d4-a716-446655440001", 2000000000, sig2);
    assert_string_not_equal(sig, sig2); /* the file is signed */
    file_link_sign(other, id, 2000000000, sig2);
    assert_string_not_equal(sig, sig2);

    cu_error err;
    assert_cu_ok(file_link_verify(key, id, "2000000000", sig, 1999999999, &err), err);
    assert_cu_fails(file_link_verify(key, id, "2000000000", sig, 2000000000, &err), CU_EFORBIDDEN,
                    err);
    assert_string_equal(err.msg, "This link expired");
    assert_cu_fails(file_link_verify(key, id, "2000000001", sig, 0, &err), CU_EFORBIDDEN, err);
    assert_string_equal(err.msg, "Invalid link signature");
    assert_cu_fails(file_link_verify(other, id, "2000000000", sig, 0, &err), CU_EFORBIDDEN, err);
    char tampered[FILE_LINK_SIG_LEN + 1];
    for (int i = 0; i < FILE_LINK_SIG_LEN; i += 7) {
        memcpy(tampered, sig, sizeof tampered);
        tampered[i] = tampered[i] == 'x' ? 'y' : 'x';
        assert_cu_fails(file_link_verify(key, id, "2000000000", tampered, 0, &err), CU_EFORBIDDEN,
                        err);
    }
    /* An expired link with a forged signature says only that the signature is wrong. */
    assert_cu_fails(file_link_verify(key, id, "1", tampered, 5, &err), CU_EFORBIDDEN, err);
    assert_string_equal(err.msg, "Invalid link signature");
    const char *bad_expires[] = {"",           "-1",          "+2000000000",  "2e9",
                                 "0x77359400", "2000000000 ", "9999999999999"};
    for (size_t i = 0; i < sizeof bad_expires / sizeof *bad_expires; i++)
        assert_cu_fails(file_link_verify(key, id, bad_expires[i], sig, 0, &err), CU_EFORBIDDEN,
                        err);
    assert_cu_fails(file_link_verify(key, id, NULL, sig, 0, &err), CU_EFORBIDDEN, err);
    assert_cu_fails(file_link_verify(key, id, "2000000000", NULL, 0, &err), CU_EFORBIDDEN, err);
    assert_cu_fails(file_link_verify(key, id, "2000000000", "short", 0, &err), CU_EFORBIDDEN, err);
}

static void test_link_request(void **state)
{
    (void)state;
    int64_t s;
    cu_error err;
    assert_cu_ok(file_link_parse_request("", 0, &s, &err), err);
    assert_int_equal(s, FILE_LINK_DEFAULT_SECONDS);
    assert_cu_ok(file_link_parse_request(" {} ", 4, &s, &err), err);
    assert_int_equal(s, FILE_LINK_DEFAULT_SECONDS);
    const char *body = "{\"expires_in\": 60}";
    assert_cu_ok(file_link_parse_request(body, strlen(body), &s, &err), err);
    assert_int_equal(s, 60);
    body = "{\"expires_in\": 604800}";
    assert_cu_ok(file_link_parse_request(body, strlen(body), &s, &err), err);
    assert_int_equal(s, FILE_LINK_MAX_SECONDS);
    const char *bad[] = {"{\"expires_in\": 0}",
                         "{\"expires_in\": 604801}",
                         "{\"expires_in\": -5}",
                         "{\"expires_in\": \"60\"}",
                         "{\"expires_in\": 1.5}",
                         "[60]",
                         "{",
                         "{\"a\":1,\"a\":2}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_cu_fails(file_link_parse_request(bad[i], strlen(bad[i]), &s, &err), CU_EINVAL, err);
}

static void test_files_query(void **state)
{
    (void)state;
    files_query q;
    cu_error err;
    assert_cu_ok(files_query_parse(NULL, NULL, NULL, NULL, &q, &err), err);
    assert_int_equal(q.q.limit, FILES_DEFAULT_LIMIT);
    assert_null(q.q.prefix);
    assert_int_equal(q.q.after_seq, 0);
    assert_cu_ok(files_query_parse("1000", NULL, "/a/b/", "tok", &q, &err), err);
    assert_int_equal(q.q.limit, 1000);
    assert_string_equal(q.q.prefix, "a/b/"); /* the directory a/b and below, not a/bc */
    assert_string_equal(q.q.owner, "tok");
    assert_cu_ok(files_query_parse(NULL, NULL, "///", NULL, &q, &err), err);
    assert_null(q.q.prefix); /* the root: every file */
    const char *bad_limits[] = {"0", "1001", "-1", "abc", "10 ", "", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad_limits / sizeof *bad_limits; i++)
        assert_cu_fails(files_query_parse(bad_limits[i], NULL, NULL, NULL, &q, &err), CU_EINVAL,
                        err);
    assert_cu_fails(files_query_parse(NULL, NULL, "a/../b", NULL, &q, &err), CU_EINVAL, err);
    assert_cu_fails(files_query_parse(NULL, NULL, "a//b", NULL, &q, &err), CU_EINVAL, err);

    meta_upload u = {.completed_seq = 4242};
    char cursor[FILES_CURSOR_LEN];
    files_query_cursor(&u, cursor);
    assert_cu_ok(files_query_parse("5", cursor, NULL, NULL, &q, &err), err);
    assert_int_equal(q.q.after_seq, 4242);
    const char *bad_cursors[] = {
        "", "4242", "c", "c0", "c-1", "c+1", "c12x", "x12", "c99999999999999999999"};
    for (size_t i = 0; i < sizeof bad_cursors / sizeof *bad_cursors; i++)
        assert_cu_fails(files_query_parse(NULL, bad_cursors[i], NULL, NULL, &q, &err), CU_EINVAL,
                        err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_link_signature),
        cmocka_unit_test(test_link_request),
        cmocka_unit_test(test_files_query),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
