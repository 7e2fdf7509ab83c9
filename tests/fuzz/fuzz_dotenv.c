/* fuzz_dotenv.c - the .env parser (config_parse_dotenv) and config_load over what it reads.
 *
 * The input is the text of a .env file (a NUL ends it, as it ends the text read from disk).
 * Invariants of the parser: every pair it reports has a non-empty name without '=', without
 * surrounding white space and not a comment, and a name and a value that both stand in the
 * text as they are (the parser only cuts, never invents bytes), at most one pair a line.
 * Invariants of config_load with an empty environment: it returns 0 or -1 with one line of
 * message (main prints it as is); on success every variable the text set is the one loaded
 * (the last line for a name wins) and the values are within their documented bounds. */
#include "fuzz_common.h"

#include "base/config.h"

#include <ctype.h>

typedef struct {
    const char *text;
    size_t lines;
    size_t calls;
    size_t npairs;
    char **names;
    char **values;
} pairs;

static void on_pair(void *ctx, const char *name, const char *value)
{
    pairs *p = ctx;
    size_t nlen = strlen(name);
    FUZZ_CHECK(nlen > 0 && name[0] != '#' && !strchr(name, '='));
    FUZZ_CHECK(!isspace((unsigned char)name[0]) && !isspace((unsigned char)name[nlen - 1]));
    FUZZ_CHECK(!strchr(name, '\n') && !strchr(value, '\n'));
    FUZZ_CHECK(strstr(p->text, name) != NULL && strstr(p->text, value) != NULL);
    FUZZ_CHECK(++p->calls <= p->lines);
    /* Keep the last value of each name, as config_load does. */
    for (size_t i = 0; i < p->npairs; i++) {
        if (!strcmp(p->names[i], name)) {
            free(p->values[i]);
            p->values[i] = fuzz_strndup((const uint8_t *)value, strlen(value));
            return;
        }
    }
    p->names = realloc(p->names, (p->npairs + 1) * sizeof *p->names);
    p->values = realloc(p->values, (p->npairs + 1) * sizeof *p->values);
    FUZZ_CHECK(p->names && p->values);
    p->names[p->npairs] = fuzz_strndup((const uint8_t *)name, nlen);
    p->values[p->npairs] = fuzz_strndup((const uint8_t *)value, strlen(value));
    p->npairs++;
}

/* The value the text gave name, or NULL; an empty value counts as unset. */
static const char *pair_value(const pairs *p, const char *name)
{
    for (size_t i = 0; i < p->npairs; i++)
        if (!strcmp(p->names[i], name))
            return p->values[i][0] ? p->values[i] : NULL;
    return NULL;
}

static const char *no_environment(void *ctx, const char *name)
{
    (void)ctx, (void)name;
    return NULL;
}

static void check_loaded(const pairs *p, const cu_config *cfg)
{
    /* Strings set in the text come through unchanged. */
    const char *api_key = pair_value(p, "API_KEY"), *secret = pair_value(p, "JWT_SECRET");
    FUZZ_CHECK(api_key && cfg->api_key && !strcmp(api_key, cfg->api_key));
    FUZZ_CHECK(secret && cfg->jwt_secret && !strcmp(secret, cfg->jwt_secret));
    FUZZ_CHECK(strlen(cfg->jwt_secret) >= 16);
    const char *host = pair_value(p, "SERVER_HOST");
    FUZZ_CHECK(cfg->server_host && (!host || !strcmp(host, cfg->server_host)));
    /* Numbers within the table's bounds. */
    FUZZ_CHECK(cfg->chunk_size >= 1 << 20 && cfg->chunk_size <= (int64_t)4096 << 20 &&
               cfg->chunk_size % (1 << 20) == 0);
    FUZZ_CHECK(cfg->server_port >= 0 && cfg->server_port <= 65535);
    FUZZ_CHECK(cfg->smb_port >= 1 && cfg->smb_port <= 65535);
    FUZZ_CHECK(cfg->max_parts >= 1 && cfg->max_parts <= 1000000);
    FUZZ_CHECK(cfg->max_file_size >= 0);
    FUZZ_CHECK(cfg->upload_ttl_seconds > 0 && cfg->cleanup_interval_seconds > 0);
    FUZZ_CHECK(cfg->max_connections >= 1 && cfg->max_connections_per_ip >= 0);
    FUZZ_CHECK(cfg->storage_backend == STORAGE_LOCAL || cfg->storage_backend == STORAGE_SMB ||
               cfg->storage_backend == STORAGE_S3);
    if (cfg->storage_backend == STORAGE_S3)
        FUZZ_CHECK(cfg->chunk_size >= 5 << 20 && cfg->max_parts <= 10000 &&
                   cfg->aws_access_key_id && cfg->aws_secret_access_key);
    FUZZ_CHECK(cfg->temp_storage_path != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_strndup(data, size);
    pairs p = {.text = text, .lines = 1};
    for (const char *c = text; *c; c++)
        p.lines += *c == '\n';
    config_parse_dotenv(text, on_pair, &p);

    cu_config cfg;
    char msg[512] = "";
    int rc = config_load(&cfg, no_environment, NULL, text, msg, sizeof msg);
    if (rc == 0) {
        check_loaded(&p, &cfg);
    } else {
        FUZZ_CHECK(rc == -1);
        FUZZ_CHECK(msg[0] != '\0' && !strchr(msg, '\n'));
    }
    config_free(&cfg);
    for (size_t i = 0; i < p.npairs; i++) {
        free(p.names[i]);
        free(p.values[i]);
    }
    free(p.names);
    free(p.values);
    free(text);
    return 0;
}
