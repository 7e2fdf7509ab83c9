/* fuzz_init_json.c - the body of POST /upload/init (src/api/seed_init.c), then the checks
 * its values go through at init that need no storage: the filename policy and the digest.
 *
 * Invariants: a refusal is CU_EINVAL with a message that can be sent as a JSON string
 * (valid UTF-8) and leaves nothing allocated; an accepted body is an object whose fields
 * are what the parser says they are (same pointers, lengths and values), the filename is
 * NUL-terminated after its length, and a webhook_url holds no NUL. */
#include "filename_oracle.h"

#include "api/seed_init.h"
#include "base/util.h"

#include <jansson.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
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

    /* What upload_validate does next with the values, where it needs no storage. */
    oracle_check_filename(in.filename, in.filename_len);
    unsigned char digest[32];
    if (in.checksum_sha256 && util_unhex_sha256(in.checksum_sha256, digest) == 0) {
        char hex[CU_SHA256_HEX_LEN + 1];
        util_hex(digest, sizeof digest, hex);
        FUZZ_CHECK(strlen(in.checksum_sha256) == CU_SHA256_HEX_LEN);
        for (int i = 0; i < CU_SHA256_HEX_LEN; i++)
            FUZZ_CHECK(hex[i] == (in.checksum_sha256[i] | 0x20)); /* hex, either case */
    }
    seed_init_body_clear(&in);
    FUZZ_CHECK(in.doc == NULL);
    return 0;
}
