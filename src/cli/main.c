/* main.c - the chunked-uploader command: parse arguments and configuration, build the
 * server context (metadata store, blob store, upload service, HTTP front, background
 * threads), run until SIGINT/SIGTERM, then take it all down in reverse order. */
#include "api/auth.h"
#include "api/files.h"
#include "api/health.h"
#include "api/openapi.h"
#include "api/seed.h"
#include "api/flow.h"
#include "api/tus.h"
#include "base/config.h"
#include "base/log.h"
#include "core/reaper.h"
#include "core/sniff.h"
#include "core/upload.h"
#include "core/webhook.h"
#include "http/cors.h"
#include "http/ratelimit.h"
#include "http/server.h"
#include "http/trust.h"
#include "meta/meta.h"
#include "storage/storage.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define EXIT_CONFIG 2

static void usage(FILE *out)
{
    fprintf(out, "Usage: chunked-uploader [serve]\n"
                 "       chunked-uploader --help | --version | --config-markdown\n"
                 "\n"
                 "Resumable chunked upload server. Configuration comes from the environment and\n"
                 "from .env in the working directory (the environment wins); see\n"
                 "docs/CONFIGURATION.md. Required: API_KEY, JWT_SECRET (./init.sh makes both).\n"
                 "--config-markdown prints the table of variables that document holds.\n"
                 "\n"
                 "Exit status: 0 after SIGINT/SIGTERM, 1 on a runtime failure, 2 on bad "
                 "configuration.\n"
                 "\n"
                 "Variables (and their defaults):\n");
    config_print_help(out);
}

static const char *env_lookup(void *ctx, const char *name)
{
    (void)ctx;
    return getenv(name);
}

/* Reads .env from the working directory (NULL when there is none). */
static char *read_dotenv(void)
{
    FILE *f = fopen(".env", "r");
    if (!f)
        return NULL;
    size_t cap = 4096, len = 0;
    char *text = malloc(cap);
    size_t n;
    while (text && (n = fread(text + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (len + 1 == cap) {
            if (cap >= (1 << 20))
                break; /* a .env over 1 MiB is not a .env */
            char *grown = realloc(text, cap * 2);
            if (!grown) {
                free(text);
                text = NULL;
                break;
            }
            text = grown;
            cap *= 2;
        }
    }
    fclose(f);
    if (text)
        text[len] = '\0';
    return text;
}

/* Every connection is a descriptor (and S3 spools, SMB and SQLite take more): raise the
 * soft limit to the hard one, and say so when even that is below what MAX_CONNECTIONS
 * needs. */
static void raise_file_limit(const cu_config *cfg)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    rlim_t want = (rlim_t)cfg->max_connections * 2 + 256;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want)
        log_warn("the limit on open files is %llu; MAX_CONNECTIONS=%d needs about %llu (raise it "
                 "with ulimit -n or LimitNOFILE= in the service)",
                 (unsigned long long)rl.rlim_cur, cfg->max_connections, (unsigned long long)want);
}

