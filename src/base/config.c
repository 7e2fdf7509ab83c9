/* config.c - reading and validating configuration. */
#include "base/config.h"

#include "base/log.h"
#include "base/util.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The variables found in .env, kept only while config_load runs. */
typedef struct {
    char **names;
    char **values;
    size_t count;
    bool out_of_memory;
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
    char *copy = strdup(value);
    if (!copy) {
        vars->out_of_memory = true;
        return;
    }
    for (size_t i = 0; i < vars->count; i++) {
        if (!strcmp(vars->names[i], name)) { /* a later line wins, as with `source .env` */
            free(vars->values[i]);
            vars->values[i] = copy;
            return;
        }
    }
    char **names = realloc(vars->names, (vars->count + 1) * sizeof *names);
    if (names)
        vars->names = names;
    char **values = names ? realloc(vars->values, (vars->count + 1) * sizeof *values) : NULL;
    if (values)
        vars->values = values;
    char *name_copy = values ? strdup(name) : NULL;
    if (!name_copy) {
        free(copy);
        vars->out_of_memory = true;
        return;
    }
    vars->names[vars->count] = name_copy;
    vars->values[vars->count] = copy;
    vars->count++;
}

void config_parse_dotenv(const char *text,
                         void (*fn)(void *ctx, const char *name, const char *value), void *ctx)
{
    const char *line = text;
    while (line && *line) {
        const char *eol = strchr(line, '\n');
        size_t len = eol ? (size_t)(eol - line) : strlen(line);
        char *buf = strndup(line, len); /* no limit on a line: .env is the operator's own */
        if (buf) {
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
            free(buf);
        }
        line = eol ? eol + 1 : NULL;
    }
}

/* ---- the table ---- */

typedef enum { V_STRING, V_INT, V_NUMBER, V_CHOICE } var_type;
typedef enum { F_STR, F_INT, F_I64, F_DOUBLE, F_BOOL } field_kind;

typedef struct {
    const char *name;
    int value;
    bool alias; /* accepted, but not listed in messages and docs */
} choice;

typedef struct {
    const char *name;
    const char *group;
    var_type type;
    const char *def;       /* the default as text; NULL: unset */
    const char *def_doc;   /* the default as the docs say it, when not simply `def` */
    int64_t imin, imax;    /* V_INT: inclusive bounds */
    double dmin, dmax;     /* V_NUMBER: above dmin, at most dmax */
    int64_t scale;         /* V_INT/V_NUMBER: the stored value is the parsed one times this */
    const choice *choices; /* V_CHOICE: NULL-terminated */
    const char *required;  /* when not NULL: must be set; the hint said when it is not */
    size_t offset;
    field_kind field;
    const char *help;
} config_var;

#define FIELD(member, kind) .offset = offsetof(cu_config, member), .field = kind

static const choice storage_choices[] = {
    {"local", STORAGE_LOCAL, false}, {"smb", STORAGE_SMB, false}, {"s3", STORAGE_S3, false}, {0}};
static const choice durability_choices[] = {{"fsync", 1, false}, {"none", 0, false}, {0}};
static const choice bool_choices[] = {{"true", 1, false}, {"false", 0, false}, {"1", 1, true},
                                      {"0", 0, true},     {"yes", 1, true},    {"no", 0, true},
                                      {"on", 1, true},    {"off", 0, true},    {0}};
static const choice log_choices[] = {{"debug", LOG_DEBUG, false},
                                     {"trace", LOG_DEBUG, true},
                                     {"info", LOG_INFO, false},
                                     {"warn", LOG_WARN, false},
                                     {"warning", LOG_WARN, true},
                                     {"error", LOG_ERROR, false},
                                     {0}};

