/* fuzz_init_json.c - the body of POST /upload/init (src/api/seed_init.c), then what the
 * handler does with it before any token is signed: upload_validate, the engine's checks of
 * the filename, size, webhook URL and digest, for a local, an S3 and an SMB backend (their
 * descriptors only: validation does no I/O).
 *
 * Invariants: a refusal is CU_EINVAL with a message that can be sent as a JSON string
 * (valid UTF-8) and leaves nothing allocated; an accepted body is an object whose fields
 * are what the parser says they are (same pointers, lengths and values), the filename is
 * NUL-terminated after its length, and a webhook_url holds no NUL. What upload_validate
 * accepts obeys the filename policy (filename_oracle.h) and the backend's rules, fits the
 * size and part limits, has an http(s) webhook URL without spaces or control characters
 * and a 64-hex-digit digest on a backend that can read a file back; its refusals are
 * 4xx/501 codes with messages fit for a reply. A webhook URL it accepts never names, as a
 * literal, an address that is not public (loopback, private, metadata...), in any form the
 * resolver reads and through libcurl's reading of the URL and of international names. */
#include "filename_oracle.h"

#include "api/seed_init.h"
#include "base/netaddr.h"
#include "base/util.h"
#include "core/upload.h"

#include <curl/curl.h>
#include <ctype.h>
#include <idn2.h>
#include <jansson.h>
#include <netdb.h>

#define CHUNK ((int64_t)50 << 20)
#define MAX_PARTS 10000
#define MAX_FILE_SIZE ((int64_t)1 << 40)

static const struct storage_stage_read_ops stage_read; /* present: the capability, unused */
static const struct storage_append_ops append;

typedef struct {
    storage_t storage;
    upload_service *svc;
} backend;

static cu_config cfg = {.chunk_size = CHUNK,
                        .max_parts = MAX_PARTS,
                        .max_file_size = MAX_FILE_SIZE,
                        .upload_ttl_seconds = 3600};
/* What validation reads of each backend (src/storage/{local,s3,smb}.c). */
static backend backends[] = {
    {.storage = {.name = "local",
                 .allows_trailing_dot_space = true,
                 .stage_read = &stage_read,
                 .append = &append}},
    {.storage = {.name = "s3",
                 .allows_trailing_dot_space = true,
                 .min_part_size = 5 << 20,
                 .append = &append}},
    {.storage = {.name = "smb",
                 .forbidden_name_chars = ORACLE_SMB_FORBIDDEN,
                 .stage_read = &stage_read,
                 .append = &append}},
};
#define NBACKENDS (sizeof backends / sizeof *backends)

static void setup(void)
{
    for (size_t i = 0; i < NBACKENDS; i++) {
        upload_deps deps = {.cfg = &cfg, .storage = &backends[i].storage};
        FUZZ_CHECK((backends[i].svc = upload_service_new(&deps)) != NULL);
    }
}

static bool webhook_ok(const char *url)
{
    size_t len = strlen(url);
    if ((strncmp(url, "http://", 7) && strncmp(url, "https://", 8)) || len <= 8 || len > 2048)
        return false;
    for (const unsigned char *p = (const unsigned char *)url; *p; p++)
        if (*p <= ' ' || *p == 0x7f)
            return false;
    return true;
}

/* A host that is an address literal, in any form getaddrinfo reads, must be public. */
static void check_host_public(const char *host)
{
    char h[256];
    size_t len = strlen(host);
    if (len >= 2 && host[0] == '[' && host[len - 1] == ']')
        host++, len -= 2;
    if (len >= sizeof h)
        return;
    for (size_t i = 0; i < len; i++)
        h[i] = (char)tolower((unsigned char)host[i]);
    h[len] = '\0';
    if (len > 1 && h[len - 1] == '.')
        h[len - 1] = '\0';
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    if (getaddrinfo(h, NULL, &hints, &res) != 0)
        return; /* a name: the connect-time guard checks what it resolves to */
    netaddr a;
    FUZZ_CHECK(netaddr_from_sockaddr(res->ai_addr, res->ai_addrlen, &a) == 0);
    freeaddrinfo(res);
    FUZZ_CHECK(netaddr_special(&a) == NULL);
}

/* The host of an accepted webhook URL as libcurl reads it, and as it converts a name that
 * is not ASCII (IDNA 2008, then 2003). */
