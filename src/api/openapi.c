/* openapi.c - GET /api/openapi.json and the docs page at /api/docs, from files compiled in.
 *
 * Every file is embedded gzip-compressed (cmake/embed.cmake): Swagger UI's script is 1.8 MB
 * as it is and 0.47 MB compressed, and browsers take gzip, so the compressed bytes are sent
 * as they are (no work per request); a client that does not take gzip gets them inflated as
 * they go out (a z_stream per request, never the whole file in memory). The document is
 * different: it is parsed once at start (its tus paths follow TUS_BASE_PATH, its version is
 * the server's), then held both as compact JSON and compressed again.
 *
 * Each file has a strong ETag per encoding and Cache-Control: no-cache, so a browser keeps
 * Swagger UI and asks again with If-None-Match (304). The page and its assets carry a
 * Content-Security-Policy of 'self' only: the page is ours, and nothing it loads may come
 * from elsewhere. */
#include "api/openapi.h"

#include "api/download.h"
#include "api/openapi_assets.h"
#include "base/log.h"
#include "base/util.h"
#include "http/server.h"

#include <assert.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define OPENAPI_ROUTES 4
#define OPENAPI_MAX_FILES 8
/* The tus base path the document is written for. */
#define DOCUMENT_TUS_BASE "/files"

#define DOCS_CSP                                                                                   \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "              \
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "                   \
    "frame-ancestors 'none'"

/* One file as served: compressed (always), and as it is when held (the document). */
typedef struct {
    const char *name;
    const char *content_type;
    const unsigned char *gz;
    size_t gz_len;
    size_t len;
    const char *raw;        /* the bytes as they are, or NULL: inflated from gz per request */
    char etag[2 + 32 + 1];  /* "<digest>" of the bytes as they are */
    char etag_gz[2 + 35 + 1]; /* "<digest>-gz" of the compressed bytes */
    bool page;              /* the page or one of its assets: sent with DOCS_CSP */
} served_file;

struct openapi_docs {
    served_file document, page;
    served_file assets[OPENAPI_MAX_FILES];
    size_t nassets;
    char *document_text;           /* compact JSON */
    unsigned char *document_gz;    /* document_text compressed */
    int problems;
    http_route routes[OPENAPI_ROUTES];
};

/* ---- the document ---- */

int openapi_path_template(const char *pattern, char *out, size_t cap)
{
    size_t n = 0;
    for (const char *p = pattern; *p;) {
        bool param = (p == pattern || p[-1] == '/') && (*p == ':' || *p == '*');
        size_t len = param ? strcspn(p + 1, "/") : 1;
        size_t need = param ? len + 2 : 1;
        if (n + need >= cap)
            return -1;
        if (param) {
            out[n++] = '{';
            memcpy(out + n, p + 1, len);
            n += len;
            out[n++] = '}';
            p += len + 1;
        } else {
            out[n++] = *p++;
        }
    }
    if (n >= cap)
        return -1;
    out[n] = '\0';
    return 0;
}

int openapi_prepare(json_t *doc, const char *tus_base_path, const char *version,
                    json_t **unrouted)
{
    *unrouted = NULL;
    json_t *paths = json_object_get(doc, "paths");
    json_t *info = json_object_get(doc, "info");
    if (!json_is_object(doc) || !json_is_object(paths) || !json_is_object(info))
        return -1;
    if (json_object_set_new(info, "version", json_string(version)) != 0)
        return -1;
    /* The base path without its trailing slash: "/files/" is "/files", "/" is "". */
    size_t base_len = strlen(tus_base_path);
    if (base_len && tus_base_path[base_len - 1] == '/')
        base_len--;
    size_t old_len = strlen(DOCUMENT_TUS_BASE);
    json_t *moved = json_object();
    if (!moved)
        return -1;
    const char *key;
    json_t *item;
    json_object_foreach(paths, key, item)
    {
        bool tus = !strncmp(key, DOCUMENT_TUS_BASE, old_len) &&
                   (key[old_len] == '\0' || key[old_len] == '/');
        char *renamed = NULL;
        if (tus && asprintf(&renamed, "%.*s%s", (int)base_len, tus_base_path, key + old_len) < 0)
            renamed = NULL;
        if ((tus && !renamed) || json_object_set(moved, tus ? renamed : key, item) != 0) {
            free(renamed);
            json_decref(moved);
            return -1;
        }
        free(renamed);
    }
    if (json_object_set_new(doc, "paths", moved) != 0)
        return -1;
    json_t *pending = json_object_get(doc, "x-unrouted-paths");
    if (pending) {
        *unrouted = json_incref(pending);
        json_object_del(doc, "x-unrouted-paths");
    }
    return 0;
}