static const config_var vars[] = {
    /* ---- security ---- */
    {.name = "API_KEY",
     .group = "Security",
     .type = V_STRING,
     .def_doc = "*required*",
     .required = "run ./init.sh to generate .env with a random key",
     FIELD(api_key, F_STR),
     .help = "API key for the management endpoints (`X-API-Key` or `Authorization: Bearer`)"},
    {.name = "JWT_SECRET",
     .group = "Security",
     .type = V_STRING,
     .def_doc = "*required*",
     .required = "run ./init.sh to generate .env with a random secret",
     FIELD(jwt_secret, F_STR),
     .help = "Secret for signing part tokens (HS256), at least 16 characters"},
    /* ---- storage ---- */
    {.name = "STORAGE_BACKEND",
     .group = "Storage",
     .type = V_CHOICE,
     .def = "local",
     .choices = storage_choices,
     FIELD(storage_backend, F_INT),
     .help = "`local`, `smb` or `s3`"},
    {.name = "LOCAL_STORAGE_PATH",
     .group = "Storage",
     .type = V_STRING,
     .def = "./uploads",
     FIELD(local_storage_path, F_STR),
     .help = "Root of local storage: `.staging/` and `files/` live here; created if missing, "
             "must be writable"},
    {.name = "TEMP_STORAGE_PATH",
     .group = "Storage",
     .type = V_STRING,
     .def_doc = "system temp (`$TMPDIR` or `/tmp`)",
     FIELD(temp_storage_path, F_STR),
     .help = "S3 backend: where each part's body is spooled (as an anonymous file, gone when "
             "the part is done) before it goes to S3, and where appends smaller than a part "
             "wait (named files under `appends/`, kept across restarts until S3 has the "
             "part); must support `O_TMPFILE` (ext4, xfs, btrfs, tmpfs)"},
    {.name = "SMB_HOST",
     .group = "Storage",
     .type = V_STRING,
     .def = "localhost",
     FIELD(smb_host, F_STR),
     .help = "SMB server"},
    {.name = "SMB_PORT",
     .group = "Storage",
     .type = V_INT,
     .def = "445",
     .imin = 1,
     .imax = 65535,
     FIELD(smb_port, F_INT),
     .help = "SMB port"},
    {.name = "SMB_USER",
     .group = "Storage",
     .type = V_STRING,
     .def = "",
     FIELD(smb_user, F_STR),
     .help = "SMB user"},
    {.name = "SMB_PASS",
     .group = "Storage",
     .type = V_STRING,
     .def = "",
     FIELD(smb_pass, F_STR),
     .help = "SMB password"},
    {.name = "SMB_SHARE",
     .group = "Storage",
     .type = V_STRING,
     .def = "share",
     FIELD(smb_share, F_STR),
     .help = "SMB share"},
    {.name = "SMB_PATH",
     .group = "Storage",
     .type = V_STRING,
     .def = "",
     FIELD(smb_path, F_STR),
     .help = "Directory within the share"},
    {.name = "SMB_WORKERS",
     .group = "Storage",
     .type = V_INT,
     .def = "4",
     .imin = 0,
     .imax = 64,
     FIELD(smb_workers, F_INT),
     .help = "Processes that write parts to the share, each with its own connection, so that "
             "this many parts reach the server at once (libsmbclient takes one call at a time "
             "per process); a part that finds none free is written from the server process. "
             "0: every SMB call from the server process"},
    {.name = "S3_ENDPOINT",
     .group = "Storage",
     .type = V_STRING,
     .def_doc = "AWS default",
     FIELD(s3_endpoint, F_STR),
     .help = "S3 endpoint URL"},
    {.name = "S3_BUCKET",
     .group = "Storage",
     .type = V_STRING,
     .def = "uploads",
     FIELD(s3_bucket, F_STR),
     .help = "S3 bucket"},
    {.name = "S3_REGION",
     .group = "Storage",
     .type = V_STRING,
     .def = "us-east-1",
     FIELD(s3_region, F_STR),
     .help = "S3 region (what requests are signed for)"},
    {.name = "S3_PREFIX",
     .group = "Storage",
     .type = V_STRING,
     .def = "",
     FIELD(s3_prefix, F_STR),
     .help = "Key prefix: objects go to `<S3_PREFIX>/<dir>/<file_id>_<name>`"},
    {.name = "S3_DOWNLOAD_REDIRECT",
     .group = "Storage",
     .type = V_CHOICE,
     .def = "false",
     .choices = bool_choices,
     FIELD(s3_download_redirect, F_BOOL),
     .help = "`true`: a download (`GET /api/files/{id}`, signed links too) is answered 302 to a "
             "presigned S3 URL valid for 5 minutes, so the bytes come from S3 itself; `false`: "
             "the server streams them from S3"},
    {.name = "AWS_ACCESS_KEY_ID",
     .group = "Storage",
     .type = V_STRING,
     .def_doc = "*required for s3*",
     FIELD(aws_access_key_id, F_STR),
     .help = "S3 access key"},
    {.name = "AWS_SECRET_ACCESS_KEY",
     .group = "Storage",
     .type = V_STRING,
     .def_doc = "*required for s3*",
     FIELD(aws_secret_access_key, F_STR),
     .help = "S3 secret key"},
    {.name = "AWS_SESSION_TOKEN",
     .group = "Storage",
     .type = V_STRING,
     FIELD(aws_session_token, F_STR),
     .help = "Temporary credentials' session token"},
    /* ---- uploads ---- */
    {.name = "CHUNK_SIZE_MB",
     .group = "Uploads",
     .type = V_INT,
     .def = "50",
     .imin = 1,
     .imax = 4096,
     .scale = 1024 * 1024,
     FIELD(chunk_size, F_I64),
     .help = "Part size in MiB (at least 5 with S3, its minimum part size); above 95 a "
             "warning: Cloudflare's free plan rejects requests over 100 MB. Also the largest "
             "chunk size a flow.js or resumable.js client may choose"},
    {.name = "UPLOAD_TTL_HOURS",
     .group = "Uploads",
     .type = V_NUMBER,
     .def = "24",
     .dmin = 0,
     .dmax = 24 * 365 * 10,
     .scale = 3600,
     FIELD(upload_ttl_seconds, F_DOUBLE),
     .help = "Hours before an incomplete upload expires (decimals allowed)"},
    {.name = "MAX_FILE_SIZE",
     .group = "Uploads",
     .type = V_INT,
     .def = "0",
     .def_doc = "unlimited",
     .imin = 0,
     .imax = INT64_MAX,
     FIELD(max_file_size, F_I64),
     .help = "Largest file accepted, in bytes, by every protocol: its size at creation, a "
             "length declared later, and a stream of unknown length as it grows are refused "
             "with 413 above it (0: unlimited)"},
    {.name = "ALLOWED_TYPES",
     .group = "Uploads",
     .type = V_STRING,
     .def_doc = "any type",
     FIELD(allowed_types, F_STR),
     .help = "Comma-separated media types that files may have, e.g. `image/*,video/mp4` "
             "(`type/*`: any subtype; `*/*`: anything). The type a client declares is checked "
             "at creation, and libmagic reads the file's first 64 KiB as they arrive: its "
             "finding decides. A file of another type is answered 415, its upload fails and "
             "its data is removed. What libmagic cannot identify is `application/octet-stream` "
             "(`text/plain` for text of no known kind, which a declared `text/...` type "
             "refines); an empty file is `application/x-empty`; each is allowed only when "
             "listed. Unset: any type, and nothing is read"},
    {.name = "ALLOWED_EXTENSIONS",
     .group = "Uploads",
     .type = V_STRING,
     .def_doc = "any name",
     FIELD(allowed_extensions, F_STR),
     .help = "Comma-separated file name extensions that uploads may have, with or without "
             "the dot, in any case, e.g. `.jpg,.png` or `jpg,png,tar.gz`; another name is "
             "answered 415 at creation"},
    {.name = "MAX_SINGLE_UPLOAD_MB",
     .group = "Uploads",
     .type = V_INT,
     .def = "95",
     .imin = 1,
     .imax = 1024 * 1024,
     .scale = 1024 * 1024,
     FIELD(max_single_upload, F_I64),
     .help = "Largest file `POST /api/files/upload` takes in one request, in MiB (under "
             "Cloudflare's 100 MB request limit by default; larger files go in parts)"},
    {.name = "MAX_PARTS",
     .group = "Uploads",
     .type = V_INT,
     .def = "10000",
     .imin = 1,
     .imax = 1000000,
     FIELD(max_parts, F_INT),
     .help = "Most parts one upload may have (so at most `MAX_PARTS` × chunk size bytes); "
             "never more than 10,000 with S3"},
    {.name = "DURABILITY",
     .group = "Uploads",
     .type = V_CHOICE,
     .def = "fsync",
     .choices = durability_choices,
     FIELD(durability_fsync, F_BOOL),
     .help = "`fsync`: a part's bytes and its record are on disk before the part is "
             "acknowledged; `none`: leave it to the OS (faster, a power cut may lose "
             "acknowledged parts). With S3 a part is acknowledged once S3 has accepted it; "
             "with SMB once the server has acknowledged every write and the close"},
    {.name = "CLEANUP_INTERVAL_SECONDS",
     .group = "Uploads",
     .type = V_NUMBER,
     .def = "300",
     .dmin = 0,
     .dmax = 86400 * 7,
     FIELD(cleanup_interval_seconds, F_DOUBLE),
     .help = "How often expired uploads are removed (decimals allowed)"},
    {.name = "MAX_OPEN_UPLOADS",
     .group = "Uploads",
     .type = V_INT,
     .def = "1000",
     .imin = 0,
     .imax = 100000000,
     FIELD(max_open_uploads, F_INT),
     .help = "Uploads one owner (the API key, or a token) may have open at once; one more is "
             "answered 429 (0: no limit)"},
    {.name = "MAX_RESERVED_BYTES",
     .group = "Uploads",
     .type = V_INT,
     .def = "1099511627776",
     .def_doc = "`1099511627776` (1 TiB)",
     .imin = 0,
     .imax = INT64_MAX,
     FIELD(max_reserved_bytes, F_I64),
     .help = "Bytes one owner's open uploads may declare in all (on local disk they are "
             "reserved at init); an upload that would go past it is answered 507 (0: no "
             "limit)"},
    {.name = "RETENTION_HOURS",
     .group = "Uploads",
     .type = V_NUMBER,
     .def = "168",
     .dmin = 0,
     .dmax = 24 * 365 * 100,
     .scale = 3600,
     FIELD(retention_seconds, F_DOUBLE),
     .help = "How long the records of cancelled, expired and deleted uploads (and of delivered "
             "webhooks) are kept before they are pruned (decimals allowed); a complete file's "
             "record stays while the file exists, only its part tokens' digests are dropped "
             "this long after completion"},
    {.name = "ORPHAN_GRACE_SECONDS",
     .group = "Uploads",
     .type = V_NUMBER,
     .def = "3600",
     .dmin = 0,
     .dmax = 86400 * 365,
     FIELD(orphan_grace_seconds, F_DOUBLE),
     .help = "Staging data that no upload record owns (left by a crash during init, or by a "
             "database restored from an older backup) is removed once it is this old; swept "
             "at start and with every cleanup"},
    {.name = "PART_STALL_SECONDS",
     .group = "Uploads",
     .type = V_NUMBER,
     .def = "20",
     .dmin = 0,
     .dmax = 86400,
     FIELD(part_stall_seconds, F_DOUBLE),
     .help = "A new request for a part (or a tus upload) takes over from one that has sent "
             "fewer than `PART_STALL_MIN_BYTES` in the last this many seconds (stopped, or "
             "trickling); the stalled one writes nothing more"},
    {.name = "PART_STALL_MIN_BYTES",
     .group = "Uploads",
     .type = V_INT,
     .def = "65536",
     .imin = 1,
     .imax = INT64_C(1) << 40,
     FIELD(part_stall_min_bytes, F_I64),
     .help = "How many bytes a write must move in every `PART_STALL_SECONDS` not to count as "
             "stalled"},
    {.name = "DATABASE_PATH",
     .group = "Uploads",
     .type = V_STRING,
     .def = "./uploads.db",
     FIELD(database_path, F_STR),
     .help = "SQLite database file"},
    /* ---- webhooks ---- */
    {.name = "WEBHOOK_SECRET",
     .group = "Webhooks",
     .type = V_STRING,
     FIELD(webhook_secret, F_STR),
     .help = "When set, webhooks carry `X-Webhook-Signature: sha256=<hex HMAC-SHA256 of the "
             "body>`"},
    {.name = "WEBHOOK_MAX_ATTEMPTS",
     .group = "Webhooks",
     .type = V_INT,
     .def = "10",
     .imin = 1,
     .imax = 100,
     FIELD(webhook_max_attempts, F_INT),
     .help = "Tries per webhook delivery"},
    {.name = "WEBHOOK_RETRY_BASE_SECONDS",
     .group = "Webhooks",
     .type = V_NUMBER,
     .def = "2",
     .dmin = 0,
     .dmax = 3600,
     FIELD(webhook_retry_base_seconds, F_DOUBLE),
     .help = "First retry delay; doubles each try, capped at one hour (decimals allowed)"},
    {.name = "WEBHOOK_ALLOWED_HOSTS",
     .group = "Webhooks",
     .type = V_STRING,
     FIELD(webhook_allowed_hosts, F_STR),
     .help = "Comma-separated host names, IP addresses and CIDR ranges (IPv4 and IPv6) that "
             "webhooks may reach although they are not public, e.g. "
             "`hooks.internal,10.1.0.0/16`. Without it a `webhook_url` naming a loopback, "
             "private, link-local or other special-purpose address is refused at init, and a "
             "delivery whose host resolves to one is refused when it connects; a listed name "
             "may resolve anywhere"},
    {.name = "WEBHOOK_CONCURRENCY",
     .group = "Webhooks",
     .type = V_INT,
     .def = "8",
     .imin = 1,
     .imax = 256,
     FIELD(webhook_concurrency, F_INT),
     .help = "Webhook deliveries in flight at once (one thread each); one is kept for hosts "
             "whose last try worked, and hosts whose last try failed share at most half"},
    {.name = "WEBHOOK_PER_HOST",
     .group = "Webhooks",
     .type = V_INT,
     .def = "2",
     .imin = 1,
     .imax = 256,
     FIELD(webhook_per_host, F_INT),
     .help = "Deliveries in flight at once to one receiver host: a receiver that never "
             "answers holds at most this many of the `WEBHOOK_CONCURRENCY` workers"},
    {.name = "WEBHOOK_CONNECT_TIMEOUT_SECONDS",
     .group = "Webhooks",
     .type = V_NUMBER,
     .def = "5",
     .dmin = 0,
     .dmax = 300,
     FIELD(webhook_connect_timeout_seconds, F_DOUBLE),
     .help = "Longest wait for a receiver to accept the connection (decimals allowed)"},
    {.name = "WEBHOOK_TIMEOUT_SECONDS",
     .group = "Webhooks",
     .type = V_NUMBER,
     .def = "10",
     .dmin = 0,
     .dmax = 3600,
     FIELD(webhook_timeout_seconds, F_DOUBLE),
     .help = "Longest one delivery try may take, connecting included; a slower receiver's "
             "try counts as failed (decimals allowed)"},
    /* ---- tus ---- */
    {.name = "TUS_BASE_PATH",
     .group = "tus",
     .type = V_STRING,
     .def = "/files/",
     FIELD(tus_base_path, F_STR),
     .help = "Where the tus 1.0 endpoint lives: uploads are created at this path and each "
             "has its URL below it (`/files/<file_id>`); a path starting and ending with `/`, "
             "of letters, digits and `-._~`"},
    /* ---- HTTP ---- */
    {.name = "SERVER_HOST",
     .group = "HTTP",
     .type = V_STRING,
     .def = "0.0.0.0",
     FIELD(server_host, F_STR),
     .help = "Bind address"},
    {.name = "SERVER_PORT",
     .group = "HTTP",
     .type = V_INT,
     .def = "3000",
     .imin = 0,
     .imax = 65535,
     FIELD(server_port, F_INT),
     .help = "TCP port"},
    {.name = "MAX_CONNECTIONS",
     .group = "HTTP",
     .type = V_INT,
     .def = "1024",
     .imin = 1,
     .imax = 65536,
     FIELD(max_connections, F_INT),
     .help = "Concurrent HTTP connections (one thread each); a connection beyond them is "
             "answered 503 and closed"},
    {.name = "MAX_CONNECTIONS_PER_IP",
     .group = "HTTP",
     .type = V_INT,
     .def = "128",
     .imin = 0,
     .imax = 65536,
     FIELD(max_connections_per_ip, F_INT),
     .help = "Concurrent connections from one client address; more are refused at once (0: "
             "no limit; behind a reverse proxy every client has the proxy's address)"},
    {.name = "HEADER_TIMEOUT_SECONDS",
     .group = "HTTP",
     .type = V_NUMBER,
     .def = "20",
     .dmin = 0,
     .dmax = 3600,
     FIELD(header_timeout_seconds, F_DOUBLE),
     .help = "A request's whole header block must arrive within this many seconds of its "
             "first byte (else 408 and the connection is closed)"},
    {.name = "KEEPALIVE_TIMEOUT_SECONDS",
     .group = "HTTP",
     .type = V_NUMBER,
     .def = "60",
     .dmin = 0,
     .dmax = 3600,
     FIELD(keepalive_timeout_seconds, F_DOUBLE),
     .help = "An idle connection (no request in progress) is closed after this many seconds"},
    {.name = "BODY_MIN_RATE",
     .group = "HTTP",
     .type = V_INT,
     .def = "1024",
     .imin = 0,
     .imax = INT64_C(1) << 40,
     FIELD(body_min_rate, F_I64),
     .help = "Slowest request body accepted, in bytes per second averaged over "
             "`BODY_RATE_WINDOW_SECONDS` (a slower one is answered 408 and closed; 0: off)"},
    {.name = "BODY_RATE_WINDOW_SECONDS",
     .group = "HTTP",
     .type = V_NUMBER,
     .def = "30",
     .dmin = 0,
     .dmax = 3600,
     FIELD(body_rate_window_seconds, F_DOUBLE),
     .help = "The window over which `BODY_MIN_RATE` is measured; also how long a body may "
             "send nothing at all"},
    {.name = "TRUST_PROXY",
     .group = "HTTP",
     .type = V_STRING,
     FIELD(trust_proxy, F_STR),
     .help = "Reverse proxies whose forwarding headers name the client: comma-separated IP "
             "addresses and CIDR ranges, and the word `cloudflare` for Cloudflare's published "
             "ranges (compiled in), e.g. `127.0.0.1,cloudflare`. From a trusted peer the client "
             "is `CF-Connecting-IP` (when the peer is Cloudflare's) or the rightmost untrusted "
             "`X-Forwarded-For` entry, and `X-Forwarded-Proto`/`-Host` are believed; from any "
             "other peer those headers are ignored. The client address is what rate limits, "
             "the access log and handlers see. Unset: the peer is the client"},
    {.name = "CORS_ALLOWED_ORIGINS",
     .group = "HTTP",
     .type = V_STRING,
     FIELD(cors_allowed_origins, F_STR),
     .help = "Origins whose pages may call the API from a browser: comma-separated "
             "(`https://app.example.com,http://localhost:5173`), or `*` for any. Preflights "
             "are answered on every route and replies carry `Access-Control-Allow-Origin` "
             "and the exposed headers (docs/API.md, CORS); credentials (cookies) are never "
             "allowed, the API key and tokens travel in headers. Unset: no CORS headers"},
    {.name = "RATE_LIMIT_PER_MINUTE",
     .group = "HTTP",
     .type = V_INT,
     .def = "3000",
     .imin = 0,
     .imax = 60000000,
     FIELD(rate_limit_per_minute, F_I64),
     .help = "Requests a minute one client address (an IPv6 /64) may make, on average; "
             "beyond, 429 with `Retry-After`. 0: no limit. The default is above what honest "
             "clients send (docs/API.md, Rate limits)"},
    {.name = "RATE_LIMIT_BURST",
     .group = "HTTP",
     .type = V_INT,
     .def = "600",
     .imin = 1,
     .imax = 1000000,
     FIELD(rate_limit_burst, F_I64),
     .help = "Requests one client may make at once before `RATE_LIMIT_PER_MINUTE` applies"},
    {.name = "RATE_LIMIT_AUTH_FAILURES_PER_MINUTE",
     .group = "HTTP",
     .type = V_INT,
     .def = "30",
     .imin = 0,
     .imax = 1000000,
     FIELD(rate_limit_auth_failures_per_minute, F_I64),
     .help = "Failed authentications (a wrong API key or token) a minute one client address may "
             "make, this many at once; once they are used up, every request from it that needs "
             "credentials gets 429, right ones included, until one is back. 0: no limit"},
    {.name = "LOG_LEVEL",
     .group = "HTTP",
     .type = V_CHOICE,
     .def = "info",
     .choices = log_choices,
     FIELD(log_level, F_INT),
     .help = "`debug`, `info` (one line per request), `warn` or `error`"},
};

