/* test_openapi.c - the API description against the routes: path templates, the document
 * as served (tus base path, version, operations described ahead of their routes), and the
 * check that each route is described and each description routed. The compiled-in
 * document against the server's real routes is tests/integration/test_openapi.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "api/openapi.h"
#include "api/openapi_assets.h"

#include <stdio.h>
#include <string.h>
#include <zlib.h>

static void noop(void *ctx, http_request *req)
{
    (void)ctx, (void)req;
}

static void test_path_template(void **state)
{
    (void)state;
    const char *cases[][2] = {{"/upload/:id/part/:n", "/upload/{id}/part/{n}"},
                              {"/files/", "/files/"},
                              {"/files/:id", "/files/{id}"},
                              {"/health", "/health"},
                              {"/docs/*path", "/docs/{path}"},
                              {"/", "/"},
                              {"/a:b/c*d", "/a:b/c*d"}}; /* only a whole segment is a parameter */
    char out[64];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        assert_int_equal(openapi_path_template(cases[i][0], out, sizeof out), 0);
        assert_string_equal(out, cases[i][1]);
    }
    assert_int_equal(openapi_path_template("/upload/:id", out, 13), 0);
    assert_string_equal(out, "/upload/{id}");
    assert_int_equal(openapi_path_template("/upload/:id", out, 12), -1);
    assert_int_equal(openapi_path_template("/upload/x", out, 10), 0);
    assert_int_equal(openapi_path_template("/upload/x", out, 9), -1);
}

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *doc = json_loads(text, 0, &jerr);
    if (!doc)
        fail_msg("%s: %s", text, jerr.text);
    return doc;
}

static void test_prepare(void **state)
{
    (void)state;
    json_t *doc = parse("{\"openapi\": \"3.1.0\", \"info\": {\"title\": \"t\", \"version\": \"0\"},"
                        " \"paths\": {\"/health\": {}, \"/files/\": {\"post\": {}}, \"/files\": {},"
                        " \"/files/{id}\": {\"head\": {}}, \"/filesystem\": {}},"
                        " \"x-unrouted-paths\": {\"/api/tokens\": {\"post\": {}}}}");
    json_t *unrouted = NULL;
    assert_int_equal(openapi_prepare(doc, "/uploads/tus/", "9.8.7", &unrouted), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(doc, "info"), "version")),
                        "9.8.7");
    json_t *paths = json_object_get(doc, "paths");
    assert_int_equal(json_object_size(paths), 5);
    const char *want[] = {"/health", "/uploads/tus/", "/uploads/tus", "/uploads/tus/{id}",
                          "/filesystem"};
    size_t i = 0;
    const char *key;
    json_t *item;
    json_object_foreach(paths, key, item)
    {
        assert_string_equal(key, want[i++]); /* in the document's order */
    }
    assert_non_null(json_object_get(json_object_get(paths, "/uploads/tus/"), "post"));
    assert_null(json_object_get(doc, "x-unrouted-paths"));
    assert_non_null(json_object_get(unrouted, "/api/tokens"));
    json_decref(unrouted);
    json_decref(doc);

    /* The default base path changes nothing; a document without unrouted paths has none. */
    doc = parse("{\"info\": {}, \"paths\": {\"/files/{id}\": {}}}");
    assert_int_equal(openapi_prepare(doc, "/files/", "1", &unrouted), 0);
    assert_null(unrouted);
    assert_non_null(json_object_get(json_object_get(doc, "paths"), "/files/{id}"));
    json_decref(doc);

    const char *bad[] = {"[]", "{\"info\": {}}", "{\"paths\": {}}", "{\"info\": 1, \"paths\": {}}"};
    for (i = 0; i < sizeof bad / sizeof *bad; i++) {
        doc = parse(bad[i]);
        assert_int_equal(openapi_prepare(doc, "/files/", "1", &unrouted), -1);
        json_decref(doc);
    }
}

typedef struct {
    char text[4096];
    int count;
} problems;

