/* test_webhook.c - the upload.complete payload, its signature, the retry backoff, which
 * webhook URLs init accepts, and how logs show them. */
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

/* A configuration with WEBHOOK_ALLOWED_HOSTS=allowed (may be NULL). */
static cu_config config_allowing(const char *allowed)
{
    cu_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cu_error err;
    assert_int_equal(netaddr_allowlist_parse(allowed, &cfg.webhook_allowlist, &err), 0);
    return cfg;
}

static void assert_url_ok(const cu_config *cfg, const char *url)
{
    cu_error err = {0};
    int rc = webhook_url_check(cfg, url, &err);
    if (rc != 0)
        print_error("%s refused: %s\n", url, err.msg);
    assert_int_equal(rc, 0);
}

/* url is refused with a message containing want (and never the URL's password). */
static void assert_url_refused(const cu_config *cfg, const char *url, const char *want)
{
    cu_error err = {0};
    int rc = webhook_url_check(cfg, url, &err);
    if (rc != CU_EINVAL || !strstr(err.msg, want))
        print_error("%s: rc %d, \"%s\", expected \"%s\"\n", url, rc, err.msg, want);
    assert_int_equal(rc, CU_EINVAL);
    assert_non_null(strstr(err.msg, want));
    assert_null(strstr(err.msg, "s3cret"));
}

static void test_url_address_literals_refused(void **state)
{
    (void)state;
    cu_config cfg = config_allowing(NULL);
    /* Every spelling of loopback that libc or libcurl reads as one. */
    const char *loopback[] = {
        "http://127.0.0.1:22/",
        "http://127.0.0.1/hook",
        "https://127.0.0.1:443/",
        "http://0x7f000001:8080/",
        "http://0X7F000001/",
        "http://2130706433:9/",
        "http://0177.0.0.1/",
        "http://017700000001/",
        "http://127.1/",
        "http://127.0.1/",
        "http://0x7f.1/",
        "http://127.000.000.001/",
        "http://127.0.0.1./",
        "http://%31%32%37.0.0.1/",
        "http://127.9.9.9/",
        "http://user:s3cret@127.0.0.1/",
        "http://[::1]/",
        "http://[::1]:8080/x",
        "http://[0:0:0:0:0:0:0:1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://[64:ff9b::127.0.0.1]/",
        "http://[2002:7f00:1::1]/",
        "http://\xef\xbc\x91\xef\xbc\x92\xef\xbc\x97.\xef\xbc\x90.\xef\xbc\x90."
        "\xef\xbc\x91/", /* fullwidth digits, mapped by IDNA */
        "http://\xef\xbc\x90x7f000001/",
        "HTTP://127.0.0.1/"};
    for (size_t i = 0; i < sizeof loopback / sizeof *loopback; i++) {
        if (!strncmp(loopback[i], "HTTP", 4))
            assert_url_refused(&cfg, loopback[i], "http:// or https://"); /* as before */
        else
            assert_url_refused(&cfg, loopback[i], "loopback");
    }
    struct {
        const char *url, *what;
    } others[] = {
        {"http://169.254.169.254/latest/meta-data/", "link-local"},
        {"http://0xa9fea9fe/", "link-local"},
        {"http://[fe80::1%25eth0]/", "link-local"},
        {"http://[::ffff:169.254.169.254]/", "link-local"},
        {"http://10.0.0.1/", "private"},
        {"http://012.1/", "private"},
        {"http://172.16.5.4/", "private"},
        {"http://192.168.1.1:8443/", "private"},
        {"http://[fd00::1]/", "private"},
        {"http://[fc00::1]/", "private"},
        {"http://100.64.0.1/", "carrier-grade NAT"},
        {"http://0.0.0.0/", "unspecified"},
        {"http://0/", "unspecified"},
        {"http://[::]/", "unspecified"},
        {"http://224.0.0.1/", "multicast"},
        {"http://[ff02::1]/", "multicast"},
        {"http://255.255.255.255/", "broadcast"},
        {"http://192.0.2.10/", "documentation"},
        {"http://[2001:db8::1]/", "documentation"},
        {"http://[::127.0.0.1]/", "IPv4-compatible"},
        {"http://240.1.2.3/", "reserved"},
    };
    for (size_t i = 0; i < sizeof others / sizeof *others; i++)
        assert_url_refused(&cfg, others[i].url, others[i].what);
    /* The message says what to do. */
    cu_error err;
    webhook_url_check(&cfg, "http://10.0.0.1/", &err);
    assert_non_null(strstr(err.msg, "WEBHOOK_ALLOWED_HOSTS"));
    assert_non_null(strstr(err.msg, "10.0.0.1"));
}