#define NVARS (sizeof vars / sizeof *vars)

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

/* "a, b or c": the names of a choice list, without aliases. */
static void choice_list(const choice *c, char *out, size_t cap)
{
    size_t n = 0, len = 0;
    for (const choice *p = c; p->name; p++)
        n += !p->alias;
    out[0] = '\0';
    size_t i = 0;
    for (const choice *p = c; p->name; p++) {
        if (p->alias)
            continue;
        i++;
        len += (size_t)snprintf(out + len, len < cap ? cap - len : 0, "%s%s",
                                i == 1   ? ""
                                : i == n ? " or "
                                         : ", ",
                                p->name);
    }
}

static void *field_of(cu_config *cfg, const config_var *v)
{
    return (char *)cfg + v->offset;
}

/* Parses one variable's text (or its default) into its field. */
static int load_var(loader *ld, cu_config *cfg, const config_var *v)
{
    const char *text = get(ld, v->name);
    if (!text && v->required)
        return fail(ld, "%s: required (%s)", v->name, v->required);
    if (!text)
        text = v->def;
    void *field = field_of(cfg, v);
    int64_t scale = v->scale ? v->scale : 1;
    switch (v->type) {
    case V_STRING:
        if (text && !(*(char **)field = strdup(text)))
            return fail(ld, "%s: out of memory", v->name);
        return 0;
    case V_INT: {
        int64_t n = 0;
        if (text && (util_parse_i64(text, &n) != 0 || n < v->imin || n > v->imax))
            return fail(ld, "%s: must be a whole number from %lld to %lld, got \"%s\"", v->name,
                        (long long)v->imin, (long long)v->imax, text);
        n *= scale;
        if (v->field == F_INT)
            *(int *)field = (int)n;
        else
            *(int64_t *)field = n;
        return 0;
    }
    case V_NUMBER: {
        double d = 0;
        if (text && (util_parse_double(text, &d) != 0 || d <= v->dmin || d > v->dmax))
            return fail(ld, "%s: must be a number above %g and at most %g, got \"%s\"", v->name,
                        v->dmin, v->dmax, text);
        *(double *)field = d * (double)scale;
        return 0;
    }
    case V_CHOICE:
        for (const choice *c = v->choices; c->name; c++) {
            if (!strcasecmp(c->name, text)) {
                if (v->field == F_BOOL)
                    *(bool *)field = c->value != 0;
                else
                    *(int *)field = c->value;
                return 0;
            }
        }
        char names[128];
        choice_list(v->choices, names, sizeof names);
        return fail(ld, "%s: must be %s, got \"%s\"", v->name, names, text);
    }
    return fail(ld, "%s: unknown type", v->name);
}

