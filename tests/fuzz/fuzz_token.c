/* fuzz_token.c - part tokens (src/api/token.c): token_verify and token_check_claims with a
 * fixed secret.
 *
 * The first byte picks how the rest becomes a token, so that the fuzzer reaches the claim
 * checks and not only the signature check it cannot get past by chance:
 *   0: the rest is the token as a client sends it;
 *   1: the rest is claims (an upload id, then part number, size and expiry as 8 bytes
 *      each), issued with token_issue;
 *   2: the rest is a header and a payload JSON text separated by a NUL, signed here with
 *      HS256 and the secret, as an attacker who knew it could.
 * Invariants: issued claims come back exactly; a changed byte of a signed token is refused;
 * a token verifies only with its secret, only as HS256, and only with claims of the right
 * JSON types (compared with jansson's reading of the signed payload, both ways); verified
 * claims authorize exactly their upload, part and size before their expiry; every refusal
 * is CU_EAUTH with a message that can go into a JSON reply. */
#include "fuzz_common.h"

#include "api/token.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <strings.h>

#define SECRET "fuzz-secret-0123456789abcdef"
#define OTHER_SECRET "fuzz-secret-0123456789abcdeF"

static void check_refusal(int rc, const cu_error *err)
{
    FUZZ_CHECK(rc == CU_EAUTH && err->code == CU_EAUTH);
    FUZZ_CHECK(err->msg[0] != '\0' && fuzz_utf8_ok(err->msg));
}

/* What verified claims allow: exactly their upload, part and size, until exp. */
static void check_claims_allow(const token_claims *c)
{
    size_t id_len = strnlen(c->upload_id, sizeof c->upload_id);
    FUZZ_CHECK(id_len < sizeof c->upload_id);
    cu_error err = {0};
    int64_t now = c->exp == INT64_MIN ? INT64_MIN : c->exp - 1;
    int rc = token_check_claims(c, c->upload_id, c->part_number, c->expected_size, now, &err);
    FUZZ_CHECK(c->exp == INT64_MIN ? rc == CU_EAUTH : rc == 0);
    rc = token_check_claims(c, c->upload_id, c->part_number, c->expected_size, c->exp, &err);
    check_refusal(rc, &err);
    rc = token_check_claims(c, c->upload_id, c->part_number ^ 1, c->expected_size, now, &err);
    check_refusal(rc, &err);
    rc = token_check_claims(c, c->upload_id, c->part_number, c->expected_size ^ 1, now, &err);
    check_refusal(rc, &err);
    char other[sizeof c->upload_id + 1];
    snprintf(other, sizeof other, "%sx", c->upload_id);
    rc = token_check_claims(c, other, c->part_number, c->expected_size, now, &err);
    check_refusal(rc, &err);
}

/* Verifies token with the secret; on success checks what the claims allow and that another
 * secret is refused. Returns token_verify's result. */
static int verify(const char *token, token_claims *out)
{
    cu_error err = {0};
    int rc = token_verify(SECRET, token, out, &err);
    if (rc != 0) {
        check_refusal(rc, &err);
        return rc;
    }
    check_claims_allow(out);
    token_claims other;
    check_refusal(token_verify(OTHER_SECRET, token, &other, &err), &err);
    return 0;
}

/* base64url without padding into out (room for 4 * ceil(len / 3) + 1 bytes). */
static void b64url(const unsigned char *in, size_t len, char *out)
{
    int n = EVP_EncodeBlock((unsigned char *)out, in, (int)len);
    while (n > 0 && out[n - 1] == '=')
        n--;
    out[n] = '\0';
    for (char *p = out; *p; p++)
        *p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
}

/* "b64url(header).b64url(payload).b64url(HMAC-SHA256(secret, those))", malloc'ed. */
static char *sign(const char *header, const char *payload)
{
    size_t hlen = strlen(header), plen = strlen(payload);
    size_t cap = 4 * (hlen / 3 + 1) + 4 * (plen / 3 + 1) + 64 + 3;
    char *tok = malloc(cap);
    FUZZ_CHECK(tok != NULL);
    b64url((const unsigned char *)header, hlen, tok);
    size_t n = strlen(tok);
    tok[n++] = '.';
    b64url((const unsigned char *)payload, plen, tok + n);
    n += strlen(tok + n);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    FUZZ_CHECK(HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET), (const unsigned char *)tok, n, mac,
                    &mac_len) != NULL);
    tok[n++] = '.';
    b64url(mac, mac_len, tok + n);
    return tok;
}

