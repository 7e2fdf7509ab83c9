/* test_router.c - matching methods and paths to routes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "http/router.h"

#include <string.h>

static void noop(void *ctx, http_request *req)
{
    (void)ctx, (void)req;
}

static const http_route routes[] = {
    {.method = "GET", .pattern = "/health", .name = "health", .handle = noop},
    {.method = "POST", .pattern = "/upload/init", .name = "init", .handle = noop},
    {.method = "PUT", .pattern = "/upload/:id/part/:n", .name = "part", .handle = noop},
    {.method = "GET", .pattern = "/upload/:id/status", .name = "status", .handle = noop},
    {.method = "DELETE", .pattern = "/upload/:id", .name = "cancel", .handle = noop},
    {.method = "GET", .pattern = "/docs/*path", .name = "docs", .handle = noop},
    {.method = "GET", .pattern = "/", .name = "root", .handle = noop},
};

static http_router *make(void)
{
    http_router *r = http_router_new();
    assert_non_null(r);
    for (size_t i = 0; i < sizeof routes / sizeof *routes; i++)
        assert_int_equal(http_router_add(r, &routes[i]), 0);
    return r;
}

static void test_literal_and_params(void **state)
{
    (void)state;
    http_router *r = make();
    http_match m;
    http_router_match(r, "GET", "/health", &m);
    assert_int_equal(m.status, 0);
    assert_string_equal(m.route->name, "health");
    assert_int_equal(m.nparams, 0);

    http_router_match(r, "PUT", "/upload/abc-1/part/17", &m);
    assert_int_equal(m.status, 0);
    assert_string_equal(m.route->name, "part");
    assert_string_equal(http_match_param(&m, "id"), "abc-1");
    assert_string_equal(http_match_param(&m, "n"), "17");
    assert_null(http_match_param(&m, "i")); /* a prefix of a name is not the name */
    assert_null(http_match_param(&m, "nope"));

    /* A literal beats a parameter: /upload/init is init, not a cancel of upload "init". */
    http_router_match(r, "POST", "/upload/init", &m);
    assert_string_equal(m.route->name, "init");
    http_router_match(r, "DELETE", "/upload/init", &m);
    assert_string_equal(m.route->name, "cancel");
    assert_string_equal(http_match_param(&m, "id"), "init");

    http_router_match(r, "GET", "/", &m);
    assert_string_equal(m.route->name, "root");
    http_router_free(r);
}

static void test_rest_of_path(void **state)
{
    (void)state;
    http_router *r = make();
    http_match m;
    http_router_match(r, "GET", "/docs/a/b/c.js", &m);
    assert_string_equal(m.route->name, "docs");
    assert_string_equal(http_match_param(&m, "path"), "a/b/c.js");
    http_router_match(r, "GET", "/docs/", &m);
    assert_string_equal(m.route->name, "docs");
    assert_string_equal(http_match_param(&m, "path"), "");
    http_router_match(r, "GET", "/docs", &m);
    assert_int_equal(m.status, 404);
    http_router_free(r);
}

/* A trailing slash is part of the pattern: the tus collection "/files/" and its uploads
 * "/files/:id" are different paths, and "/files" is neither. A HEAD route answers HEAD. */
static void test_trailing_slash_and_head_route(void **state)
{
    (void)state;
    http_router *r = http_router_new();
    const http_route tus[] = {
        {.method = "POST", .pattern = "/files/", .name = "create", .handle = noop},
        {.method = "HEAD", .pattern = "/files/:id", .name = "head", .handle = noop},
        {.method = "PATCH", .pattern = "/files/:id", .name = "patch", .handle = noop},
    };
    for (size_t i = 0; i < sizeof tus / sizeof *tus; i++)
        assert_int_equal(http_router_add(r, &tus[i]), 0);
    http_match m;
    http_router_match(r, "POST", "/files/", &m);
    assert_string_equal(m.route->name, "create");
    http_router_match(r, "POST", "/files", &m);
    assert_int_equal(m.status, 404);
    http_router_match(r, "POST", "/files/abc", &m);
    assert_int_equal(m.status, 405);
    assert_string_equal(m.allow, "HEAD, PATCH, OPTIONS");
    http_router_match(r, "HEAD", "/files/abc", &m);
    assert_string_equal(m.route->name, "head");
    assert_string_equal(http_match_param(&m, "id"), "abc");
    http_router_match(r, "GET", "/files/abc", &m);
    assert_int_equal(m.status, 405);
    http_router_match(r, "HEAD", "/files/abc/", &m);
    assert_int_equal(m.status, 404);
    http_router_match(r, "OPTIONS", "/files/", &m);
    assert_int_equal(m.status, 0);
    assert_string_equal(m.allow, "POST, OPTIONS");
    http_router_free(r);
}