const char *config_storage_name(storage_kind kind)
{
    for (const choice *c = storage_choices; c->name; c++)
        if (c->value == (int)kind)
            return c->name;
    return "local";
}

/* TUS_BASE_PATH: "/seg/.../" of unreserved characters, so that routes and Location URLs can
 * be built from it as it is. */
static int check_tus_base_path(loader *ld, const char *path)
{
    size_t len = strlen(path);
    bool ok = len >= 3 && len <= 128 && path[0] == '/' && path[len - 1] == '/';
    for (size_t i = 1; ok && i < len; i++)
        ok = isalnum((unsigned char)path[i]) || strchr("-._~", path[i]) ||
             (path[i] == '/' && path[i - 1] != '/');
    ok = ok && !strstr(path, "/./") && !strstr(path, "/../");
    return ok ? 0
              : fail(ld,
                     "TUS_BASE_PATH: must be a path like /files/ (starting and ending with "
                     "/, no empty segment, letters, digits and -._~), got \"%s\"",
                     path);
}

/* Rules between variables, and defaults that depend on the machine. */
static int check_together(loader *ld, cu_config *cfg)
{
    if (check_tus_base_path(ld, cfg->tus_base_path) != 0)
        return -1;
    if (strlen(cfg->jwt_secret) < 16)
        return fail(ld, "JWT_SECRET: must be at least 16 characters (init.sh makes 64)");
    if (!cfg->temp_storage_path) {
        const char *tmp = getenv("TMPDIR");
        if (!(cfg->temp_storage_path = strdup(tmp && *tmp ? tmp : "/tmp")))
            return fail(ld, "TEMP_STORAGE_PATH: out of memory");
    }
    cu_error allow_err;
    if (netaddr_allowlist_parse(cfg->webhook_allowed_hosts, &cfg->webhook_allowlist, &allow_err) !=
        0)
        return fail(ld, "WEBHOOK_ALLOWED_HOSTS: %s", allow_err.msg);
    cu_error list_err;
    if (filetype_patterns_parse(cfg->allowed_types, &cfg->allowed_type_list, &list_err) != 0)
        return fail(ld, "ALLOWED_TYPES: %s", list_err.msg);
    if (filetype_extensions_parse(cfg->allowed_extensions, &cfg->allowed_extension_list,
                                  &list_err) != 0)
        return fail(ld, "ALLOWED_EXTENSIONS: %s", list_err.msg);
    int64_t chunk_mb = cfg->chunk_size >> 20;
    if (chunk_mb > 95)
        snprintf(cfg->warnings, sizeof cfg->warnings,
                 "CHUNK_SIZE_MB=%lld: parts over 100 MB are rejected by Cloudflare's free plan "
                 "(its request body limit); keep it at 95 or below behind Cloudflare",
                 (long long)chunk_mb);
    if (cfg->storage_backend == STORAGE_S3) {
        /* S3's own limits, said up front rather than at the first part. */
        if (cfg->chunk_size < 5 * 1024 * 1024)
            return fail(ld, "CHUNK_SIZE_MB: S3 needs parts of at least 5 MiB, got %lld MiB",
                        (long long)chunk_mb);
        if (cfg->max_parts > 10000)
            cfg->max_parts = 10000; /* S3's limit on parts per multipart upload */
        if (!cfg->aws_access_key_id || !cfg->aws_secret_access_key)
            return fail(ld, "%s: required with STORAGE_BACKEND=s3",
                        cfg->aws_access_key_id ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
    }
    return 0;
}

int config_load(cu_config *cfg, config_lookup_fn lookup, void *lookup_ctx, const char *dotenv_text,
                char *err, size_t err_len)
{
    memset(cfg, 0, sizeof *cfg);
    loader ld = {.lookup = lookup, .lookup_ctx = lookup_ctx, .err = err, .err_len = err_len};
    if (dotenv_text)
        config_parse_dotenv(dotenv_text, dotenv_add, &ld.dotenv);
    int rc = ld.dotenv.out_of_memory ? fail(&ld, ".env: out of memory") : 0;
    for (size_t i = 0; rc == 0 && i < NVARS; i++)
        rc = load_var(&ld, cfg, &vars[i]);
    if (rc == 0)
        rc = check_together(&ld, cfg);
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
    netaddr_allowlist_free(cfg->webhook_allowlist);
    cfg->webhook_allowlist = NULL;
    filetype_list_free(cfg->allowed_type_list);
    filetype_list_free(cfg->allowed_extension_list);
    cfg->allowed_type_list = cfg->allowed_extension_list = NULL;
    for (size_t i = 0; i < NVARS; i++) {
        if (vars[i].field == F_STR) {
            char **s = field_of(cfg, &vars[i]);
            free(*s);
            *s = NULL;
        }
    }
}

/* The default as documentation shows it: "" when there is none. */
static void default_text(const config_var *v, char *out, size_t cap, bool markdown)
{
    if (v->def_doc)
        snprintf(out, cap, "%s", v->def_doc);
    else if (v->def && *v->def)
        snprintf(out, cap, markdown ? "`%s`" : "%s", v->def);
    else
        out[0] = '\0';
}

/* Writes text without Markdown's emphasis and code marks, wrapped to 80 columns with
 * an indent. */
static void print_plain(FILE *out, const char *text, int indent)
{
    int col = indent;
    fprintf(out, "%*s", indent, "");
    while (*text) {
        size_t word = strcspn(text, " ");
        int visible = 0;
        for (size_t i = 0; i < word; i++)
            visible += text[i] != '`' && text[i] != '*';
        if (col > indent && col + 1 + visible > 80) {
            fprintf(out, "\n%*s", indent, "");
            col = indent;
        } else if (col > indent) {
            fputc(' ', out);
            col++;
        }
        for (size_t i = 0; i < word; i++)
            if (text[i] != '`' && text[i] != '*')
                fputc(text[i], out);
        col += visible;
        text += word;
        while (*text == ' ')
            text++;
    }
    fputc('\n', out);
}

void config_print_help(FILE *out)
{
    const char *group = NULL;
    for (size_t i = 0; i < NVARS; i++) {
        const config_var *v = &vars[i];
        if (!group || strcmp(group, v->group) != 0) {
            group = v->group;
            fprintf(out, "\n%s:\n", group);
        }
        char def[128], line[256];
        default_text(v, def, sizeof def, false);
        if (v->required)
            snprintf(line, sizeof line, "%s (required)", v->name);
        else
            snprintf(line, sizeof line, "%s%s%s%s", v->name, *def ? " (default: " : "", def,
                     *def ? ")" : "");
        print_plain(out, line, 2);
        print_plain(out, v->help, 6);
    }
}

void config_print_markdown(FILE *out)
{
    fprintf(out, "| Variable | Default | Description |\n|---|---|---|\n");
    for (size_t i = 0; i < NVARS; i++) {
        const config_var *v = &vars[i];
        char def[128];
        default_text(v, def, sizeof def, true);
        fprintf(out, "| `%s` | %s | %s |\n", v->name, def, v->help);
    }
}