static int serve(void)
{
    cu_config cfg;
    char msg[512];
    char *dotenv = read_dotenv();
    int rc = config_load(&cfg, env_lookup, NULL, dotenv, msg, sizeof msg);
    free(dotenv);
    if (rc != 0) {
        fprintf(stderr, "chunked-uploader: configuration: %s\n", msg);
        config_free(&cfg);
        return EXIT_CONFIG;
    }
    log_set_level(cfg.log_level);
    if (cfg.warnings[0])
        log_warn("%s", cfg.warnings);
    raise_file_limit(&cfg);
    int status = 1;
    meta_t *meta = NULL;
    storage_t *storage = NULL;
    upload_service *uploads = NULL;
    content_sniffer *sniffer = NULL;
    webhook_deliverer *webhooks = NULL;
    reaper *reap = NULL;
    http_server *http = NULL;
    http_router *router = NULL;
    http_trust *trust = NULL;
    http_cors *cors = NULL;
    http_ratelimit *limits = NULL;
    openapi_docs *docs = NULL;
    cu_error err;
    sigset_t signals;

    /* SIGINT/SIGTERM are taken synchronously by this thread (sigwait below); blocking them
     * before any thread starts makes every thread inherit the mask. */
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);

    curl_global_init(CURL_GLOBAL_DEFAULT);
    const char *bad = http_trust_parse(cfg.trust_proxy, &trust, &err) != 0 ? "TRUST_PROXY"
                      : http_cors_parse(cfg.cors_allowed_origins, &cors, &err) != 0
                          ? "CORS_ALLOWED_ORIGINS"
                          : NULL;
    if (bad) {
        fprintf(stderr, "chunked-uploader: configuration: %s: %s\n", bad, err.msg);
        status = EXIT_CONFIG;
        goto out;
    }
    if (storage_open_configured(&cfg, &storage, &err) != 0) {
        fprintf(stderr, "chunked-uploader: configuration: %s\n", err.msg);
        status = EXIT_CONFIG;
        goto out;
    }
    if (meta_sqlite_open(cfg.database_path, cfg.durability_fsync, &meta, &err) != 0) {
        fprintf(stderr, "chunked-uploader: configuration: DATABASE_PATH: %s\n", err.msg);
        status = EXIT_CONFIG;
        goto out;
    }
    /* ALLOWED_TYPES: libmagic's database, loaded once, into a handle per core (a sniff holds
     * one for at most a millisecond or so). */
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cfg.allowed_type_list && sniff_open(cores < 1   ? 1
                                            : cores > 8 ? 8
                                                        : (int)cores,
                                            &sniffer, &err) != 0) {
        fprintf(stderr, "chunked-uploader: configuration: ALLOWED_TYPES: %s\n", err.msg);
        status = EXIT_CONFIG;
        goto out;
    }
    webhooks = webhook_start(&cfg, meta);
    upload_deps deps = {.cfg = &cfg, .meta = meta, .storage = storage, .sniffer = sniffer};
    uploads = upload_service_new(&deps);
    upload_observer deliverer = {.on_event = webhook_on_event, .ctx = webhooks};
    if (uploads && webhooks && upload_observe(uploads, &deliverer) != 0)
        goto out;
    reap = uploads ? reaper_start(uploads, cfg.cleanup_interval_seconds) : NULL;
    if (!webhooks || !uploads || !reap) {
        log_error("cannot start background threads");
        goto out;
    }

    seed_api seed = {.cfg = &cfg, .uploads = uploads};
    flow_api flow = {.cfg = &cfg, .uploads = uploads};
    files_api files = {.cfg = &cfg, .uploads = uploads};
    tus_api tus = {.cfg = &cfg, .uploads = uploads};
    health_api health = {.uploads = uploads};
    http_ratelimit_options limit_opts = {.per_minute = cfg.rate_limit_per_minute,
                                         .burst = cfg.rate_limit_burst,
                                         .auth_failures_per_minute =
                                             cfg.rate_limit_auth_failures_per_minute};
    if (!(limits = http_ratelimit_new(&limit_opts))) {
        log_error("cannot set up the rate limits: out of memory");
        goto out;
    }
    auth_ctx auth = {.cfg = &cfg, .limits = limits};
    router = http_router_new();
    if (!router || health_api_register(&health, router) != 0 ||
        seed_api_register(&seed, router) != 0 || flow_api_register(&flow, router) != 0 ||
        files_api_register(&files, router) != 0 || tus_api_register(&tus, router) != 0 ||
        /* Last: it checks its description of the API against every route above. */
        !(docs = openapi_register(&cfg, router))) {
        log_error("cannot set up the routes");
        goto out;
    }
    /* CORS first: it answers preflights before any limit or credential check (a browser then
     * reads a 429's CORS headers and Retry-After instead of failing the preflight); its reply
     * hook decorates every reply whoever made it. Then the rate limit, before the credential
     * check it protects; tus answers its OPTIONS discovery request, which needs no credential. */
    http_filter filters[] = {http_cors_filter(cors), http_ratelimit_filter(limits),
                             tus_filter(&tus), auth_filter(&auth)};
    http_server_options opts = {.host = cfg.server_host,
                                .port = cfg.server_port,
                                .router = router,
                                .filters = filters,
                                .nfilters = sizeof filters / sizeof *filters,
                                .trust = trust,
                                .max_connections = cfg.max_connections,
                                .max_connections_per_ip = cfg.max_connections_per_ip,
                                .header_timeout = cfg.header_timeout_seconds,
                                .keepalive_timeout = cfg.keepalive_timeout_seconds,
                                .body_min_rate = cfg.body_min_rate,
                                .body_rate_window = cfg.body_rate_window_seconds,
                                .method_override = true};
    http = http_server_start(&opts, &err);
    if (!http) {
        log_error("%s", err.msg);
        goto out;
    }
    char caps[256];
    storage_caps_describe(storage_caps(storage), caps, sizeof caps);
    log_info("chunked-uploader %s listening on http://%s:%d (storage: %s with %s; database: %s; "
             "chunk size %lld MiB; durability %s)",
             CU_VERSION, cfg.server_host, http_server_port(http),
             config_storage_name(cfg.storage_backend), caps, cfg.database_path,
             (long long)(cfg.chunk_size >> 20), cfg.durability_fsync ? "fsync" : "none");

    int sig = 0;
    sigwait(&signals, &sig);
    log_info("received %s, shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
    status = 0;
out:
    http_server_stop(http);
    http_router_free(router);
    openapi_free(docs);
    http_ratelimit_free(limits);
    http_cors_free(cors);
    http_trust_free(trust);
    reaper_stop(reap);
    webhook_stop(webhooks);
    upload_service_free(uploads);
    sniff_close(sniffer);
    meta_close(meta);
    storage_destroy(storage);
    curl_global_cleanup();
    config_free(&cfg);
    return status;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    /* A write past the process's file size limit fails with EFBIG (answered 413) rather than
     * killing the server. */
    signal(SIGXFSZ, SIG_IGN);
    if (argc > 2) {
        usage(stderr);
        return EXIT_CONFIG;
    }
    if (argc == 2) {
        if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(argv[1], "--config-markdown")) {
            config_print_markdown(stdout);
            return 0;
        }
        if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
            printf("chunked-uploader %s\n", CU_VERSION);
            return 0;
        }
        if (strcmp(argv[1], "serve") != 0) {
            fprintf(stderr, "chunked-uploader: unknown argument \"%s\"\n\n", argv[1]);
            usage(stderr);
            return EXIT_CONFIG;
        }
    }
    return serve();
}