static const char *const METHODS[] = {"get",     "put",  "post",  "delete",
                                      "options", "head", "patch", "trace"};
#define NMETHODS (sizeof METHODS / sizeof *METHODS)

typedef struct {
    const json_t *paths, *unrouted;
    json_t *answered; /* template -> {method: true} for what the routes answer */
    void (*problem)(void *ctx, const char *text);
    void *ctx;
    int count;
    bool failed; /* out of memory */
} check_state;

static void report(check_state *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report(check_state *st, const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    st->count++;
    st->problem(st->ctx, text);
}

static void lower(const char *s, char *out, size_t cap)
{
    size_t i = 0;
    for (; s[i] && i + 1 < cap; i++)
        out[i] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i]);
    out[i] = '\0';
}

static void mark(check_state *st, const char *path, const char *method)
{
    json_t *methods = json_object_get(st->answered, path);
    if (!methods) {
        methods = json_object();
        if (!methods || json_object_set_new(st->answered, path, methods) != 0) {
            st->failed = true;
            return;
        }
    }
    if (json_object_set_new(methods, method, json_true()) != 0)
        st->failed = true;
}

/* Whether an operation's security lists the ApiKey scheme. */
static bool takes_api_key(const json_t *operation)
{
    size_t i;
    json_t *requirement;
    json_array_foreach(json_object_get(operation, "security"), i, requirement)
    {
        if (json_object_get(requirement, "ApiKey"))
            return true;
    }
    return false;
}

static void check_route(void *ctx, const http_route *route)
{
    check_state *st = ctx;
    char path[512], method[16];
    if (openapi_path_template(route->pattern, path, sizeof path) != 0) {
        report(st, "%s %s: the pattern is too long to describe", route->method, route->pattern);
        return;
    }
    lower(route->method, method, sizeof method);
    mark(st, path, method);
    mark(st, path, "options"); /* the server answers OPTIONS on every known path */
    if (!strcmp(method, "get"))
        mark(st, path, "head");
    const json_t *operation = json_object_get(json_object_get(st->paths, path), method);
    if (!operation) {
        bool ahead = json_object_get(json_object_get(st->unrouted, path), method) != NULL;
        report(st, "%s %s (route %s) is %s", route->method, path, route->name,
               ahead ? "described under x-unrouted-paths: move it into paths"
                     : "not described in docs/openapi.json");
        return;
    }
    bool needs_key = (route->auth & HTTP_AUTH_API_KEY) != 0;
    if (takes_api_key(operation) != needs_key)
        report(st, "%s %s (route %s) %s the API key, but its description says it %s",
               route->method, path, route->name, needs_key ? "takes" : "does not take",
               needs_key ? "does not" : "does");
}