static void check_webhook_public(const char *url)
{
    CURLU *u = curl_url();
    FUZZ_CHECK(u != NULL);
    char *host = NULL;
    if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
        check_host_public(host);
        const int modes[] = {IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL, IDN2_TRANSITIONAL};
        for (size_t i = 0; i < sizeof modes / sizeof *modes; i++) {
            char *ace = NULL;
            if (idn2_lookup_u8((const uint8_t *)host, (uint8_t **)&ace, modes[i]) == IDN2_OK)
                check_host_public(ace);
            idn2_free(ace);
        }
    }
    curl_free(host);
    curl_url_cleanup(u);
}

/* The engine's verdict on the body for one backend, held to the rules it states. */
static void check_validate(const backend *b, const seed_init_body *in)
{
    upload_create_request cr = {.id = "550e8400-e29b-41d4-a716-446655440000",
                                .protocol = "seed",
                                .filename = in->filename,
                                .filename_len = in->filename_len,
                                .total_size = in->total_size,
                                .layout = UPLOAD_LAYOUT_SLOTS,
                                .slot_size = CHUNK,
                                .webhook_url = in->webhook_url,
                                .checksum_sha256 = in->checksum_sha256};
    cu_error err = {0};
    int rc = upload_validate(b->svc, &cr, &err);
    if (rc != 0) {
        FUZZ_CHECK(rc == CU_EINVAL || rc == CU_ETOOLARGE || rc == CU_ENOTSUP);
        FUZZ_CHECK(err.code == rc && err.msg[0] != '\0' && fuzz_utf8_ok(err.msg));
        return;
    }
    FUZZ_CHECK(oracle_filename_ok(in->filename, in->filename_len));
    FUZZ_CHECK(oracle_storage_ok(in->filename, b->storage.forbidden_name_chars,
                                 b->storage.allows_trailing_dot_space));
    FUZZ_CHECK(in->total_size >= 0 && in->total_size <= MAX_FILE_SIZE);
    int64_t parts = upload_slot_count(in->total_size, CHUNK, false);
    FUZZ_CHECK(parts <= MAX_PARTS && parts * CHUNK >= in->total_size);
    FUZZ_CHECK(!in->webhook_url || webhook_ok(in->webhook_url));
    if (in->webhook_url)
        check_webhook_public(in->webhook_url);
    unsigned char digest[32];
    FUZZ_CHECK(!in->checksum_sha256 ||
               (util_unhex_sha256(in->checksum_sha256, digest) == 0 && b->storage.stage_read));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!backends[0].svc)
        setup();
    seed_init_body in;
    cu_error err = {0};
    int rc = seed_init_parse((const char *)data, size, &in, &err);
    if (rc != 0) {
        FUZZ_CHECK(rc == CU_EINVAL && err.code == CU_EINVAL);
        FUZZ_CHECK(err.msg[0] != '\0');
        FUZZ_CHECK(fuzz_utf8_ok(err.msg));
        FUZZ_CHECK(in.doc == NULL && in.filename == NULL && in.webhook_url == NULL);
        return 0;
    }
    FUZZ_CHECK(json_is_object(in.doc));
    json_t *filename = json_object_get(in.doc, "filename");
    json_t *total_size = json_object_get(in.doc, "total_size");
    json_t *webhook = json_object_get(in.doc, "webhook_url");
    json_t *checksum = json_object_get(in.doc, "checksum_sha256");
    FUZZ_CHECK(json_is_string(filename) && in.filename == json_string_value(filename));
    FUZZ_CHECK(in.filename_len == json_string_length(filename));
    FUZZ_CHECK(in.filename[in.filename_len] == '\0');
    FUZZ_CHECK(json_is_integer(total_size) && in.total_size == json_integer_value(total_size));
    FUZZ_CHECK(in.webhook_url == (json_is_string(webhook) ? json_string_value(webhook) : NULL));
    FUZZ_CHECK(!in.webhook_url || strlen(in.webhook_url) == json_string_length(webhook));
    FUZZ_CHECK(!webhook || json_is_null(webhook) || json_is_string(webhook));
    FUZZ_CHECK(in.checksum_sha256 ==
               (json_is_string(checksum) ? json_string_value(checksum) : NULL));
    FUZZ_CHECK(!checksum || json_is_null(checksum) || json_is_string(checksum));

    /* The filename policy on its own, then the engine's whole validation. */
    oracle_check_filename(in.filename, in.filename_len);
    for (size_t i = 0; i < NBACKENDS; i++)
        check_validate(&backends[i], &in);
    seed_init_body_clear(&in);
    FUZZ_CHECK(in.doc == NULL);
    return 0;
}
