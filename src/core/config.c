/* config.c - reading and validating configuration. */
#include "core/config.h"

#include "core/log.h"
#include "core/util.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The variables found in .env, kept only while config_load runs. */
typedef struct {
    char **names;
    char **values;
    size_t count;
} dotenv_vars;

typedef struct {
    config_lookup_fn lookup;
    void *lookup_ctx;
    dotenv_vars dotenv;
    char *err;
    size_t err_len;
} loader;

static void dotenv_add(void *ctx, const char *name, const char *value)
{
    dotenv_vars *vars = ctx;
    for (size_t i = 0; i < vars->count; i++) {
        if (!strcmp(vars->names[i], name)) { /* a later line wins, as with `source .env` */
            free(vars->values[i]);
            vars->values[i] = strdup(value);
            return;
        }
    }
    vars->names = realloc(vars->names, (vars->count + 1) * sizeof *vars->names);
    vars->values = realloc(vars->values, (vars->count + 1) * sizeof *vars->values);
    vars->names[vars->count] = strdup(name);
    vars->values[vars->count] = strdup(value);
    vars->count++;
}

void config_parse_dotenv(const char *text,
                         void (*fn)(void *ctx, const char *name, const char *value), void *ctx)
{
    const char *line = text;
    while (line && *line) {
        const char *eol = strchr(line, '\n');
        size_t len = eol ? (size_t)(eol - line) : strlen(line);
        char buf[4096];
        if (len < sizeof buf) {
            memcpy(buf, line, len);
            buf[len] = '\0';
            char *s = buf;
            while (isspace((unsigned char)*s))
                s++;
            if (!strncmp(s, "export", 6) && (s[6] == ' ' || s[6] == '\t')) {
                s += 6;
                while (isspace((unsigned char)*s))
                    s++;
            }
            char *eq = strchr(s, '=');
            if (*s && *s != '#' && eq) {
                *eq = '\0';
                char *name = s, *value = eq + 1;
                char *end = eq;
                while (end > name && isspace((unsigned char)end[-1]))
                    *--end = '\0';
                while (isspace((unsigned char)*value))
                    value++;
                size_t vlen = strlen(value);
                while (vlen && isspace((unsigned char)value[vlen - 1]))
                    value[--vlen] = '\0';
                char *closing = (vlen >= 2 && (value[0] == '"' || value[0] == '\''))
                                    ? strchr(value + 1, value[0])
                                    : NULL;
                if (closing) {
                    /* "quoted value", optionally followed by a comment */
                    *closing = '\0';
                    value++;
                } else {
                    /* An unquoted value may end in a comment: `PORT=3000 # dev`. */
                    char *hash = strstr(value, " #");
                    if (hash) {
                        *hash = '\0';
                        vlen = strlen(value);
                        while (vlen && isspace((unsigned char)value[vlen - 1]))
                            value[--vlen] = '\0';
                    }
                }
                if (*name)
                    fn(ctx, name, value);
            }
        }
        line = eol ? eol + 1 : NULL;
    }
}

/* The value of name, or NULL when unset; an empty value counts as unset. */
static const char *get(loader *ld, const char *name)
{
    const char *v = ld->lookup(ld->lookup_ctx, name);
    if (!v) {
        for (size_t i = 0; i < ld->dotenv.count; i++)
            if (!strcmp(ld->dotenv.names[i], name))
                v = ld->dotenv.values[i];
    }
    return (v && *v) ? v : NULL;
}

static int fail(loader *ld, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(loader *ld, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ld->err, ld->err_len, fmt, ap);
    va_end(ap);
    return -1;
}

static char *get_str(loader *ld, const char *name, const char *def)
{
    const char *v = get(ld, name);
    if (!v)
        v = def;
    return v ? strdup(v) : NULL;
}

static int get_int(loader *ld, const char *name, int64_t def, int64_t min, int64_t max,
                   int64_t *out)
{
    const char *v = get(ld, name);
    int64_t n = def;
    if (v && (util_parse_i64(v, &n) != 0 || n < min || n > max))
        return fail(ld, "%s: must be a whole number from %lld to %lld, got \"%s\"", name,
                    (long long)min, (long long)max, v);
    *out = n;
    return 0;
}

