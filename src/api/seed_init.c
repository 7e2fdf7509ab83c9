/* seed_init.c - reading the init body: JSON, field presence and types. */
#include "api/seed_init.h"

#include "base/util.h"

#include <string.h>

void seed_init_body_clear(seed_init_body *b)
{
    json_decref(b->doc);
    memset(b, 0, sizeof *b);
}

int seed_init_parse(const char *body, size_t len, seed_init_body *out, cu_error *err)
{
    memset(out, 0, sizeof *out);
    json_error_t jerr;
    /* NULs are allowed in strings so that a filename holding one is refused by the filename
     * policy, with its own message, rather than as malformed JSON. */
    json_t *doc = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!doc) {
        /* jansson quotes the body near the error, possibly a piece of a UTF-8 character. */
        util_utf8_scrub(jerr.text);
        return cu_fail(err, CU_EINVAL, "Malformed JSON: %s", jerr.text);
    }
    int rc = 0;
    json_t *filename = json_object_get(doc, "filename");
    json_t *total_size = json_object_get(doc, "total_size");
    json_t *webhook = json_object_get(doc, "webhook_url");
    json_t *checksum = json_object_get(doc, "checksum_sha256");
    json_t *content_type = json_object_get(doc, "content_type");
    if (!json_is_object(doc))
        rc = cu_fail(err, CU_EINVAL, "Request body must be a JSON object");
    else if (!filename || !json_is_string(filename))
        rc = cu_fail(err, CU_EINVAL, "%s",
                     filename ? "filename must be a string" : "Missing field: filename");
    else if (!total_size || !json_is_integer(total_size))
        rc = cu_fail(err, CU_EINVAL, "%s",
                     total_size ? "total_size must be a whole number of bytes"
                                : "Missing field: total_size");
    else if (webhook && !json_is_null(webhook) && !json_is_string(webhook))
        rc = cu_fail(err, CU_EINVAL, "webhook_url must be a string");
    else if (checksum && !json_is_null(checksum) && !json_is_string(checksum))
        rc = cu_fail(err, CU_EINVAL, "checksum_sha256 must be a string");
    else if (content_type && !json_is_null(content_type) &&
             (!json_is_string(content_type) ||
              strlen(json_string_value(content_type)) != json_string_length(content_type)))
        rc = cu_fail(err, CU_EINVAL, "content_type must be a string (a media type)");
    else if (json_is_string(webhook) &&
             strlen(json_string_value(webhook)) != json_string_length(webhook))
        rc = cu_fail(err, CU_EINVAL, "webhook_url must be an http:// or https:// URL");
    if (rc) {
        json_decref(doc);
        return rc;
    }
    out->doc = doc;
    out->filename = json_string_value(filename);
    out->filename_len = json_string_length(filename);
    out->total_size = json_integer_value(total_size);
    out->webhook_url = json_is_string(webhook) ? json_string_value(webhook) : NULL;
    out->checksum_sha256 = json_is_string(checksum) ? json_string_value(checksum) : NULL;
    out->content_type = json_is_string(content_type) ? json_string_value(content_type) : NULL;
    return 0;
}
