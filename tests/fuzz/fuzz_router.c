/* fuzz_router.c - the route matcher (src/http/router.c) on any method and path.
 *
 * The router holds the server's real routes (health_api_register, seed_api_register) and a
 * few more with parameters, a "*rest" tail, a trailing slash ("/files/", tus's collection)
 * and overlaps, as other modules add them. The input is the method, a newline, then the path.
 * Every answer is compared with a matcher written here independently (split both into segments,
 * compare by index): which routes match, which one wins (the most literal segments of the method's,
 * the first on a tie; HEAD takes GET's), the Allow list, 404 against 405, OPTIONS, and every
 * parameter: its value is exactly the path's segment (or tail), ":" values are non-empty and hold
 * no '/', and putting the values back into the pattern gives the path. The seed's parsers then read
 * the upload id and the part number out of the parameters (src/api/seed_path.c). */
#include "fuzz_common.h"

#include "api/health.h"
#include "api/seed.h"
#include "api/seed_path.h"
#include "http/router.h"

static void no_handler(void *ctx, http_request *req)
{
    (void)ctx, (void)req;
}

static const http_route extra_routes[] = {
    {.method = "GET", .pattern = "/files/*path", .name = "files.get", .handle = no_handler},
    {.method = "PATCH", .pattern = "/files/:id", .name = "files.patch", .handle = no_handler},
    {.method = "HEAD", .pattern = "/files/:id", .name = "files.head", .handle = no_handler},
    {.method = "POST", .pattern = "/files/", .name = "files.create", .handle = no_handler},
    {.method = "DELETE", .pattern = "/files", .name = "files.bare", .handle = no_handler},
    {.method = "PUT",
     .pattern = "/b/:bucket/:key/parts/:n",
     .name = "b.part",
     .handle = no_handler},
    {.method = "POST", .pattern = "/b/:bucket/*key", .name = "b.post", .handle = no_handler},
    {.method = "DELETE",
     .pattern = "/upload/:id/part/:n",
     .name = "part.delete",
     .handle = no_handler},
    {.method = "GET", .pattern = "/", .name = "root", .handle = no_handler},
};

#define NEXTRA (sizeof extra_routes / sizeof *extra_routes)
#define MAX_ROUTES (HEALTH_ROUTES + SEED_ROUTES + NEXTRA)
#define MAX_SEGS 4096

static http_router *router;
static const http_route *routes[MAX_ROUTES];
static size_t nroutes;
static health_api health; /* their routes only: no handler runs here */
static seed_api seed;

static void collect(void *ctx, const http_route *route)
{
    (void)ctx;
    FUZZ_CHECK(nroutes < MAX_ROUTES);
    routes[nroutes++] = route;
}

static void setup(void)
{
    router = http_router_new();
    /* In the order main() adds them. */
    FUZZ_CHECK(router && health_api_register(&health, router) == 0 &&
               seed_api_register(&seed, router) == 0);
    for (size_t i = 0; i < NEXTRA; i++)
        FUZZ_CHECK(http_router_add(router, &extra_routes[i]) == 0);
    http_router_each(router, collect, NULL);
    FUZZ_CHECK(nroutes == MAX_ROUTES);
}

/* The segments of a path or pattern after its leading '/': starts and lengths. */
typedef struct {
    size_t n;
    const char *start[MAX_SEGS];
    size_t len[MAX_SEGS];
} segments;

static bool split(const char *s, segments *out)
{
    out->n = 0;
    if (s[0] != '/')
        return false;
    const char *seg = s + 1;
    for (;;) {
        if (out->n == MAX_SEGS)
            return false;
        size_t len = strcspn(seg, "/");
        out->start[out->n] = seg;
        out->len[out->n++] = len;
        if (seg[len] == '\0')
            return true;
        seg += len + 1;
    }
}

typedef struct {
    int n;
    const char *name[HTTP_MAX_PARAMS]; /* in the pattern, after ':' or '*' */
    size_t name_len[HTTP_MAX_PARAMS];
    const char *value[HTTP_MAX_PARAMS]; /* in the path */
    size_t value_len[HTTP_MAX_PARAMS];
} ref_params;

