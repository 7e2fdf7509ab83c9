/* test_storage_s3.c - S3 addressing, which needs no S3 to check. (The S3 backend itself is
 * tested against a real S3 server in tests/integration/test_s3.py.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "storage/storage.h"

#include <stdlib.h>

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base_url),
        cmocka_unit_test(test_endpoint),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
