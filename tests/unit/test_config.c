/* test_config.c - config_load / config_parse_dotenv with a table instead of the environment. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/config.h"
#include "base/log.h"
#include "unit_helpers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SECRET16 "0123456789abcdef"

static char err[512];

static int load(cu_config *cfg, const var *env, const char *dotenv)
{
    memset(err, 0, sizeof err);
    return config_load(cfg, table_lookup, (void *)env, dotenv, err, sizeof err);
}

/* Loads the required variables plus name=value. */
static int load_with(cu_config *cfg, const char *name, const char *value)
{
    const var env[] = {{"API_KEY", "key"}, {"JWT_SECRET", SECRET16}, {name, value}, {NULL, NULL}};
    return load(cfg, env, NULL);
}

/* name=value must be refused with a message naming the variable. */
static void assert_refused(const char *name, const char *value)
{
    cu_config cfg;
    int rc = load_with(&cfg, name, value);
    if (rc != -1 || !strstr(err, name))
        print_error("%s=\"%s\": rc %d, err \"%s\"\n", name, value, rc, err);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(err, name));
    config_free(&cfg);
}

static void test_requires_api_key(void **state)
{
    (void)state;
    cu_config cfg;
    const var env[] = {{"JWT_SECRET", SECRET16}, {NULL, NULL}};
    assert_int_equal(load(&cfg, env, NULL), -1);
    assert_non_null(strstr(err, "API_KEY"));
    config_free(&cfg);

    /* An empty value counts as unset. */
    const var empty[] = {{"API_KEY", ""}, {"JWT_SECRET", SECRET16}, {NULL, NULL}};
    assert_int_equal(load(&cfg, empty, NULL), -1);
    assert_non_null(strstr(err, "API_KEY"));
    config_free(&cfg);
}

static void test_requires_jwt_secret(void **state)
{
    (void)state;
    cu_config cfg;
    const var env[] = {{"API_KEY", "key"}, {NULL, NULL}};
    assert_int_equal(load(&cfg, env, NULL), -1);
    assert_non_null(strstr(err, "JWT_SECRET"));
    assert_null(strstr(err, "API_KEY"));
    config_free(&cfg);
}

static void test_jwt_secret_min_length(void **state)
{
    (void)state;
    assert_refused("JWT_SECRET", "0123456789abcde"); /* 15 */

    cu_config cfg;
    const var env[] = {{"API_KEY", "key"}, {"JWT_SECRET", SECRET16}, {NULL, NULL}};
    assert_int_equal(load(&cfg, env, NULL), 0);
    assert_string_equal(cfg.jwt_secret, SECRET16);
    assert_string_equal(cfg.api_key, "key");
    config_free(&cfg);
    assert_null(cfg.api_key); /* config_free leaves no dangling pointers */
}

