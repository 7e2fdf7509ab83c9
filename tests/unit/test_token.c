/* test_token.c - part tokens: issue, verify, and what their claims allow. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "api/token.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SECRET "unit-test-secret-0123456789abcdef"
#define UPLOAD_ID "550e8400-e29b-41d4-a716-446655440000"
#define OTHER_ID "6ba7b810-9dad-41d1-80b4-00c04fd430c8"

static token_claims sample_claims(void)
{
    token_claims c = {
        .part_number = 7, .expected_size = 52428800, .exp = (int64_t)time(NULL) + 3600};
    snprintf(c.upload_id, sizeof c.upload_id, "%s", UPLOAD_ID);
    return c;
}

/* base64url without padding of len bytes into out (at least 4*len/3+4 bytes). */
static void b64url(const unsigned char *in, size_t len, char *out)
{
    int n = EVP_EncodeBlock((unsigned char *)out, in, (int)len);
    while (n > 0 && out[n - 1] == '=')
        n--;
    out[n] = '\0';
    for (char *p = out; *p; p++) {
        if (*p == '+')
            *p = '-';
        else if (*p == '/')
            *p = '_';
    }
}

/* Builds "b64url(header).b64url(payload).b64url(HMAC(md, secret, signing input))"; md NULL
 * leaves the signature empty. Returns a malloc'ed token. */
static char *hand_token(const char *header, const char *payload, const EVP_MD *md,
                        const char *secret)
{
    char h[512], p[1024], sig[256] = "";
    b64url((const unsigned char *)header, strlen(header), h);
    b64url((const unsigned char *)payload, strlen(payload), p);
    size_t len = strlen(h) + 1 + strlen(p) + 1 + sizeof sig;
    char *tok = malloc(len);
    assert_non_null(tok);
    snprintf(tok, len, "%s.%s", h, p);
    if (md) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int mac_len = 0;
        assert_non_null(HMAC(md, secret, (int)strlen(secret), (const unsigned char *)tok,
                             strlen(tok), mac, &mac_len));
        b64url(mac, mac_len, sig);
    }
    strcat(tok, ".");
    strcat(tok, sig);
    return tok;
}

/* A payload with all four claims for sample_claims(). */
static void full_payload(char *out, size_t cap)
{
    token_claims c = sample_claims();
    snprintf(out, cap,
             "{\"upload_id\":\"%s\",\"part_number\":%lld,\"expected_size\":%lld,\"exp\":%lld}",
             c.upload_id, (long long)c.part_number, (long long)c.expected_size, (long long)c.exp);
}

static void assert_refused(const char *token)
{
    cu_error err = {0};
    token_claims out;
    int rc = token_verify(SECRET, token, &out, &err);
    if (rc != CU_EAUTH)
        print_error("token \"%s\" not refused (rc %d)\n", token, rc);
    assert_int_equal(rc, CU_EAUTH);
    assert_int_equal(err.code, CU_EAUTH);
    assert_true(err.msg[0] != '\0');
}

static void test_round_trip(void **state)
{
    (void)state;
    token_claims in = sample_claims();
    char *tok = token_issue(SECRET, &in);
    assert_non_null(tok);
    /* Three base64url fields. */
    int dots = 0;
    for (const char *p = tok; *p; p++)
        dots += *p == '.';
    assert_int_equal(dots, 2);

    token_claims out;
    memset(&out, 0xa5, sizeof out);
    cu_error err = {0};
    assert_int_equal(token_verify(SECRET, tok, &out, &err), 0);
    assert_string_equal(out.upload_id, in.upload_id);
    assert_int_equal(out.part_number, in.part_number);
    assert_int_equal(out.expected_size, in.expected_size);
    assert_int_equal(out.exp, in.exp);
    assert_int_equal(token_check_claims(&out, UPLOAD_ID, 7, 52428800, in.exp - 1, &err), 0);
    free(tok);

    /* Sizes beyond 32 bits survive. */
    in.expected_size = (int64_t)5 << 32;
    in.part_number = 0;
    tok = token_issue(SECRET, &in);
    assert_non_null(tok);
    assert_int_equal(token_verify(SECRET, tok, &out, &err), 0);
    assert_int_equal(out.expected_size, (int64_t)5 << 32);
    assert_int_equal(out.part_number, 0);
    free(tok);
}

static void test_check_claims(void **state)
{
    (void)state;
    token_claims c = sample_claims();
    int64_t now = c.exp - 100;
    cu_error ok = {0}, other_upload = {0}, other_part = {0}, other_size = {0}, expired = {0};

    assert_int_equal(token_check_claims(&c, UPLOAD_ID, 7, 52428800, now, &ok), 0);
    assert_int_equal(token_check_claims(&c, OTHER_ID, 7, 52428800, now, &other_upload), CU_EAUTH);
    assert_int_equal(token_check_claims(&c, UPLOAD_ID, 8, 52428800, now, &other_part), CU_EAUTH);
    assert_int_equal(token_check_claims(&c, UPLOAD_ID, 7, 52428799, now, &other_size), CU_EAUTH);
    assert_int_equal(token_check_claims(&c, UPLOAD_ID, 7, 52428800, c.exp, &expired), CU_EAUTH);

    const cu_error *fails[] = {&other_upload, &other_part, &other_size, &expired};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(fails[i]->code, CU_EAUTH);
        assert_true(fails[i]->msg[0] != '\0');
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(fails[i]->msg, fails[j]->msg);
    }
    assert_non_null(strstr(other_upload.msg, "another upload"));
    assert_non_null(strstr(expired.msg, "expired"));

    /* exp <= now is expired; one second before is still fine. */
    cu_error err;
    assert_int_equal(token_check_claims(&c, UPLOAD_ID, 7, 52428800, c.exp + 1000, &err), CU_EAUTH);
    assert_int_equal(token_check_claims(&c, UPLOAD_ID, 7, 52428800, c.exp - 1, &err), 0);
}