int openapi_check(const json_t *doc, const json_t *unrouted, const http_router *router,
                  void (*problem)(void *ctx, const char *text), void *ctx)
{
    check_state st = {.paths = json_object_get(doc, "paths"),
                      .unrouted = unrouted,
                      .answered = json_object(),
                      .problem = problem,
                      .ctx = ctx};
    if (!st.answered || !json_is_object(st.paths)) {
        json_decref(st.answered);
        report(&st, "%s", st.answered ? "the document has no paths" : "out of memory");
        return st.count;
    }
    http_router_each(router, check_route, &st);
    const char *path;
    json_t *item;
    json_object_foreach((json_t *)st.paths, path, item)
    {
        json_t *answered = json_object_get(st.answered, path);
        int operations = 0;
        for (size_t i = 0; i < NMETHODS; i++) {
            if (!json_object_get(item, METHODS[i]))
                continue;
            operations++;
            if (!json_object_get(answered, METHODS[i])) {
                char upper[16];
                size_t n = 0;
                for (; METHODS[i][n]; n++)
                    upper[n] = (char)(METHODS[i][n] - 32);
                upper[n] = '\0';
                report(&st, "docs/openapi.json describes %s %s, which no route answers", upper,
                       path);
            }
        }
        if (!operations)
            report(&st, "docs/openapi.json describes %s without an operation", path);
    }
    if (st.failed)
        report(&st, "out of memory while checking the document");
    json_decref(st.answered);
    return st.count;
}

/* ---- files ---- */

static const char *content_type_of(const char *name)
{
    const char *dot = strrchr(name, '.');
    static const char *const types[][2] = {{".js", "text/javascript; charset=utf-8"},
                                           {".css", "text/css; charset=utf-8"},
                                           {".html", "text/html; charset=utf-8"},
                                           {".json", "application/json"},
                                           {".png", "image/png"}};
    for (size_t i = 0; dot && i < sizeof types / sizeof *types; i++)
        if (!strcmp(dot, types[i][0]))
            return types[i][1];
    return "application/octet-stream";
}

/* Strong tags: 128 bits of SHA-256, of the bytes as they are and of the compressed ones. */
static void file_tags(served_file *f, const void *raw)
{
    char hex[CU_SHA256_HEX_LEN + 1];
    if (raw) {
        util_sha256_hex(raw, f->len, hex);
        snprintf(f->etag, sizeof f->etag, "\"%.32s\"", hex);
    }
    util_sha256_hex(f->gz, f->gz_len, hex);
    snprintf(f->etag_gz, sizeof f->etag_gz, "\"%.32s-gz\"", hex);
    if (!raw) /* the identity's tag follows from the compressed bytes, which determine it */
        snprintf(f->etag, sizeof f->etag, "\"%.32s\"", hex + 32);
}

/* Inflates a gzip member into out (exactly len bytes). Returns 0 or -1. */
static int inflate_whole(const served_file *f, char *out, size_t len)
{
    z_stream z = {0};
    if (inflateInit2(&z, 15 + 16) != Z_OK)
        return -1;
    z.next_in = (Bytef *)f->gz;
    z.avail_in = (uInt)f->gz_len;
    z.next_out = (Bytef *)out;
    z.avail_out = (uInt)len;
    int rc = inflate(&z, Z_FINISH);
    bool ok = rc == Z_STREAM_END && z.total_out == len;
    inflateEnd(&z);
    return ok ? 0 : -1;
}