static void test_defaults(void **state)
{
    (void)state;
    cu_config cfg;
    const var env[] = {{"API_KEY", "key"}, {"JWT_SECRET", SECRET16}, {NULL, NULL}};
    assert_int_equal(load(&cfg, env, NULL), 0);
    assert_int_equal(cfg.server_port, 3000);
    assert_int_equal(cfg.chunk_size, 52428800);
    assert_true(cfg.upload_ttl_seconds == 86400.0);
    assert_string_equal(cfg.local_storage_path, "./uploads");
    assert_string_equal(cfg.database_path, "./uploads.db");
    assert_string_equal(cfg.server_host, "0.0.0.0");
    assert_true(cfg.durability_fsync);
    assert_int_equal(cfg.max_parts, 10000);
    assert_int_equal(cfg.storage_backend, STORAGE_LOCAL);
    assert_int_equal(cfg.max_file_size, 0); /* unlimited */
    assert_int_equal(cfg.log_level, LOG_INFO);
    assert_int_equal(cfg.webhook_max_attempts, 10);
    assert_true(cfg.webhook_retry_base_seconds == 2.0);
    assert_true(cfg.cleanup_interval_seconds == 300.0);
    assert_int_equal(cfg.max_connections, 1024);
    assert_int_equal(cfg.max_connections_per_ip, 128);
    assert_true(cfg.header_timeout_seconds == 20.0);
    assert_true(cfg.keepalive_timeout_seconds == 60.0);
    assert_int_equal(cfg.body_min_rate, 1024);
    assert_true(cfg.body_rate_window_seconds == 30.0);
    assert_null(cfg.webhook_secret);
    assert_null(cfg.webhook_allowed_hosts);
    assert_null(cfg.webhook_allowlist); /* nothing but public addresses */
    assert_int_equal(cfg.webhook_concurrency, 8);
    assert_int_equal(cfg.webhook_per_host, 2);
    assert_true(cfg.webhook_connect_timeout_seconds == 5.0);
    assert_true(cfg.webhook_timeout_seconds == 10.0);
    assert_null(cfg.s3_endpoint);
    assert_string_equal(cfg.s3_bucket, "uploads");
    assert_string_equal(cfg.s3_region, "us-east-1");
    assert_string_equal(cfg.smb_host, "localhost");
    assert_int_equal(cfg.smb_port, 445);
    assert_string_equal(cfg.smb_share, "share");
    assert_string_equal(cfg.warnings, "");
    config_free(&cfg);
}

static void test_chunk_size(void **state)
{
    (void)state;
    const char *bad[] = {"abc", "0", "-1", "1.5", "4097", " 5", "5 ", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_refused("CHUNK_SIZE_MB", bad[i]);

    cu_config cfg;
    assert_int_equal(load_with(&cfg, "CHUNK_SIZE_MB", ""), 0); /* empty: unset */
    assert_int_equal(cfg.chunk_size, 52428800);
    config_free(&cfg);
    assert_int_equal(load_with(&cfg, "CHUNK_SIZE_MB", "1"), 0);
    assert_int_equal(cfg.chunk_size, 1048576);
    config_free(&cfg);
    assert_int_equal(load_with(&cfg, "CHUNK_SIZE_MB", "4096"), 0);
    assert_int_equal(cfg.chunk_size, (int64_t)4096 * 1024 * 1024);
    config_free(&cfg);
}

static void test_chunk_size_cloudflare_warning(void **state)
{
    (void)state;
    cu_config cfg;
    assert_int_equal(load_with(&cfg, "CHUNK_SIZE_MB", "96"), 0);
    assert_int_equal(cfg.chunk_size, 96 * 1048576);
    assert_non_null(strstr(cfg.warnings, "Cloudflare"));
    config_free(&cfg);

    assert_int_equal(load_with(&cfg, "CHUNK_SIZE_MB", "95"), 0);
    assert_int_equal(cfg.chunk_size, 95 * 1048576);
    assert_string_equal(cfg.warnings, "");
    config_free(&cfg);
}

static void test_server_port(void **state)
{
    (void)state;
    assert_refused("SERVER_PORT", "x");
    assert_refused("SERVER_PORT", "70000");
    assert_refused("SERVER_PORT", "-1");
    assert_refused("SERVER_PORT", "80a");

    cu_config cfg;
    assert_int_equal(load_with(&cfg, "SERVER_PORT", "8080"), 0);
    assert_int_equal(cfg.server_port, 8080);
    config_free(&cfg);
    assert_int_equal(load_with(&cfg, "SERVER_PORT", "65535"), 0);
    assert_int_equal(cfg.server_port, 65535);
    config_free(&cfg);
}

static void test_upload_ttl(void **state)
{
    (void)state;
    cu_config cfg;
    assert_int_equal(load_with(&cfg, "UPLOAD_TTL_HOURS", "0.5"), 0);
    assert_true(cfg.upload_ttl_seconds == 1800.0);
    config_free(&cfg);
    assert_int_equal(load_with(&cfg, "UPLOAD_TTL_HOURS", "48"), 0);
    assert_true(cfg.upload_ttl_seconds == 48 * 3600.0);
    config_free(&cfg);

    assert_refused("UPLOAD_TTL_HOURS", "0");
    assert_refused("UPLOAD_TTL_HOURS", "-1");
    assert_refused("UPLOAD_TTL_HOURS", "abc");
    assert_refused("UPLOAD_TTL_HOURS", "nan");
    assert_refused("UPLOAD_TTL_HOURS", "inf");
}

static void test_durability(void **state)
{
    (void)state;
    cu_config cfg;
    assert_int_equal(load_with(&cfg, "DURABILITY", "none"), 0);
    assert_false(cfg.durability_fsync);
    config_free(&cfg);
    assert_int_equal(load_with(&cfg, "DURABILITY", "fsync"), 0);
    assert_true(cfg.durability_fsync);
    config_free(&cfg);
    assert_refused("DURABILITY", "bogus");
}

static void test_storage_backend(void **state)
{
    (void)state;
    static const struct {
        const char *value;
        storage_kind kind;
    } ok[] = {{"s3", STORAGE_S3}, {"smb", STORAGE_SMB}, {"local", STORAGE_LOCAL}};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        cu_config cfg;
        const var env[] = {{"API_KEY", "key"},
                           {"JWT_SECRET", SECRET16},
                           {"AWS_ACCESS_KEY_ID", "AKID"},
                           {"AWS_SECRET_ACCESS_KEY", "secret"},
                           {"STORAGE_BACKEND", ok[i].value},
                           {NULL, NULL}};
        assert_int_equal(load(&cfg, env, NULL), 0);
        assert_int_equal(cfg.storage_backend, ok[i].kind);
        assert_string_equal(config_storage_name(cfg.storage_backend), ok[i].value);
        config_free(&cfg);
    }
    assert_refused("STORAGE_BACKEND", "ftp");
}