static void test_refuses_wrong_secret(void **state)
{
    (void)state;
    token_claims in = sample_claims();
    char *tok = token_issue("another-secret-0123456789abcdef", &in);
    assert_non_null(tok);
    assert_refused(tok);
    free(tok);
}

static void test_refuses_garbage(void **state)
{
    (void)state;
    const char *bad[] = {"",           "abc",     "a.b.c",
                         "a.b",        "a.b.c.d", "...",
                         "a b.c.d",    "a+b.c.d", "eyJhbGciOiJIUzI1NiJ9.e30.",
                         "eyJ.eyJ.eyJ"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_refused(bad[i]);
}

static void test_refuses_tampered_payload(void **state)
{
    (void)state;
    token_claims in = sample_claims();
    char *tok = token_issue(SECRET, &in);
    assert_non_null(tok);
    char *payload = strchr(tok, '.') + 1;
    char *sig = strchr(payload, '.');
    /* Flip one character in the middle of the payload to another base64url character. */
    char *c = payload + (sig - payload) / 2;
    *c = *c == 'A' ? 'B' : 'A';
    assert_refused(tok);
    free(tok);
}

static void test_hand_signed_hs256_is_accepted(void **state)
{
    /* Proves the hand-made tokens below are well formed: only the point under test differs. */
    (void)state;
    char payload[512];
    full_payload(payload, sizeof payload);
    char *tok = hand_token("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", payload, EVP_sha256(), SECRET);
    token_claims out;
    cu_error err = {0};
    int rc = token_verify(SECRET, tok, &out, &err);
    if (rc)
        print_error("hand-made HS256 token refused: %s\n", err.msg);
    assert_int_equal(rc, 0);
    assert_string_equal(out.upload_id, UPLOAD_ID);
    assert_int_equal(out.part_number, 7);
    free(tok);
}

static void test_refuses_alg_none(void **state)
{
    (void)state;
    char payload[512];
    full_payload(payload, sizeof payload);
    char *tok = hand_token("{\"alg\":\"none\",\"typ\":\"JWT\"}", payload, NULL, NULL);
    assert_int_equal(tok[strlen(tok) - 1], '.'); /* empty signature */
    assert_refused(tok);
    free(tok);

    tok = hand_token("{\"alg\":\"none\"}", payload, NULL, NULL);
    assert_refused(tok);
    free(tok);
}

static void test_refuses_hs512(void **state)
{
    (void)state;
    char payload[512];
    full_payload(payload, sizeof payload);
    char *tok = hand_token("{\"alg\":\"HS512\",\"typ\":\"JWT\"}", payload, EVP_sha512(), SECRET);
    assert_refused(tok);
    free(tok);
}

static void test_refuses_missing_or_bad_claims(void **state)
{
    (void)state;
    token_claims c = sample_claims();
    char payload[512];
    const char *header = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

    snprintf(payload, sizeof payload, "{\"upload_id\":\"%s\",\"expected_size\":1,\"exp\":%lld}",
             c.upload_id, (long long)c.exp);
    char *tok = hand_token(header, payload, EVP_sha256(), SECRET);
    assert_refused(tok); /* no part_number */
    free(tok);

    snprintf(payload, sizeof payload, "{\"part_number\":1,\"expected_size\":1,\"exp\":%lld}",
             (long long)c.exp);
    tok = hand_token(header, payload, EVP_sha256(), SECRET);
    assert_refused(tok); /* no upload_id */
    free(tok);

    snprintf(payload, sizeof payload,
             "{\"upload_id\":\"%s\",\"part_number\":1,\"expected_size\":1}", c.upload_id);
    tok = hand_token(header, payload, EVP_sha256(), SECRET);
    assert_refused(tok); /* no exp */
    free(tok);

    snprintf(payload, sizeof payload,
             "{\"upload_id\":\"%s\",\"part_number\":\"1\",\"expected_size\":1,\"exp\":%lld}",
             c.upload_id, (long long)c.exp);
    tok = hand_token(header, payload, EVP_sha256(), SECRET);
    assert_refused(tok); /* part_number as a string: libjwt alone would read it as 0 */
    free(tok);

    snprintf(payload, sizeof payload,
             "{\"upload_id\":\"%s\",\"part_number\":1,\"expected_size\":1.5,\"exp\":%lld}",
             c.upload_id, (long long)c.exp);
    tok = hand_token(header, payload, EVP_sha256(), SECRET);
    assert_refused(tok); /* a fractional size */
    free(tok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_check_claims),
        cmocka_unit_test(test_refuses_wrong_secret),
        cmocka_unit_test(test_refuses_garbage),
        cmocka_unit_test(test_refuses_tampered_payload),
        cmocka_unit_test(test_hand_signed_hs256_is_accepted),
        cmocka_unit_test(test_refuses_alg_none),
        cmocka_unit_test(test_refuses_hs512),
        cmocka_unit_test(test_refuses_missing_or_bad_claims),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