/* Compresses text into a new gzip member (*out, malloc'ed). Returns 0 or -1. */
static int deflate_whole(const char *text, size_t len, unsigned char **out, size_t *out_len)
{
    z_stream z = {0};
    if (deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY) != Z_OK)
        return -1;
    uLong cap = deflateBound(&z, len);
    *out = malloc(cap);
    if (!*out) {
        deflateEnd(&z);
        return -1;
    }
    z.next_in = (Bytef *)text;
    z.avail_in = (uInt)len;
    z.next_out = *out;
    z.avail_out = (uInt)cap;
    int rc = deflate(&z, Z_FINISH);
    *out_len = z.total_out;
    deflateEnd(&z);
    if (rc != Z_STREAM_END) {
        free(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

static const openapi_asset *embedded(const char *name)
{
    for (size_t i = 0; i < openapi_asset_count; i++)
        if (!strcmp(openapi_assets[i].name, name))
            return &openapi_assets[i];
    return NULL;
}

static void log_problem(void *ctx, const char *text)
{
    (void)ctx;
    log_warn("API description: %s", text);
}

/* The served document, from the compiled-in docs/openapi.json. */
static int load_document(openapi_docs *d, const cu_config *cfg, const http_router *router)
{
    const openapi_asset *a = embedded("openapi.json");
    char *source = a ? malloc(a->len + 1) : NULL;
    served_file in = {.gz = a ? a->gz : NULL, .gz_len = a ? a->gz_len : 0};
    if (!source || inflate_whole(&in, source, a->len) != 0) {
        free(source);
        return -1;
    }
    json_error_t jerr;
    json_t *doc = json_loadb(source, a->len, 0, &jerr);
    free(source);
    json_t *unrouted = NULL;
    if (!doc || openapi_prepare(doc, cfg->tus_base_path, CU_VERSION, &unrouted) != 0) {
        if (!doc)
            log_error("docs/openapi.json: line %d: %s", jerr.line, jerr.text);
        json_decref(doc);
        return -1;
    }
    d->problems = openapi_check(doc, unrouted, router, log_problem, NULL);
    json_decref(unrouted);
    d->document_text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (!d->document_text)
        return -1;
    served_file *f = &d->document;
    f->name = "openapi.json";
    f->content_type = "application/json";
    f->raw = d->document_text;
    f->len = strlen(d->document_text);
    if (deflate_whole(d->document_text, f->len, &d->document_gz, &f->gz_len) != 0)
        return -1;
    f->gz = d->document_gz;
    file_tags(f, f->raw);
    return 0;
}

/* A compiled-in file of the page, as served; -1 when the build left it out. */
static int page_file(served_file *f, const char *name)
{
    const openapi_asset *a = embedded(name);
    if (!a)
        return -1;
    *f = (served_file){.name = a->name,
                       .content_type = content_type_of(a->name),
                       .gz = a->gz,
                       .gz_len = a->gz_len,
                       .len = a->len,
                       .page = true};
    file_tags(f, NULL);
    return 0;
}

static int load_files(openapi_docs *d)
{
    static const char *const assets[] = {"swagger-ui-bundle.js", "swagger-ui.css", "docs.js",
                                         "favicon.png"};
    static_assert(sizeof assets / sizeof *assets <= OPENAPI_MAX_FILES, "room for the assets");
    if (page_file(&d->page, "index.html") != 0)
        return -1;
    for (size_t i = 0; i < sizeof assets / sizeof *assets; i++)
        if (page_file(&d->assets[d->nassets++], assets[i]) != 0)
            return -1;
    return 0;
}

/* ---- replies ---- */

typedef struct {
    const served_file *file;
    bool started, failed;
    uint64_t at; /* bytes produced so far */
    z_stream z;
} inflating;

/* Up to cap bytes of data (len bytes) at pos. */
static ssize_t copy_out(const void *data, size_t len, uint64_t pos, char *buf, size_t cap)
{
    if (pos >= len)
        return 0;
    size_t n = len - pos < cap ? len - pos : cap;
    memcpy(buf, (const char *)data + pos, n);
    return (ssize_t)n;
}

static ssize_t read_compressed(void *state, uint64_t pos, char *buf, size_t cap)
{
    const served_file *f = state;
    return copy_out(f->gz, f->gz_len, pos, buf, cap);
}

static ssize_t read_raw(void *state, uint64_t pos, char *buf, size_t cap)
{
    const served_file *f = state;
    return copy_out(f->raw, f->len, pos, buf, cap);
}

static ssize_t read_inflated(void *state, uint64_t pos, char *buf, size_t cap)
{
    inflating *s = state;
    if (s->failed || pos != s->at)
        return -1; /* bodies are read in order, once */
    if (!s->started) {
        if (inflateInit2(&s->z, 15 + 16) != Z_OK)
            return -1;
        s->started = true;
        s->z.next_in = (Bytef *)s->file->gz;
        s->z.avail_in = (uInt)s->file->gz_len;
    }
    if (s->at >= s->file->len)
        return 0;
    s->z.next_out = (Bytef *)buf;
    s->z.avail_out = (uInt)cap;
    int rc = inflate(&s->z, Z_NO_FLUSH);
    size_t n = cap - s->z.avail_out;
    if ((rc != Z_OK && rc != Z_STREAM_END) || n == 0) {
        s->failed = true;
        return -1;
    }
    s->at += n;
    return (ssize_t)n;
}

static void free_inflating(void *state)
{
    inflating *s = state;
    if (s->started)
        inflateEnd(&s->z);
    free(s);
}

static void serve(http_request *req, served_file *f)
{
    bool gz = download_accepts_gzip(http_header(req, "Accept-Encoding"));
    const char *etag = gz ? f->etag_gz : f->etag;
    http_add_header(req, "ETag", etag);
    http_add_header(req, "Cache-Control", "no-cache");
    http_add_header(req, "Vary", "Accept-Encoding");
    http_add_header(req, "X-Content-Type-Options", "nosniff");
    if (f->page) {
        http_add_header(req, "Content-Security-Policy", DOCS_CSP);
        http_add_header(req, "Referrer-Policy", "no-referrer");
    }
    if (download_etag_listed(http_header(req, "If-None-Match"), etag, true)) {
        http_reply_empty(req, 304);
        return;
    }
    if (gz) {
        http_add_header(req, "Content-Encoding", "gzip");
        http_reply_stream(req, 200, f->content_type, (int64_t)f->gz_len, read_compressed, f, NULL);
    } else if (f->raw) {
        http_reply_stream(req, 200, f->content_type, (int64_t)f->len, read_raw, f, NULL);
    } else {
        inflating *s = calloc(1, sizeof *s);
        if (!s) {
            http_reply_error(req, 503, "Out of memory");
            return;
        }
        s->file = f;
        http_reply_stream(req, 200, f->content_type, (int64_t)f->len, read_inflated, s,
                          free_inflating);
    }
}

static void handle_document(void *ctx, http_request *req)
{
    openapi_docs *d = ctx;
    serve(req, &d->document);
}

static void handle_page(void *ctx, http_request *req)
{
    openapi_docs *d = ctx;
    serve(req, &d->page);
}

/* /api/docs/: the page is /api/docs (its assets are relative to it). */
static void handle_page_slash(void *ctx, http_request *req)
{
    (void)ctx;
    http_add_header(req, "Location", "../docs");
    http_reply_empty(req, 308);
}

static void handle_asset(void *ctx, http_request *req)
{
    openapi_docs *d = ctx;
    const char *name = http_param(req, "asset");
    for (size_t i = 0; name && i < d->nassets; i++)
        if (!strcmp(d->assets[i].name, name)) {
            serve(req, &d->assets[i]);
            return;
        }
    http_reply_error(req, 404, "Not found: %s", http_path(req));
}

static const http_route openapi_routes[OPENAPI_ROUTES] = {
    {.method = "GET",
     .pattern = "/api/openapi.json",
     .name = "docs.openapi",
     .handle = handle_document},
    {.method = "GET", .pattern = "/api/docs", .name = "docs.page", .handle = handle_page},
    {.method = "GET", .pattern = "/api/docs/", .name = "docs.redirect", .handle = handle_page_slash},
    {.method = "GET", .pattern = "/api/docs/:asset", .name = "docs.asset", .handle = handle_asset},
};

openapi_docs *openapi_register(const cu_config *cfg, http_router *router)
{
    openapi_docs *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    /* The routes first, so that the check sees them too. */
    if (load_files(d) != 0 ||
        http_router_add_module(router, d->routes, openapi_routes, OPENAPI_ROUTES, d) != 0 ||
        load_document(d, cfg, router) != 0) {
        log_error("cannot set up the API description (/api/openapi.json, /api/docs)");
        openapi_free(d);
        return NULL;
    }
    return d;
}

int openapi_problems(const openapi_docs *docs)
{
    return docs->problems;
}

void openapi_free(openapi_docs *docs)
{
    if (!docs)
        return;
    free(docs->document_text);
    free(docs->document_gz);
    free(docs);
}