/* S3's own limits are checked at start: 5 MiB parts at least, 10,000 parts at most, and
 * credentials are required. */
static void test_s3_limits(void **state)
{
    (void)state;
    cu_config cfg;
    var env[] = {{"API_KEY", "key"},
                 {"JWT_SECRET", SECRET16},
                 {"STORAGE_BACKEND", "s3"},
                 {"AWS_ACCESS_KEY_ID", "AKID"},
                 {"AWS_SECRET_ACCESS_KEY", "secret"},
                 {"CHUNK_SIZE_MB", "4"},
                 {"MAX_PARTS", "20000"},
                 {NULL, NULL}};
    assert_int_equal(load(&cfg, env, NULL), -1);
    assert_non_null(strstr(err, "CHUNK_SIZE_MB"));
    assert_non_null(strstr(err, "5 MiB"));
    config_free(&cfg);

    env[5].value = "5";
    assert_int_equal(load(&cfg, env, NULL), 0);
    assert_int_equal(cfg.max_parts, 10000);
    config_free(&cfg);

    env[3].value = ""; /* no access key id */
    assert_int_equal(load(&cfg, env, NULL), -1);
    assert_non_null(strstr(err, "AWS_ACCESS_KEY_ID"));
    config_free(&cfg);

    env[3].value = "AKID";
    env[4].value = "";
    assert_int_equal(load(&cfg, env, NULL), -1);
    assert_non_null(strstr(err, "AWS_SECRET_ACCESS_KEY"));
    config_free(&cfg);

    /* Local storage keeps small chunks and its own part limit. */
    env[2].value = "local";
    env[5].value = "1";
    assert_int_equal(load(&cfg, env, NULL), 0);
    assert_int_equal(cfg.max_parts, 20000);
    config_free(&cfg);
}

