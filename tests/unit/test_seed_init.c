/* test_seed_init.c - reading the /upload/init body: what is accepted, and the message of
 * each refusal (the client reads it as the reply's "error"). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "api/seed_init.h"
#include "unit_helpers.h"

#include <jansson.h>
#include <string.h>

/* Parses body and expects a refusal whose message starts with want. */
static void assert_refused(const char *body, size_t len, const char *want)
{
    seed_init_body in;
    cu_error err;
    assert_cu_fails(seed_init_parse(body, len, &in, &err), CU_EINVAL, err);
    if (strncmp(err.msg, want, strlen(want)) != 0)
        print_error("body %.*s: \"%s\", expected \"%s...\"\n", (int)len, body, err.msg, want);
    assert_int_equal(strncmp(err.msg, want, strlen(want)), 0);
    assert_null(in.doc);
    /* The message becomes a JSON string in the reply: jansson must take it. */
    json_t *s = json_string(err.msg);
    assert_non_null(s);
    json_decref(s);
}

static void assert_refused_text(const char *body, const char *want)
{
    assert_refused(body, strlen(body), want);
}

static void test_accepts_fields(void **state)
{
    (void)state;
    const char *body = "{\"filename\": \"videos/2024/movie.mp4\", \"total_size\": 10737418240, "
                       "\"webhook_url\": \"https://example.com/h\", \"checksum_sha256\": \"ab\", "
                       "\"content_type\": \"video/mp4\"}";
    seed_init_body in;
    cu_error err;
    assert_cu_ok(seed_init_parse(body, strlen(body), &in, &err), err);
    assert_string_equal(in.filename, "videos/2024/movie.mp4");
    assert_int_equal(in.filename_len, strlen("videos/2024/movie.mp4"));
    assert_int_equal(in.total_size, 10737418240);
    assert_string_equal(in.webhook_url, "https://example.com/h");
    assert_string_equal(in.checksum_sha256, "ab"); /* what it means is checked later */
    assert_string_equal(in.content_type, "video/mp4");
    seed_init_body_clear(&in);
    assert_null(in.doc);

    /* Optional fields may be null; a NUL in the filename is left to the filename policy. */
    const char *nul = "{\"filename\": \"a\\u0000b\", \"total_size\": 0, \"webhook_url\": null, "
                      "\"checksum_sha256\": null, \"content_type\": null, \"other\": [1]}";
    assert_cu_ok(seed_init_parse(nul, strlen(nul), &in, &err), err);
    assert_int_equal(in.filename_len, 3);
    assert_memory_equal(in.filename, "a\0b", 4);
    assert_null(in.webhook_url);
    assert_null(in.checksum_sha256);
    assert_null(in.content_type);
    seed_init_body_clear(&in);
}

static void test_refusals(void **state)
{
    (void)state;
    assert_refused_text("", "Malformed JSON: ");
    assert_refused_text("{\"filename\": \"a\", \"total_size\": 1", "Malformed JSON: ");
    assert_refused_text("{\"filename\": \"a\", \"filename\": \"b\", \"total_size\": 1}",
                        "Malformed JSON: duplicate object key");
    assert_refused_text("[]", "Request body must be a JSON object");
    assert_refused_text("42", "Malformed JSON: "); /* jansson takes only arrays and objects */
    assert_refused_text("{\"total_size\": 1}", "Missing field: filename");
    assert_refused_text("{\"filename\": 1, \"total_size\": 1}", "filename must be a string");
    assert_refused_text("{\"filename\": \"a\"}", "Missing field: total_size");
    assert_refused_text("{\"filename\": \"a\", \"total_size\": 1.5}",
                        "total_size must be a whole number of bytes");
    assert_refused_text("{\"filename\": \"a\", \"total_size\": \"1\"}",
                        "total_size must be a whole number of bytes");
    assert_refused_text("{\"filename\": \"a\", \"total_size\": 1, \"webhook_url\": 5}",
                        "webhook_url must be a string");
    assert_refused_text("{\"filename\": \"a\", \"total_size\": 1, \"checksum_sha256\": []}",
                        "checksum_sha256 must be a string");
    assert_refused_text("{\"filename\": \"a\", \"total_size\": 1, \"content_type\": 3}",
                        "content_type must be a string");
    assert_refused_text(
        "{\"filename\": \"a\", \"total_size\": 1, \"content_type\": \"image/png\\u0000\"}",
        "content_type must be a string");
    assert_refused_text(
        "{\"filename\": \"a\", \"total_size\": 1, \"webhook_url\": \"http://a\\u0000b\"}",
        "webhook_url must be an http:// or https:// URL");
}

/* Found by fuzz_init_json (tests/fuzz/corpus/fuzz_init_json/finding_escape_utf8): jansson's
 * message quotes the body near the error and cut a UTF-8 character in two, which made the
 * reply impossible to pack, so the client got a 500 "Out of memory". */
static void test_refusal_message_is_utf8(void **state)
{
    (void)state;
    const char body[] = {'"', '\\', (char)0xc7, (char)0x96}; /* an escape of a 2-byte char */
    assert_refused(body, sizeof body, "Malformed JSON: invalid escape near '\"\\?'");
    assert_refused_text("{\"filename\": \"\\\xe6\x96\x87\", \"total_size\": 1}",
                        "Malformed JSON: invalid escape");
    assert_refused_text("{\"filename\": \"a\xff\", \"total_size\": 1}", "Malformed JSON: ");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepts_fields),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_refusal_message_is_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
