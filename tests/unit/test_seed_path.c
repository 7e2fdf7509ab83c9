/* test_seed_path.c - the seed API's path parameters: upload ids and part numbers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "api/seed_path.h"
#include "unit_helpers.h"

#include <string.h>

static void test_upload_id(void **state)
{
    (void)state;
    char id[CU_UUID_LEN + 1];
    cu_error err;
    assert_cu_ok(seed_path_upload_id("550e8400-e29b-41d4-a716-446655440000", id, &err), err);
    assert_string_equal(id, "550e8400-e29b-41d4-a716-446655440000");
    /* Ids are issued in lowercase; a client that uppercased one still finds its upload. */
    assert_cu_ok(seed_path_upload_id("550E8400-E29B-41D4-A716-44665544000F", id, &err), err);
    assert_string_equal(id, "550e8400-e29b-41d4-a716-44665544000f");
    const char *bad[] = {NULL,
                         "",
                         "init",
                         "550e8400-e29b-41d4-a716-44665544000",
                         "550e8400-e29b-41d4-a716-4466554400000",
                         "550e8400xe29b-41d4-a716-446655440000",
                         "550e8400-e29b-41d4-a716-44665544000g",
                         "..%2f..%2fetc/passwd"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_cu_fails(seed_path_upload_id(bad[i], id, &err), CU_ENOTFOUND, err);
        assert_string_equal(err.msg, "Upload not found");
    }
}

static void test_part_number(void **state)
{
    (void)state;
    int64_t n;
    cu_error err;
    assert_cu_ok(seed_path_part_number("0", &n, &err), err);
    assert_int_equal(n, 0);
    assert_cu_ok(seed_path_part_number("007", &n, &err), err);
    assert_int_equal(n, 7);
    assert_cu_ok(seed_path_part_number("999999999", &n, &err), err);
    assert_int_equal(n, 999999999);
    const char *bad[] = {"", "1234567890", "+1", "-1", " 1", "1 ", "0x1", "1e3", "one"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_cu_fails(seed_path_part_number(bad[i], &n, &err), CU_EINVAL, err);
    assert_cu_fails(seed_path_part_number("abc", &n, &err), CU_EINVAL, err);
    assert_string_equal(err.msg, "Part number must be a whole number, got \"abc\"");
    /* The text is quoted, made UTF-8 for the JSON reply. */
    assert_cu_fails(seed_path_part_number("\xff\xc3", &n, &err), CU_EINVAL, err);
    assert_string_equal(err.msg, "Part number must be a whole number, got \"??\"");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_upload_id),
        cmocka_unit_test(test_part_number),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