static void test_log_level(void **state)
{
    (void)state;
    static const struct {
        const char *value;
        int level;
    } ok[] = {{"debug", LOG_DEBUG}, {"info", LOG_INFO}, {"warn", LOG_WARN}, {"error", LOG_ERROR}};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        cu_config cfg;
        assert_int_equal(load_with(&cfg, "LOG_LEVEL", ok[i].value), 0);
        assert_int_equal(cfg.log_level, ok[i].level);
        config_free(&cfg);
    }
    assert_refused("LOG_LEVEL", "loud");
}

static void test_max_file_size(void **state)
{
    (void)state;
    cu_config cfg;
    assert_int_equal(load_with(&cfg, "MAX_FILE_SIZE", "1048576"), 0);
    assert_int_equal(cfg.max_file_size, 1048576);
    config_free(&cfg);
    assert_int_equal(load_with(&cfg, "MAX_FILE_SIZE", "10995116277760"), 0); /* 10 TiB */
    assert_int_equal(cfg.max_file_size, 10995116277760LL);
    config_free(&cfg);
    assert_refused("MAX_FILE_SIZE", "-5");
    assert_refused("MAX_FILE_SIZE", "10GB");
    assert_refused("MAX_PARTS", "0");
    assert_refused("MAX_CONNECTIONS_PER_IP", "-1");
    assert_refused("HEADER_TIMEOUT_SECONDS", "0");
    assert_refused("BODY_MIN_RATE", "fast");
    assert_int_equal(load_with(&cfg, "MAX_CONNECTIONS_PER_IP", "0"), 0); /* 0: no limit */
    assert_int_equal(cfg.max_connections_per_ip, 0);
    config_free(&cfg);
}

