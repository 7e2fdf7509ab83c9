/* test_webhook.c - the upload.complete payload, its signature and the retry backoff. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/util.h"
#include "core/webhook.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FILE_ID "550e8400-e29b-41d4-a716-446655440000"

static meta_upload sample_upload(char *filename, char *final_path)
{
    meta_upload u;
    memset(&u, 0, sizeof u);
    snprintf(u.id, sizeof u.id, "%s", FILE_ID);
    snprintf(u.protocol, sizeof u.protocol, "seed");
    u.filename = filename;
    u.total_size = 10737418240; /* 10 GiB: above 32 bits */
    u.chunk_size = 52428800;
    u.total_parts = 205;
    u.uploaded_parts = 205;
    u.state = UPLOAD_COMPLETE;
    u.final_path = final_path;
    u.webhook_url = "http://example.invalid/hook";
    u.created_at = 1699990000;
    u.expires_at = 1700076400;
    u.completed_at = 1700000000;
    return u;
}

static void test_payload(void **state)
{
    (void)state;
    meta_upload u =
        sample_upload("videos/2024/movie.mp4", "./uploads/files/videos/2024/" FILE_ID "_movie.mp4");
    char *text = webhook_payload(&u, "local");
    assert_non_null(text);

    json_error_t jerr;
    json_t *obj = json_loads(text, 0, &jerr);
    if (!obj)
        print_error("payload is not JSON (%s): %s\n", jerr.text, text);
    assert_non_null(obj);
    assert_true(json_is_object(obj));
    assert_int_equal(json_object_size(obj), 7); /* exactly these fields */

    assert_string_equal(json_string_value(json_object_get(obj, "event")), "upload.complete");
    assert_string_equal(json_string_value(json_object_get(obj, "file_id")), FILE_ID);
    assert_string_equal(json_string_value(json_object_get(obj, "filename")), "movie.mp4");
    json_t *size = json_object_get(obj, "total_size");
    assert_true(json_is_integer(size));
    assert_true(json_integer_value(size) == 10737418240);
    assert_string_equal(json_string_value(json_object_get(obj, "final_path")),
                        "./uploads/files/videos/2024/" FILE_ID "_movie.mp4");
    assert_string_equal(json_string_value(json_object_get(obj, "storage_backend")), "local");
    assert_string_equal(json_string_value(json_object_get(obj, "completed_at")),
                        "2023-11-14T22:13:20Z");
    json_decref(obj);
    free(text);

    /* A name without a directory is used as it is; the backend name is passed through. */
    u = sample_upload("a \"quoted\" name.bin", "/srv/files/" FILE_ID "_a.bin");
    text = webhook_payload(&u, "s3");
    obj = json_loads(text, 0, &jerr);
    assert_non_null(obj);
    assert_string_equal(json_string_value(json_object_get(obj, "filename")),
                        "a \"quoted\" name.bin");
    assert_string_equal(json_string_value(json_object_get(obj, "storage_backend")), "s3");
    json_decref(obj);
    free(text);
}

static void test_signature_matches_openssl_hmac(void **state)
{
    (void)state;
    const char *secret = "webhook-secret";
    const char *bodies[] = {"{\"event\":\"upload.complete\",\"file_id\":\"x\"}", "", "x"};
    for (size_t i = 0; i < sizeof bodies / sizeof *bodies; i++) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int len = 0;
        assert_non_null(HMAC(EVP_sha256(), secret, (int)strlen(secret),
                             (const unsigned char *)bodies[i], strlen(bodies[i]), mac, &len));
        assert_int_equal(len, 32);
        char want[72] = "sha256=";
        util_hex(mac, len, want + 7);

        char sig[72];
        memset(sig, 'Z', sizeof sig);
        webhook_signature(secret, bodies[i], sig);
        assert_string_equal(sig, want);
        assert_int_equal(strlen(sig), 71);
    }
}

static void test_signature_known_vector(void **state)
{
    (void)state;
    /* printf %s '{"event":"upload.complete","file_id":"x"}' |
     *     openssl dgst -sha256 -hmac webhook-secret */
    char sig[72];
    webhook_signature("webhook-secret", "{\"event\":\"upload.complete\",\"file_id\":\"x\"}", sig);
    assert_string_equal(sig,
                        "sha256=8d28b59f3aad179086baf24f79522d4c2f08d4c559b9658a37cae068d7952151");

    /* RFC 4231 test case 2. */
    webhook_signature("Jefe", "what do ya want for nothing?", sig);
    assert_string_equal(sig,
                        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");

    /* A different secret gives a different signature. */
    char other[72];
    webhook_signature("Jefe2", "what do ya want for nothing?", other);
    assert_string_not_equal(sig, other);
}

static void test_backoff(void **state)
{
    (void)state;
    assert_true(webhook_backoff(2, 1) == 2);
    assert_true(webhook_backoff(2, 2) == 4);
    assert_true(webhook_backoff(2, 3) == 8);
    assert_true(webhook_backoff(2, 10) == 1024);
    assert_true(webhook_backoff(0.5, 1) == 0.5);
    assert_true(webhook_backoff(0.5, 3) == 2);
    /* Capped at one hour. */
    assert_true(webhook_backoff(2, 12) == 3600); /* 4096 */
    assert_true(webhook_backoff(2, 100) == 3600);
    assert_true(webhook_backoff(3600, 1) == 3600);
    assert_true(webhook_backoff(5000, 1) == 3600);
    /* Never shrinks as attempts grow. */
    double prev = 0;
    for (int a = 1; a < 40; a++) {
        double d = webhook_backoff(2, a);
        assert_true(d >= prev);
        assert_true(d <= 3600);
        prev = d;
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_payload),
        cmocka_unit_test(test_signature_matches_openssl_hmac),
        cmocka_unit_test(test_signature_known_vector),
        cmocka_unit_test(test_backoff),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
