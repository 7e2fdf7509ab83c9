/* test_cors.c - CORS_ALLOWED_ORIGINS and which Origin values it allows (http/cors.h). The
 * filter's preflights and reply headers, over real sockets, are in test_filters.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "http/cors.h"
#include "unit_helpers.h"

static http_cors *cors(const char *text)
{
    http_cors *c = NULL;
    cu_error err;
    assert_cu_ok(http_cors_parse(text, &c, &err), err);
    assert_non_null(c);
    return c;
}

static void test_parse_and_allow(void **state)
{
    (void)state;
    cu_error err;
    http_cors *c = NULL;
    assert_cu_ok(http_cors_parse(NULL, &c, &err), err);
    assert_null(c);
    assert_cu_ok(http_cors_parse(" , ", &c, &err), err);
    assert_null(c);
    assert_false(http_cors_allows(NULL, "https://app.example.com"));

    c = cors(" https://App.Example.com/ , http://localhost:5173,http://[::1]:8080");
    assert_true(http_cors_allows(c, "https://app.example.com"));
    assert_true(http_cors_allows(c, "HTTPS://APP.EXAMPLE.COM"));
    assert_true(http_cors_allows(c, "http://localhost:5173"));
    assert_true(http_cors_allows(c, "http://[::1]:8080"));
    const char *refused[] = {"http://app.example.com", /* another scheme is another origin */
                             "https://app.example.com:8443",
                             "https://evil.app.example.com",
                             "https://app.example.com.evil.test",
                             "http://localhost:5174",
                             "http://localhost",
                             "null",
                             "",
                             "https://app.example.com/",
                             "https://app.example.com\r\nX-Evil: 1"};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++)
        assert_false(http_cors_allows(c, refused[i]));
    assert_false(http_cors_allows(c, NULL));
    http_cors_free(c);

    /* "*": any origin, but only ones that are origins (the value is echoed in a header). */
    c = cors("*");
    assert_true(http_cors_allows(c, "https://anything.example"));
    assert_true(http_cors_allows(c, "http://127.0.0.1:3000"));
    assert_false(http_cors_allows(c, "null"));
    assert_false(http_cors_allows(c, "https://a.example/path"));
    assert_false(http_cors_allows(c, "https://a.example x"));
    assert_false(http_cors_allows(c, "ftp://a.example"));
    http_cors_free(c);

    const char *bad[] = {"app.example.com",          "https://",
                         "https://a.example/path",   "ftp://a.example",
                         "https://a.example:",       "https://a.example:123456",
                         "https://a b.example",      "https://[::1",
                         "https://a.example,  nope", "**"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        c = NULL;
        assert_cu_fails(http_cors_parse(bad[i], &c, &err), CU_EINVAL, err);
        assert_null(c);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_parse_and_allow)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