static void test_tus_base_path(void **state)
{
    (void)state;
    cu_config cfg;
    assert_int_equal(load_with(&cfg, "LOG_LEVEL", "info"), 0);
    assert_string_equal(cfg.tus_base_path, "/files/");
    config_free(&cfg);
    assert_int_equal(load_with(&cfg, "TUS_BASE_PATH", "/api/tus-1.0/up_~/"), 0);
    assert_string_equal(cfg.tus_base_path, "/api/tus-1.0/up_~/");
    config_free(&cfg);
    const char *bad[] = {"/",    "files/", "/files", "/a//b/", "/a b/",     "/:id/",
                         "/*r/", "/%2e/",  "/../",   "/a/./",  "/\xc3\xa9/"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_refused("TUS_BASE_PATH", bad[i]);
}

static void test_dotenv(void **state)
{
    (void)state;
    const char *dotenv = "# chunked-uploader settings\n"
                         "API_KEY=from-dotenv\n"
                         "\n"
                         "   \n"
                         "export JWT_SECRET=abcdefghijklmnopqrstuvwxyz\n"
                         "SERVER_HOST='127.0.0.1'\n"
                         "DATABASE_PATH=\"/var/lib/my db.sqlite\"\n"
                         "LOCAL_STORAGE_PATH=/srv/uploads # where files go\n"
                         "S3_PREFIX=a#b\n"
                         "SMB_SHARE=\"my #share\"\n"
                         "# CHUNK_SIZE_MB=7\n"
                         "SERVER_PORT=1111\n"
                         "SERVER_PORT=2222\n"
                         "  S3_BUCKET = spaced  \n"
                         "MAX_PARTS=77\r\n"
                         "a line without an equals sign\n"
                         "SMB_USER=last-line-without-newline";
    cu_config cfg;
    const var env[] = {{NULL, NULL}};
    int rc = load(&cfg, env, dotenv);
    if (rc)
        print_error("config_load: %s\n", err);
    assert_int_equal(rc, 0);
    assert_string_equal(cfg.api_key, "from-dotenv");
    assert_string_equal(cfg.jwt_secret, "abcdefghijklmnopqrstuvwxyz");
    assert_string_equal(cfg.server_host, "127.0.0.1");
    assert_string_equal(cfg.database_path, "/var/lib/my db.sqlite");
    assert_string_equal(cfg.local_storage_path, "/srv/uploads");
    assert_string_equal(cfg.s3_prefix, "a#b");
    assert_string_equal(cfg.smb_share, "my #share");
    assert_int_equal(cfg.chunk_size, 52428800); /* the commented-out line is ignored */
    assert_int_equal(cfg.server_port, 2222);    /* a later line wins */
    assert_string_equal(cfg.s3_bucket, "spaced");
    assert_int_equal(cfg.max_parts, 77);
    assert_string_equal(cfg.smb_user, "last-line-without-newline");
    config_free(&cfg);
}

static void test_environment_wins_over_dotenv(void **state)
{
    (void)state;
    const char *dotenv = "API_KEY=from-dotenv\n"
                         "JWT_SECRET=dotenv-secret-0123456789\n"
                         "SERVER_PORT=2222\n"
                         "CHUNK_SIZE_MB=abc\n";
    const var env[] = {
        {"API_KEY", "from-env"}, {"SERVER_PORT", "4444"}, {"CHUNK_SIZE_MB", "8"}, {NULL, NULL}};
    cu_config cfg;
    int rc = load(&cfg, env, dotenv);
    if (rc)
        print_error("config_load: %s\n", err);
    assert_int_equal(rc, 0);
    assert_string_equal(cfg.api_key, "from-env");
    assert_string_equal(cfg.jwt_secret, "dotenv-secret-0123456789"); /* only in .env */
    assert_int_equal(cfg.server_port, 4444);
    assert_int_equal(cfg.chunk_size, 8 * 1048576); /* the bad .env value is never read */
    config_free(&cfg);

    /* A bad value in .env is reported like one in the environment. */
    const var required[] = {{"API_KEY", "k"}, {"JWT_SECRET", SECRET16}, {NULL, NULL}};
    assert_int_equal(load(&cfg, required, "SERVER_PORT=70000\n"), -1);
    assert_non_null(strstr(err, "SERVER_PORT"));
    config_free(&cfg);
}

typedef struct {
    char names[8][32];
    char values[8][64];
    int n;
} collected;

static void collect(void *ctx, const char *name, const char *value)
{
    collected *c = ctx;
    if (c->n < 8) {
        snprintf(c->names[c->n], sizeof c->names[c->n], "%s", name);
        snprintf(c->values[c->n], sizeof c->values[c->n], "%s", value);
    }
    c->n++;
}

static void test_parse_dotenv_pairs(void **state)
{
    (void)state;
    collected c = {0};
    config_parse_dotenv("export X=1\n#Y=2\nZ='q \"x\"'\nEMPTY=\n=novalue\nW=\"\"\n", collect, &c);
    assert_int_equal(c.n, 4);
    assert_string_equal(c.names[0], "X");
    assert_string_equal(c.values[0], "1");
    assert_string_equal(c.names[1], "Z");
    assert_string_equal(c.values[1], "q \"x\"");
    assert_string_equal(c.names[2], "EMPTY");
    assert_string_equal(c.values[2], "");
    assert_string_equal(c.names[3], "W");
    assert_string_equal(c.values[3], "");

    /* A quoted value may be followed by a comment; `export` may be followed by a tab. */
    collected q = {0};
    config_parse_dotenv("A=\"x y\" # note\nexport\tB=2\nC='v' \n", collect, &q);
    assert_int_equal(q.n, 3);
    assert_string_equal(q.names[0], "A");
    assert_string_equal(q.values[0], "x y");
    assert_string_equal(q.names[1], "B");
    assert_string_equal(q.values[1], "2");
    assert_string_equal(q.values[2], "v");

    /* A long line (a list of allowed hosts, a certificate) is read like any other. */
    size_t long_len = 10000;
    char *text = malloc(long_len + 32);
    assert_non_null(text);
    memcpy(text, "LONG=", 5);
    memset(text + 5, 'x', long_len);
    strcpy(text + 5 + long_len, "\nAFTER=1\n");
    collected l = {0};
    config_parse_dotenv(text, collect, &l);
    free(text);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.names[0], "LONG");
    assert_int_equal(strlen(l.values[0]), sizeof l.values[0] - 1); /* (collect truncates) */
    assert_string_equal(l.names[1], "AFTER");

    collected none = {0};
    config_parse_dotenv("", collect, &none);
    config_parse_dotenv(NULL, collect, &none);
    assert_int_equal(none.n, 0);
}