static void collect(void *ctx, const char *text)
{
    problems *p = ctx;
    size_t n = strlen(p->text);
    snprintf(p->text + n, sizeof p->text - n, "%s\n", text);
    p->count++;
}

static const http_route routes[] = {
    {.method = "GET", .pattern = "/health", .name = "health", .handle = noop},
    {.method = "POST",
     .pattern = "/upload/init",
     .auth = HTTP_AUTH_API_KEY,
     .name = "seed.init",
     .handle = noop},
    {.method = "PUT", .pattern = "/upload/:id/part/:n", .name = "seed.part", .handle = noop},
    {.method = "GET",
     .pattern = "/api/files/:id",
     .auth = HTTP_AUTH_API_KEY,
     .name = "files.download",
     .handle = noop},
    {.method = "POST",
     .pattern = "/files/",
     .auth = HTTP_AUTH_API_KEY,
     .name = "tus.create",
     .handle = noop},
};

/* The description of exactly those routes (a GET also answers HEAD; OPTIONS is answered on
 * every known path). */
static const char *EXACT =
    "{\"paths\": {"
    " \"/health\": {\"get\": {\"security\": []}},"
    " \"/upload/init\": {\"post\": {\"security\": [{\"ApiKey\": []}, {\"Bearer\": []}]}},"
    " \"/upload/{id}/part/{n}\": {\"put\": {\"security\": [{\"PartToken\": []}]}},"
    " \"/api/files/{id}\": {\"get\": {\"security\": [{\"ApiKey\": []}]},"
    "                       \"head\": {\"security\": [{\"ApiKey\": []}]}},"
    " \"/files/\": {\"post\": {\"security\": [{\"ApiKey\": []}]}, \"options\": {}}}}";

static http_router *make_router(size_t n)
{
    http_router *r = http_router_new();
    assert_non_null(r);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(http_router_add(r, &routes[i]), 0);
    return r;
}

static int check(const char *doc_text, const char *unrouted_text, size_t nroutes, problems *p)
{
    memset(p, 0, sizeof *p);
    json_t *doc = parse(doc_text);
    json_t *unrouted = unrouted_text ? parse(unrouted_text) : NULL;
    http_router *r = make_router(nroutes);
    int n = openapi_check(doc, unrouted, r, collect, p);
    assert_int_equal(n, p->count);
    http_router_free(r);
    json_decref(unrouted);
    json_decref(doc);
    return n;
}