static void test_url_accepted(void **state)
{
    (void)state;
    cu_config cfg = config_allowing(NULL);
    /* Public addresses, and names: a name is checked where it resolves, at delivery. */
    assert_url_ok(&cfg, "https://example.com/hook");
    assert_url_ok(&cfg, "http://93.184.216.34:8080/x?y=1#z");
    assert_url_ok(&cfg, "http://[2606:4700:4700::1111]/");
    assert_url_ok(&cfg, "http://[::ffff:8.8.8.8]/");
    assert_url_ok(&cfg, "http://localhost:1234/");
    assert_url_ok(&cfg, "http://hooks.internal/");
    assert_url_ok(&cfg, "http://1.2.3.4.5/"); /* not an address: a name */
    assert_url_ok(&cfg, "https://user:s3cret@example.com/");
    assert_url_ok(&cfg, "http://b\xc3\xbc"
                        "cher.example/");
    /* Not URLs at all, as before. */
    const char *bad[] = {"ftp://example.com/",
                         "x",
                         "",
                         "http://",
                         "file:///etc/passwd",
                         "http://a b/",
                         "http://exa\tmple/",
                         "gopher://127.0.0.1/"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_url_refused(&cfg, bad[i], "http:// or https://");
    assert_url_refused(&cfg, "http://[::1/", "not a valid URL");
    assert_url_refused(&cfg, "http://example.com:99999/", "not a valid URL");
    char longer[2100] = "https://example.com/";
    memset(longer + strlen(longer), 'a', 2040);
    longer[2060] = '\0';
    assert_url_refused(&cfg, longer, "http:// or https://");
}

static void test_url_allowed_hosts(void **state)
{
    (void)state;
    cu_config cfg = config_allowing("127.0.0.1, 10.0.0.0/8, fd00:1::/32, hooks.internal");
    assert_url_ok(&cfg, "http://127.0.0.1:8080/");
    assert_url_ok(&cfg, "http://0x7f000001/"); /* the same address */
    assert_url_ok(&cfg, "http://[::ffff:127.0.0.1]/");
    assert_url_ok(&cfg, "http://10.200.3.4/");
    assert_url_ok(&cfg, "http://[fd00:1::5]/");
    assert_url_ok(&cfg, "http://hooks.internal/");
    /* Exactly what is listed: nothing next to it. */
    assert_url_refused(&cfg, "http://127.0.0.2/", "loopback");
    assert_url_refused(&cfg, "http://[::1]/", "loopback");
    assert_url_refused(&cfg, "http://192.168.0.1/", "private");
    assert_url_refused(&cfg, "http://[fd00:2::1]/", "private");
    assert_url_refused(&cfg, "http://169.254.169.254/", "link-local");
    netaddr_allowlist_free(cfg.webhook_allowlist);
}

static void test_url_for_log(void **state)
{
    (void)state;
    char out[256];
    struct {
        const char *url, *want;
    } cases[] = {
        {"https://user:s3cret@example.com/p", "https://***@example.com/p"},
        {"http://user@example.com/", "http://***@example.com/"},
        {"http://u:s3cret@127.0.0.1:8080", "http://***@127.0.0.1:8080"},
        {"http://a:s3cret@b@example.com/x@y", "http://***@example.com/x@y"},
        {"http://user:p%40s3cret@example.com:80/?q#f", "http://***@example.com:80/?q#f"},
        {"http://example.com/path?u=a@b", "http://example.com/path?u=a@b"},
        {"http://example.com/#a@b", "http://example.com/#a@b"},
        {"http://example.com/", "http://example.com/"},
        {"http://[::1]:9/", "http://[::1]:9/"},
        {"http://example.com/\"quoted\"", "http://example.com/\\x22quoted\\x22"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        webhook_url_for_log(cases[i].url, out, sizeof out);
        assert_string_equal(out, cases[i].want);
        assert_null(strstr(out, "s3cret"));
    }
    /* Cut to fit, and still without the password. */
    char small[24];
    webhook_url_for_log("https://user:s3cret@example.com/a/very/long/path", small, sizeof small);
    assert_null(strstr(small, "s3cret"));
    assert_true(strlen(small) < sizeof small);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_payload),
        cmocka_unit_test(test_signature_matches_openssl_hmac),
        cmocka_unit_test(test_signature_known_vector),
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_url_address_literals_refused),
        cmocka_unit_test(test_url_accepted),
        cmocka_unit_test(test_url_allowed_hosts),
        cmocka_unit_test(test_url_for_log),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
