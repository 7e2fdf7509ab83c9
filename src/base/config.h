/* config.h - the server's configuration, from the environment and .env.
 *
 * One table (config.c) lists every variable: its name, type, default, bounds and help.
 * Parsing, validation, `--help` and docs/CONFIGURATION.md's table all come from it, so a
 * variable cannot be documented one way and read another. config_load validates
 * everything up front so that a bad value stops the server at start (exit status 2)
 * instead of failing a request later. Every variable of the seed's table keeps its name
 * and default. */
#ifndef CU_CONFIG_H
#define CU_CONFIG_H

#include "base/filetype.h"
#include "base/netaddr.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum { STORAGE_LOCAL, STORAGE_SMB, STORAGE_S3 } storage_kind;

typedef struct cu_config_s {
    char *api_key;
    char *jwt_secret;
    int storage_backend; /* a storage_kind */
    char *local_storage_path;
    char *temp_storage_path;
    char *smb_host;
    int smb_port;
    char *smb_user;
    char *smb_pass;
    char *smb_share;
    char *smb_path;
    int smb_workers;   /* SMB_WORKERS: writer processes, 0: none */
    char *s3_endpoint; /* NULL: AWS's own endpoint for the region */
    char *s3_bucket;
    char *s3_region;
    char *s3_prefix;
    bool s3_download_redirect; /* downloads answered 302 to a presigned URL */
    char *aws_access_key_id;
    char *aws_secret_access_key;
    char *aws_session_token;
    int64_t chunk_size; /* bytes (CHUNK_SIZE_MB MiB) */
    double upload_ttl_seconds;
    char *database_path;
    char *server_host;
    int server_port;
    int64_t max_file_size;                 /* 0: unlimited */
    char *allowed_types;                   /* ALLOWED_TYPES as configured, or NULL */
    filetype_list *allowed_type_list;      /* parsed from it by config_load; NULL: any type, nothing
                                              is sniffed */
    char *allowed_extensions;              /* ALLOWED_EXTENSIONS as configured, or NULL */
    filetype_list *allowed_extension_list; /* parsed from it; NULL: any name */
    int max_parts;
    int64_t max_single_upload; /* bytes (MAX_SINGLE_UPLOAD_MB MiB) */
    bool durability_fsync;
    char *webhook_secret; /* NULL: unsigned webhooks */
    int webhook_max_attempts;
    double webhook_retry_base_seconds;
    char *webhook_allowed_hosts;          /* as configured, or NULL */
    netaddr_allowlist *webhook_allowlist; /* parsed from it by config_load; NULL: empty */
    int webhook_concurrency;              /* deliveries in flight at once */
    int webhook_per_host;                 /* of them, to one receiver host */
    double webhook_connect_timeout_seconds;
    double webhook_timeout_seconds; /* a whole delivery attempt */
    double cleanup_interval_seconds;
    int max_open_uploads;         /* per owner; 0: no limit */
    int64_t max_reserved_bytes;   /* per owner; 0: no limit */
    double retention_seconds;     /* ended uploads' records are kept this long */
    double orphan_grace_seconds;  /* staging data no record owns is removed this old */
    double part_stall_seconds;    /* a write idle this long can be taken over */
    int64_t part_stall_min_bytes; /* ... idle: fewer bytes than this in that time */
    char *tus_base_path;          /* "/files/": starts and ends with '/' */
    int max_connections;
    int max_connections_per_ip; /* 0: no limit */
    double header_timeout_seconds;
    double keepalive_timeout_seconds;
    int64_t body_min_rate; /* bytes per second, over body_rate_window_seconds */
    double body_rate_window_seconds;
    char *trust_proxy;             /* TRUST_PROXY as configured, or NULL (parsed by http/trust.h) */
    char *cors_allowed_origins;    /* or NULL: no CORS (parsed by http/cors.h) */
    int64_t rate_limit_per_minute; /* 0: no request limit */
    int64_t rate_limit_burst;
    int64_t rate_limit_auth_failures_per_minute; /* 0: no limit on failed authentications */
    int log_level;
    /* Start-up warnings worth a line in the log (e.g. chunk size over Cloudflare's limit). */
    char warnings[512];
} cu_config;

/* Looks a variable up; returns NULL when unset. */
typedef const char *(*config_lookup_fn)(void *ctx, const char *name);

/* Fills cfg from lookup (the environment) and then dotenv_text (the contents of .env,
 * may be NULL); a variable set by lookup wins, and an empty value counts as unset. On a
 * bad value returns -1 with one line in err naming the variable. cfg must be released
 * with config_free either way. */
int config_load(cu_config *cfg, config_lookup_fn lookup, void *lookup_ctx, const char *dotenv_text,
                char *err, size_t err_len);
void config_free(cu_config *cfg);

/* Parses .env text; calls fn for each NAME=value (quotes removed). */
void config_parse_dotenv(const char *text,
                         void (*fn)(void *ctx, const char *name, const char *value), void *ctx);

const char *config_storage_name(storage_kind kind);

/* Writes every variable with its default and help, grouped, as plain text (for --help). */
void config_print_help(FILE *out);
/* Writes docs/CONFIGURATION.md's table of variables (Markdown). */
void config_print_markdown(FILE *out);

#endif