/* The number of literal segments when pattern matches path, else -1. */
static int ref_match(const char *pattern, const char *path, ref_params *out)
{
    static segments ps, ss;
    FUZZ_CHECK(split(pattern, &ps));
    if (!split(path, &ss))
        return -1;
    int literals = 0;
    size_t used = 0;
    out->n = 0;
    for (size_t i = 0; i < ps.n; i++) {
        char kind = ps.start[i][0];
        if (i >= ss.n)
            return -1;
        if (kind == ':' || kind == '*') {
            size_t vlen = kind == '*' ? strlen(ss.start[i]) : ss.len[i];
            if (kind == ':' && vlen == 0)
                return -1;
            /* The router copies values into its 1024-byte buffer: longer ones match nothing. */
            used += vlen + 1;
            if (used > sizeof((http_match *)0)->buf || out->n == HTTP_MAX_PARAMS)
                return -1;
            out->name[out->n] = ps.start[i] + 1;
            out->name_len[out->n] = ps.len[i] - 1;
            out->value[out->n] = ss.start[i];
            out->value_len[out->n] = vlen;
            out->n++;
            if (kind == '*')
                return literals;
        } else {
            if (ps.len[i] != ss.len[i] || memcmp(ps.start[i], ss.start[i], ps.len[i]) != 0)
                return -1;
            literals++;
        }
    }
    return ps.n == ss.n ? literals : -1;
}

/* Whether the comma-separated allow list holds method as an item. */
static bool allow_has(const char *allow, const char *method)
{
    size_t mlen = strlen(method);
    for (const char *p = allow; *p;) {
        size_t len = strcspn(p, ",");
        if (len == mlen && !memcmp(p, method, mlen))
            return true;
        p += len;
        while (*p == ',' || *p == ' ')
            p++;
    }
    return false;
}

/* The route's parameters are the reference's, and put back into the pattern give the path. */
static void check_params(const http_match *m, const ref_params *ref, const char *path)
{
    FUZZ_CHECK(m->nparams == ref->n);
    char rebuilt[8192];
    size_t out = 0;
    const char *pattern = m->route->pattern;
    int k = 0;
    for (const char *p = pattern; *p;) {
        if ((p[0] == ':' || p[0] == '*') && p > pattern && p[-1] == '/') {
            FUZZ_CHECK(k < m->nparams);
            const char *value = m->values[k];
            size_t vlen = strlen(value);
            FUZZ_CHECK(value >= m->buf && value + vlen < m->buf + sizeof m->buf);
            FUZZ_CHECK(m->names[k] == p + 1 && m->names[k] == ref->name[k]);
            FUZZ_CHECK(vlen == ref->value_len[k] && !memcmp(value, ref->value[k], vlen));
            FUZZ_CHECK(p[0] == '*' || (vlen > 0 && !strchr(value, '/')));
            char name[64];
            FUZZ_CHECK(ref->name_len[k] < sizeof name);
            memcpy(name, ref->name[k], ref->name_len[k]);
            name[ref->name_len[k]] = '\0';
            FUZZ_CHECK(http_match_param(m, name) == value);
            FUZZ_CHECK(out + vlen < sizeof rebuilt);
            memcpy(rebuilt + out, value, vlen);
            out += vlen;
            p += 1 + ref->name_len[k];
            k++;
        } else {
            FUZZ_CHECK(out + 1 < sizeof rebuilt);
            rebuilt[out++] = *p++;
        }
    }
    rebuilt[out] = '\0';
    FUZZ_CHECK(k == m->nparams && !strcmp(rebuilt, path));
}

/* The seed's parsers of what the router extracted: an upload id is a UUID (then given
 * lowercased), a part number is 1 to 9 digits (then their value). */