static void test_not_found_and_method_not_allowed(void **state)
{
    (void)state;
    http_router *r = make();
    http_match m;
    const char *missing[] = {"/nope",
                             "/upload",
                             "/upload/",
                             "/upload/x/nope",
                             "/health/x",
                             "/upload/init/extra",
                             "/upload/x/part/1/x",
                             "/upload//status",
                             "//health",
                             "health",
                             ""};
    for (size_t i = 0; i < sizeof missing / sizeof *missing; i++) {
        http_router_match(r, "GET", missing[i], &m);
        if (m.status != 404)
            print_error("%s: status %d\n", missing[i], m.status);
        assert_int_equal(m.status, 404);
        assert_null(m.route);
    }
    http_router_match(r, "POST", "/health", &m);
    assert_int_equal(m.status, 405);
    assert_null(m.route);
    assert_string_equal(m.allow, "GET, HEAD, OPTIONS");

    /* Every route the path matches counts for Allow. */
    http_router_match(r, "GET", "/upload/init", &m);
    assert_int_equal(m.status, 405);
    assert_string_equal(m.allow, "POST, DELETE, OPTIONS");
    http_router_match(r, "POST", "/upload/x/part/1", &m);
    assert_int_equal(m.status, 405);
    assert_string_equal(m.allow, "PUT, OPTIONS");
    http_router_free(r);
}

static void test_head_and_options(void **state)
{
    (void)state;
    http_router *r = make();
    http_match m;
    http_router_match(r, "HEAD", "/upload/u1/status", &m);
    assert_int_equal(m.status, 0);
    assert_string_equal(m.route->name, "status"); /* HEAD is answered by GET */
    assert_string_equal(http_match_param(&m, "id"), "u1");
    http_router_match(r, "HEAD", "/upload/u1", &m);
    assert_int_equal(m.status, 405); /* only DELETE there */

    http_router_match(r, "OPTIONS", "/upload/u1/status", &m);
    assert_int_equal(m.status, 0);
    assert_null(m.route); /* the server (or a CORS filter) answers it */
    assert_string_equal(m.allow, "GET, HEAD, OPTIONS");
    http_router_match(r, "OPTIONS", "/nowhere", &m);
    assert_int_equal(m.status, 404);
    http_router_free(r);
}

static void test_bad_patterns_refused(void **state)
{
    (void)state;
    http_router *r = http_router_new();
    const char *bad[] = {"", "health", "/a//b", "/a//", "//", "/:", "/*", "/*rest/more", "/a/:"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        http_route route = {.method = "GET", .pattern = bad[i], .handle = noop};
        if (http_router_add(r, &route) != -1)
            print_error("pattern \"%s\" was taken\n", bad[i]);
        assert_int_equal(http_router_add(r, &route), -1);
    }
    http_route no_handler = {.method = "GET", .pattern = "/x"};
    assert_int_equal(http_router_add(r, &no_handler), -1);
    http_router_free(r);
}

static void test_long_values_do_not_overflow(void **state)
{
    (void)state;
    http_router *r = make();
    char path[4096];
    memset(path, 'a', sizeof path);
    memcpy(path, "/upload/", 8);
    memcpy(path + 3000, "/part/1", 8); /* a 2,992-byte id: more than the match can hold */
    http_match m;
    http_router_match(r, "PUT", path, &m);
    assert_null(m.route);
    assert_int_not_equal(m.status, 0);
    http_router_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_literal_and_params),
        cmocka_unit_test(test_rest_of_path),
        cmocka_unit_test(test_trailing_slash_and_head_route),
        cmocka_unit_test(test_not_found_and_method_not_allowed),
        cmocka_unit_test(test_head_and_options),
        cmocka_unit_test(test_bad_patterns_refused),
        cmocka_unit_test(test_long_values_do_not_overflow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