static void test_check(void **state)
{
    (void)state;
    size_t all = sizeof routes / sizeof *routes;
    problems p;
    assert_int_equal(check(EXACT, NULL, all, &p), 0);

    /* A route the document does not describe; then one described ahead of it. */
    http_router *r = make_router(all);
    http_route tokens = {.method = "POST",
                         .pattern = "/api/tokens",
                         .auth = HTTP_AUTH_API_KEY,
                         .name = "tokens.create",
                         .handle = noop};
    assert_int_equal(http_router_add(r, &tokens), 0);
    json_t *doc = parse(EXACT);
    memset(&p, 0, sizeof p);
    assert_int_equal(openapi_check(doc, NULL, r, collect, &p), 1);
    assert_string_equal(p.text,
                        "POST /api/tokens (route tokens.create) is not described in "
                        "docs/openapi.json\n");
    json_t *unrouted = parse("{\"/api/tokens\": {\"post\": {}}}");
    memset(&p, 0, sizeof p);
    assert_int_equal(openapi_check(doc, unrouted, r, collect, &p), 1);
    assert_non_null(strstr(p.text, "described under x-unrouted-paths: move it into paths"));
    json_decref(unrouted);
    json_decref(doc);
    http_router_free(r);

    /* Described, but no route answers: the route gone, or another method on a known path. */
    assert_int_equal(check(EXACT, NULL, all - 1, &p), 2);
    assert_non_null(strstr(p.text, "describes POST /files/, which no route answers"));
    assert_non_null(strstr(p.text, "describes OPTIONS /files/, which no route answers"));
    char text[2048];
    snprintf(text, sizeof text, "%.*s, \"delete\": {}}}}", (int)strlen(EXACT) - 3, EXACT);
    assert_int_equal(check(text, NULL, all, &p), 1);
    assert_string_equal(p.text, "docs/openapi.json describes DELETE /files/, which no route "
                                "answers\n");
    /* HEAD on a path with no GET route. */
    assert_int_equal(check("{\"paths\": {\"/upload/{id}/part/{n}\": {\"put\": {}, \"head\": {}}}}",
                           NULL, 3, &p),
                     3); /* HEAD, and GET /health and POST /upload/init undescribed */
    assert_non_null(strstr(p.text, "describes HEAD /upload/{id}/part/{n}, which no route"));
    /* A path template spelled otherwise ("{n}" as "{part}") is another path. */
    assert_int_equal(
        check("{\"paths\": {\"/health\": {\"get\": {}}, \"/upload/{id}/part/{part}\": {\"put\": {}}}}",
              NULL, 1, &p),
        1);
    assert_non_null(strstr(p.text, "PUT /upload/{id}/part/{part}, which no route answers"));
    assert_int_equal(check("{\"paths\": {\"/health\": {\"get\": {}}, \"/x\": {\"summary\": \"\"}}}",
                           NULL, 1, &p),
                     1);
    assert_string_equal(p.text, "docs/openapi.json describes /x without an operation\n");

    /* Credentials: a route that takes the API key is described with it, and only such. */
    assert_int_equal(check("{\"paths\": {\"/health\": {\"get\": {\"security\": [{\"ApiKey\": []}]}},"
                           " \"/upload/init\": {\"post\": {\"security\": [{\"Bearer\": []}]}}}}",
                           NULL, 2, &p),
                     2);
    assert_non_null(strstr(p.text, "GET /health (route health) does not take the API key, but "
                                   "its description says it does"));
    assert_non_null(strstr(p.text, "POST /upload/init (route seed.init) takes the API key, but "
                                   "its description says it does not"));

    assert_int_equal(check("{\"openapi\": \"3.1.0\"}", NULL, 1, &p), 1);
    assert_string_equal(p.text, "the document has no paths\n");
}

/* The compiled-in files: each inflates to its size, the document is JSON that prepares. */
static void test_embedded(void **state)
{
    (void)state;
    const char *want[] = {"openapi.json", "index.html", "docs.js", "swagger-ui-bundle.js",
                          "swagger-ui.css", "favicon.png"};
    assert_int_equal(openapi_asset_count, sizeof want / sizeof *want);
    for (size_t i = 0; i < openapi_asset_count; i++) {
        const openapi_asset *a = &openapi_assets[i];
        assert_string_equal(a->name, want[i]);
        char *out = malloc(a->len + 1);
        assert_non_null(out);
        z_stream z = {0};
        assert_int_equal(inflateInit2(&z, 15 + 16), Z_OK);
        z.next_in = (Bytef *)a->gz;
        z.avail_in = (uInt)a->gz_len;
        z.next_out = (Bytef *)out;
        z.avail_out = (uInt)a->len + 1;
        assert_int_equal(inflate(&z, Z_FINISH), Z_STREAM_END);
        assert_int_equal(z.total_out, a->len);
        if (a->len > 4096) /* the large ones are text, worth compressing */
            assert_true(a->gz_len < a->len / 2);
        inflateEnd(&z);
        if (!strcmp(a->name, "openapi.json")) {
            json_error_t jerr;
            json_t *doc = json_loadb(out, a->len, 0, &jerr);
            assert_non_null(doc);
            json_t *unrouted = NULL;
            assert_int_equal(openapi_prepare(doc, "/files/", "1.2.3", &unrouted), 0);
            assert_string_equal(json_string_value(json_object_get(doc, "openapi")), "3.1.0");
            json_decref(unrouted);
            json_decref(doc);
        }
        free(out);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_template),
        cmocka_unit_test(test_prepare),
        cmocka_unit_test(test_check),
        cmocka_unit_test(test_embedded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