static int get_num(loader *ld, const char *name, double def, double min, double max, double *out)
{
    const char *v = get(ld, name);
    double n = def;
    if (v && (util_parse_double(v, &n) != 0 || n <= min || n > max))
        return fail(ld, "%s: must be a number above %g and at most %g, got \"%s\"", name, min, max,
                    v);
    *out = n;
    return 0;
}

const char *config_storage_name(storage_kind kind)
{
    switch (kind) {
    case STORAGE_SMB:
        return "smb";
    case STORAGE_S3:
        return "s3";
    default:
        return "local";
    }
}

int config_load(cu_config *cfg, config_lookup_fn lookup, void *lookup_ctx, const char *dotenv_text,
                char *err, size_t err_len)
{
    memset(cfg, 0, sizeof *cfg);
    loader ld = {.lookup = lookup, .lookup_ctx = lookup_ctx, .err = err, .err_len = err_len};
    if (dotenv_text)
        config_parse_dotenv(dotenv_text, dotenv_add, &ld.dotenv);
    int rc = -1;
    int64_t n;
    const char *v;

    cfg->api_key = get_str(&ld, "API_KEY", NULL);
    cfg->jwt_secret = get_str(&ld, "JWT_SECRET", NULL);
    if (!cfg->api_key) {
        fail(&ld, "API_KEY: required (run ./init.sh to generate .env with a random key)");
        goto out;
    }
    if (!cfg->jwt_secret) {
        fail(&ld, "JWT_SECRET: required (run ./init.sh to generate .env with a random secret)");
        goto out;
    }
    if (strlen(cfg->jwt_secret) < 16) {
        fail(&ld, "JWT_SECRET: must be at least 16 characters (init.sh makes 64)");
        goto out;
    }

    v = get(&ld, "STORAGE_BACKEND");
    if (!v || !strcmp(v, "local"))
        cfg->storage_backend = STORAGE_LOCAL;
    else if (!strcmp(v, "smb"))
        cfg->storage_backend = STORAGE_SMB;
    else if (!strcmp(v, "s3"))
        cfg->storage_backend = STORAGE_S3;
    else {
        fail(&ld, "STORAGE_BACKEND: must be local, smb or s3, got \"%s\"", v);
        goto out;
    }
    cfg->local_storage_path = get_str(&ld, "LOCAL_STORAGE_PATH", "./uploads");
    {
        const char *tmp = getenv("TMPDIR");
        cfg->temp_storage_path = get_str(&ld, "TEMP_STORAGE_PATH", tmp && *tmp ? tmp : "/tmp");
    }
    cfg->smb_host = get_str(&ld, "SMB_HOST", "localhost");
    if (get_int(&ld, "SMB_PORT", 445, 1, 65535, &n))
        goto out;
    cfg->smb_port = (int)n;
    cfg->smb_user = get_str(&ld, "SMB_USER", "");
    cfg->smb_pass = get_str(&ld, "SMB_PASS", "");
    cfg->smb_share = get_str(&ld, "SMB_SHARE", "share");
    cfg->smb_path = get_str(&ld, "SMB_PATH", "");
    cfg->s3_endpoint = get_str(&ld, "S3_ENDPOINT", NULL);
    cfg->s3_bucket = get_str(&ld, "S3_BUCKET", "uploads");
    cfg->s3_region = get_str(&ld, "S3_REGION", "us-east-1");
    cfg->s3_prefix = get_str(&ld, "S3_PREFIX", "");
    cfg->aws_access_key_id = get_str(&ld, "AWS_ACCESS_KEY_ID", NULL);
    cfg->aws_secret_access_key = get_str(&ld, "AWS_SECRET_ACCESS_KEY", NULL);
    cfg->aws_session_token = get_str(&ld, "AWS_SESSION_TOKEN", NULL);

    if (get_int(&ld, "CHUNK_SIZE_MB", 50, 1, 4096, &n))
        goto out;
    cfg->chunk_size = n * 1024 * 1024;
    if (n > 95)
        snprintf(cfg->warnings, sizeof cfg->warnings,
                 "CHUNK_SIZE_MB=%lld: parts over 100 MB are rejected by Cloudflare's free plan "
                 "(its request body limit); keep it at 95 or below behind Cloudflare",
                 (long long)n);

    double hours;
    if (get_num(&ld, "UPLOAD_TTL_HOURS", 24, 0, 24 * 365 * 10, &hours))
        goto out;
    cfg->upload_ttl_seconds = hours * 3600;
    cfg->database_path = get_str(&ld, "DATABASE_PATH", "./uploads.db");
    cfg->server_host = get_str(&ld, "SERVER_HOST", "0.0.0.0");
    if (get_int(&ld, "SERVER_PORT", 3000, 0, 65535, &n))
        goto out;
    cfg->server_port = (int)n;
    if (get_int(&ld, "MAX_FILE_SIZE", 0, 0, INT64_MAX, &n))
        goto out;
    cfg->max_file_size = n;
    if (get_int(&ld, "MAX_PARTS", 10000, 1, 1000000, &n))
        goto out;
    cfg->max_parts = (int)n;

    v = get(&ld, "DURABILITY");
    if (!v || !strcmp(v, "fsync"))
        cfg->durability_fsync = true;
    else if (!strcmp(v, "none"))
        cfg->durability_fsync = false;
    else {
        fail(&ld, "DURABILITY: must be fsync or none, got \"%s\"", v);
        goto out;
    }
    cfg->webhook_secret = get_str(&ld, "WEBHOOK_SECRET", NULL);
    if (get_int(&ld, "WEBHOOK_MAX_ATTEMPTS", 10, 1, 100, &n))
        goto out;
    cfg->webhook_max_attempts = (int)n;
    if (get_num(&ld, "WEBHOOK_RETRY_BASE_SECONDS", 2, 0, 3600, &cfg->webhook_retry_base_seconds))
        goto out;
    if (get_num(&ld, "CLEANUP_INTERVAL_SECONDS", 300, 0, 86400 * 7, &cfg->cleanup_interval_seconds))
        goto out;
    if (get_int(&ld, "MAX_CONNECTIONS", 1024, 1, 65536, &n))
        goto out;
    cfg->max_connections = (int)n;
    if (cfg->storage_backend == STORAGE_S3) {
        /* S3's own limits, said up front rather than at the first part. */
        if (cfg->chunk_size < 5 * 1024 * 1024) {
            fail(&ld, "CHUNK_SIZE_MB: S3 needs parts of at least 5 MiB, got %lld MiB",
                 (long long)(cfg->chunk_size >> 20));
            goto out;
        }
        if (cfg->max_parts > 10000)
            cfg->max_parts = 10000; /* S3's limit on parts per multipart upload */
        if (!cfg->aws_access_key_id || !cfg->aws_secret_access_key) {
            fail(&ld, "%s: required with STORAGE_BACKEND=s3",
                 cfg->aws_access_key_id ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
            goto out;
        }
    }
    v = get(&ld, "LOG_LEVEL");
    cfg->log_level = v ? log_level_parse(v) : LOG_INFO;
    if (cfg->log_level < 0) {
        fail(&ld, "LOG_LEVEL: must be debug, info, warn or error, got \"%s\"", v);
        goto out;
    }
    rc = 0;
out:
    for (size_t i = 0; i < ld.dotenv.count; i++) {
        free(ld.dotenv.names[i]);
        free(ld.dotenv.values[i]);
    }
    free(ld.dotenv.names);
    free(ld.dotenv.values);
    return rc;
}

void config_free(cu_config *cfg)
{
    char **strings[] = {
        &cfg->api_key,           &cfg->jwt_secret,        &cfg->local_storage_path,
        &cfg->temp_storage_path, &cfg->smb_host,          &cfg->smb_user,
        &cfg->smb_pass,          &cfg->smb_share,         &cfg->smb_path,
        &cfg->s3_endpoint,       &cfg->s3_bucket,         &cfg->s3_region,
        &cfg->s3_prefix,         &cfg->aws_access_key_id, &cfg->aws_secret_access_key,
        &cfg->aws_session_token, &cfg->database_path,     &cfg->server_host,
        &cfg->webhook_secret};
    for (size_t i = 0; i < sizeof strings / sizeof *strings; i++) {
        free(*strings[i]);
        *strings[i] = NULL;
    }
}