static void check_seed_params(const http_match *m)
{
    const char *id = http_match_param(m, "id"), *n = http_match_param(m, "n");
    cu_error err = {0};
    if (id) {
        char out[CU_UUID_LEN + 1];
        bool uuid = strlen(id) == CU_UUID_LEN;
        for (size_t i = 0; uuid && i < CU_UUID_LEN; i++) {
            bool dash = i == 8 || i == 13 || i == 18 || i == 23;
            uuid = dash ? id[i] == '-' : id[i] && strchr("0123456789abcdefABCDEF", id[i]);
        }
        int rc = seed_path_upload_id(id, out, &err);
        FUZZ_CHECK((rc == 0) == uuid);
        for (size_t i = 0; rc == 0 && i <= CU_UUID_LEN; i++)
            FUZZ_CHECK(out[i] == (id[i] >= 'A' && id[i] <= 'F' ? id[i] | 0x20 : id[i]));
        FUZZ_CHECK(rc == 0 || (rc == CU_ENOTFOUND && !strcmp(err.msg, "Upload not found")));
    }
    if (n) {
        size_t len = strlen(n);
        bool digits = len >= 1 && len <= 9 && strspn(n, "0123456789") == len;
        int64_t value = -1, want = 0;
        int rc = seed_path_part_number(n, &value, &err);
        FUZZ_CHECK((rc == 0) == digits);
        for (size_t i = 0; rc == 0 && i < len; i++)
            want = want * 10 + (n[i] - '0');
        FUZZ_CHECK(rc == 0 ? value == want
                           : rc == CU_EINVAL && err.msg[0] != '\0' && fuzz_utf8_ok(err.msg));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!router)
        setup();
    char *method = fuzz_take_until(&data, &size, '\n');
    char *path = fuzz_strndup(data, size);
    static http_match m;
    http_router_match(router, method, path, &m);

    bool head = !strcmp(method, "HEAD"), options = !strcmp(method, "OPTIONS");
    int lits[MAX_ROUTES], best = -1;
    ref_params params[MAX_ROUTES];
    size_t winner = 0;
    bool any = false, get_allowed = false;
    for (size_t i = 0; i < nroutes; i++) {
        lits[i] = ref_match(routes[i]->pattern, path, &params[i]);
        if (lits[i] < 0)
            continue;
        any = true;
        FUZZ_CHECK(allow_has(m.allow, routes[i]->method));
        get_allowed |= !strcmp(routes[i]->method, "GET");
        bool method_ok =
            !strcmp(routes[i]->method, method) || (head && !strcmp(routes[i]->method, "GET"));
        if (method_ok && lits[i] > best) {
            best = lits[i];
            winner = i;
        }
    }
    /* Allow: exactly the matching routes' methods, HEAD with GET, OPTIONS with any; each
     * once. */
    if (any)
        FUZZ_CHECK(allow_has(m.allow, "OPTIONS") && (!get_allowed || allow_has(m.allow, "HEAD")));
    for (const char *p = m.allow; *p;) {
        char item[32];
        size_t len = strcspn(p, ",");
        FUZZ_CHECK(len > 0 && len < sizeof item);
        memcpy(item, p, len);
        item[len] = '\0';
        bool expected = !strcmp(item, "OPTIONS") || (get_allowed && !strcmp(item, "HEAD"));
        for (size_t i = 0; !expected && i < nroutes; i++)
            expected = lits[i] >= 0 && !strcmp(routes[i]->method, item);
        FUZZ_CHECK(expected);
        FUZZ_CHECK(!allow_has(p + len, item)); /* once */
        p += len;
        if (*p) {
            FUZZ_CHECK(p[0] == ',' && p[1] == ' ');
            p += 2;
        }
    }
    FUZZ_CHECK(any == (m.allow[0] != '\0'));
    if (options) {
        FUZZ_CHECK(!m.route && m.nparams == 0 && m.status == (any ? 0 : 404));
    } else if (best >= 0) {
        FUZZ_CHECK(m.route == routes[winner] && m.status == 0);
        check_params(&m, &params[winner], path);
        check_seed_params(&m);
    } else {
        FUZZ_CHECK(!m.route && m.status == (any ? 405 : 404));
    }
    free(path);
    free(method);
    return 0;
}