static void test_allowed_kinds(void **state)
{
    (void)state;
    cu_config cfg;
    assert_int_equal(load_with(&cfg, "ALLOWED_TYPES", "image/*, video/mp4"), 0);
    assert_non_null(cfg.allowed_type_list);
    assert_string_equal(cfg.allowed_types, "image/*, video/mp4");
    assert_true(filetype_patterns_match(cfg.allowed_type_list, "video/mp4"));
    assert_null(cfg.allowed_extension_list);
    config_free(&cfg);
    assert_null(cfg.allowed_type_list);
    assert_int_equal(load_with(&cfg, "ALLOWED_EXTENSIONS", ".JPG,png"), 0);
    assert_true(filetype_extensions_match(cfg.allowed_extension_list, "a.jpg", 5));
    assert_null(cfg.allowed_type_list); /* unset: any type, nothing sniffed */
    config_free(&cfg);
    assert_refused("ALLOWED_TYPES", "image");
    assert_non_null(strstr(err, "\"image\""));
    assert_refused("ALLOWED_TYPES", "image/*,");
    assert_refused("ALLOWED_EXTENSIONS", "jpg, ../x");
    assert_non_null(strstr(err, "ALLOWED_EXTENSIONS"));
}

static void test_webhook_allowed_hosts(void **state)
{
    (void)state;
    cu_config cfg;
    assert_int_equal(load_with(&cfg, "WEBHOOK_ALLOWED_HOSTS", "hooks.internal, 10.0.0.0/8"), 0);
    assert_non_null(cfg.webhook_allowlist);
    assert_true(netaddr_allowlist_has_name(cfg.webhook_allowlist, "hooks.internal"));
    netaddr a;
    assert_int_equal(netaddr_parse("10.2.3.4", &a), 0);
    assert_true(netaddr_allowlist_has_addr(cfg.webhook_allowlist, &a));
    config_free(&cfg);
    assert_null(cfg.webhook_allowlist);
    /* A bad entry stops the server at start, named. */
    assert_refused("WEBHOOK_ALLOWED_HOSTS", "10.0.0.0/40");
    assert_refused("WEBHOOK_ALLOWED_HOSTS", "ok.example, *.example.com");
    assert_non_null(strstr(err, "*.example.com"));
    assert_refused("WEBHOOK_CONCURRENCY", "0");
    assert_refused("WEBHOOK_PER_HOST", "0");
    assert_refused("WEBHOOK_TIMEOUT_SECONDS", "0");
    assert_refused("WEBHOOK_CONNECT_TIMEOUT_SECONDS", "-1");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_requires_api_key),
        cmocka_unit_test(test_requires_jwt_secret),
        cmocka_unit_test(test_jwt_secret_min_length),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_chunk_size),
        cmocka_unit_test(test_chunk_size_cloudflare_warning),
        cmocka_unit_test(test_server_port),
        cmocka_unit_test(test_upload_ttl),
        cmocka_unit_test(test_durability),
        cmocka_unit_test(test_storage_backend),
        cmocka_unit_test(test_s3_limits),
        cmocka_unit_test(test_log_level),
        cmocka_unit_test(test_max_file_size),
        cmocka_unit_test(test_webhook_allowed_hosts),
        cmocka_unit_test(test_allowed_kinds),
        cmocka_unit_test(test_tus_base_path),
        cmocka_unit_test(test_dotenv),
        cmocka_unit_test(test_environment_wins_over_dotenv),
        cmocka_unit_test(test_parse_dotenv_pairs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