/* An integer claim of payload, as token_verify should read it: present and a JSON integer. */
static bool int_member(json_t *payload, const char *name, int64_t *out)
{
    json_t *v = json_object_get(payload, name);
    if (!json_is_integer(v))
        return false;
    *out = json_integer_value(v);
    return true;
}

/* Whether a hand-signed token with these texts must verify, by jansson's reading of them,
 * and with which claims. libjwt's own rules: both texts are read as NUL-terminated JSON
 * with duplicate keys allowed; the algorithm is named in any case ("hs256" is HS256, a
 * signature this secret made); a "typ" that is a string must be "JWT", in any case. */
static bool expect_valid(const char *header, const char *payload, token_claims *want)
{
    bool ok = false;
    json_t *h = json_loads(header, 0, NULL), *p = json_loads(payload, 0, NULL);
    const char *alg = json_string_value(json_object_get(h, "alg"));
    const char *typ = json_string_value(json_object_get(h, "typ"));
    const char *id = json_string_value(json_object_get(p, "upload_id"));
    if (json_is_object(h) && alg && !strcasecmp(alg, "HS256") &&
        (!typ || !strcasecmp(typ, "JWT")) && json_is_object(p) && id &&
        strlen(id) < sizeof want->upload_id && int_member(p, "part_number", &want->part_number) &&
        int_member(p, "expected_size", &want->expected_size) && int_member(p, "exp", &want->exp)) {
        snprintf(want->upload_id, sizeof want->upload_id, "%s", id);
        ok = true;
    }
    json_decref(h);
    json_decref(p);
    return ok;
}

static bool claims_equal(const token_claims *a, const token_claims *b)
{
    return !strcmp(a->upload_id, b->upload_id) && a->part_number == b->part_number &&
           a->expected_size == b->expected_size && a->exp == b->exp;
}

static void fuzz_raw(const uint8_t *data, size_t size)
{
    char *token = fuzz_strndup(data, size);
    token_claims out;
    verify(token, &out);
    free(token);
}

static void fuzz_issued(const uint8_t *data, size_t size)
{
    token_claims in = {0};
    size_t id_len = (size_t)fuzz_take_u64(&data, &size, 1) % sizeof in.upload_id;
    id_len = id_len < size ? id_len : size;
    memcpy(in.upload_id, data, id_len);
    data += id_len, size -= id_len;
    in.part_number = (int64_t)fuzz_take_u64(&data, &size, 8);
    in.expected_size = (int64_t)fuzz_take_u64(&data, &size, 8);
    in.exp = (int64_t)fuzz_take_u64(&data, &size, 8);
    char *token = token_issue(SECRET, &in);
    if (!token) { /* jansson takes only UTF-8 strings; issued ids are UUIDs */
        FUZZ_CHECK(!fuzz_utf8_ok(in.upload_id));
        return;
    }
    token_claims out;
    FUZZ_CHECK(verify(token, &out) == 0);
    FUZZ_CHECK(claims_equal(&in, &out));

    /* Any other byte anywhere: refused. */
    size_t len = strlen(token);
    size_t pos = (size_t)fuzz_take_u64(&data, &size, 2) % len;
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ ";
    char c = alphabet[fuzz_take_u64(&data, &size, 1) % (sizeof alphabet - 1)];
    if (token[pos] != c) {
        token[pos] = c;
        FUZZ_CHECK(verify(token, &out) != 0);
    }
    free(token);
}

static void fuzz_signed(const uint8_t *data, size_t size)
{
    char *header = fuzz_take_until(&data, &size, 0);
    char *payload = fuzz_strndup(data, size);
    char *token = sign(header, payload);
    token_claims want, out;
    bool valid = expect_valid(header, payload, &want);
    int rc = verify(token, &out);
    /* Past 4096 bytes a token is refused before it is parsed. */
    FUZZ_CHECK(rc == 0 ? valid && claims_equal(&want, &out) : !valid || strlen(token) > 4096);
    free(token);
    free(payload);
    free(header);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    switch (data[0] % 3) {
    case 0:
        fuzz_raw(data + 1, size - 1);
        break;
    case 1:
        fuzz_issued(data + 1, size - 1);
        break;
    default:
        fuzz_signed(data + 1, size - 1);
        break;
    }
    return 0;
}
