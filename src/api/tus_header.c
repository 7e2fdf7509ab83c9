/* tus_header.c - reading Upload-Metadata, Upload-Concat, Upload-Checksum and byte counts. */
#include "api/tus_header.h"

#include "api/seed_path.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Fails with a message that may quote the client's bytes: made UTF-8 for the JSON reply. */
static int refuse(cu_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int refuse(cu_error *err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        util_utf8_scrub(err->msg);
        err->code = CU_EINVAL;
    }
    return CU_EINVAL;
}

int tus_parse_size(const char *value, int64_t *out)
{
    if (!value || !*value)
        return -1;
    int64_t n = 0;
    for (const char *p = value; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        int digit = *p - '0';
        if (n > (INT64_MAX - digit) / 10)
            return -1;
        n = n * 10 + digit;
    }
    *out = n;
    return 0;
}

/* ---- base64 ---- */

static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Decodes len characters of standard base64, padded or not, into out (room for len / 4 * 3 +
 * 2 bytes). Returns the byte count, or -1 when the text is not base64: a character outside the
 * alphabet, '=' before the end, a padded text whose length is not a multiple of 4, or a last
 * group of one character. */
static int64_t b64_decode(const char *in, size_t len, unsigned char *out)
{
    size_t pad = 0;
    while (pad < 2 && len > pad && in[len - 1 - pad] == '=')
        pad++;
    if (pad && len % 4 != 0)
        return -1;
    size_t chars = len - pad;
    if (chars % 4 == 1)
        return -1;
    int64_t n = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < chars; i++) {
        int v = b64_value(in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    return n;
}

/* ---- Upload-Metadata ---- */

void tus_metadata_clear(tus_metadata *m)
{
    for (int i = 0; m->pairs && i < m->n; i++) {
        free(m->pairs[i].key);
        free(m->pairs[i].value);
    }
    free(m->pairs);
    memset(m, 0, sizeof *m);
}

const tus_metadata_pair *tus_metadata_get(const tus_metadata *m, const char *key)
{
    for (int i = 0; i < m->n; i++)
        if (!strcmp(m->pairs[i].key, key))
            return &m->pairs[i];
    return NULL;
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* Reads one element (trimmed, not empty) into the next pair of out. */
static int metadata_pair(const char *el, size_t len, tus_metadata *out, cu_error *err)
{
    size_t key_len = 0;
    while (key_len < len && el[key_len] != ' ')
        key_len++;
    for (size_t i = 0; i < key_len; i++)
        if ((unsigned char)el[i] <= 0x20 || (unsigned char)el[i] >= 0x7f)
            return refuse(err, "Upload-Metadata: a key must be visible ASCII characters");
    const char *value = key_len < len ? el + key_len + 1 : NULL;
    size_t value_len = value ? len - key_len - 1 : 0;
    if (value && memchr(value, ' ', value_len))
        return refuse(err, "Upload-Metadata: the pair of key %.*s has more than one value",
                      (int)(key_len < 64 ? key_len : 64), el);
    for (int i = 0; i < out->n; i++)
        if (strlen(out->pairs[i].key) == key_len && !memcmp(out->pairs[i].key, el, key_len))
            return refuse(err, "Upload-Metadata: the key %.*s is given twice",
                          (int)(key_len < 64 ? key_len : 64), el);
    if (out->n == TUS_METADATA_MAX_PAIRS)
        return refuse(err, "Upload-Metadata: more than %d pairs", TUS_METADATA_MAX_PAIRS);
    tus_metadata_pair *p = &out->pairs[out->n];
    if (!(p->key = strndup(el, key_len)))
        return cu_fail_oom(err);
    out->n++; /* from here the pair is released with the others */
    if (!value)
        return 0;
    if (!(p->value = malloc(value_len / 4 * 3 + 3)))
        return cu_fail_oom(err);
    int64_t n = b64_decode(value, value_len, (unsigned char *)p->value);
    if (n < 0)
        return refuse(err, "Upload-Metadata: the value of %s is not base64", p->key);
    p->value[n] = '\0';
    p->value_len = (size_t)n;
    return 0;
}

int tus_metadata_parse(const char *header, tus_metadata *out, cu_error *err)
{
    memset(out, 0, sizeof *out);
    if (!header)
        return 0;
    size_t total = strlen(header);
    if (total > TUS_METADATA_MAX)
        return refuse(err, "Upload-Metadata is over %d bytes", TUS_METADATA_MAX);
    if (!(out->pairs = calloc(TUS_METADATA_MAX_PAIRS, sizeof *out->pairs)))
        return cu_fail_oom(err);
    int rc = 0;
    for (const char *p = header; rc == 0 && *p;) {
        size_t len = strcspn(p, ",");
        const char *el = p;
        size_t el_len = len;
        while (el_len && is_blank(*el))
            el++, el_len--;
        while (el_len && is_blank(el[el_len - 1]))
            el_len--;
        if (el_len)
            rc = metadata_pair(el, el_len, out, err);
        p += len + (p[len] == ',');
    }
    if (rc)
        tus_metadata_clear(out);
    return rc;
}

/* ---- Upload-Concat ---- */

void tus_concat_clear(tus_concat *c)
{
    free(c->ids);
    memset(c, 0, sizeof *c);
}

/* The upload id a partial upload's URL (len bytes) names, into id. */
static int concat_url_id(const char *url, size_t len, const char *base_path,
                         char id[CU_UUID_LEN + 1], cu_error *err)
{
    const char *path = url;
    size_t path_len = len;
    size_t scheme = len >= 7 && !strncasecmp(url, "http://", 7)    ? 7
                    : len >= 8 && !strncasecmp(url, "https://", 8) ? 8
                                                                   : 0;
    if (scheme) {
        const char *slash = memchr(url + scheme, '/', len - scheme);
        if (!slash || slash == url + scheme)
            return refuse(err, "Upload-Concat: %.*s has no host or no path",
                          (int)(len < 200 ? len : 200), url);
        path = slash;
        path_len = len - (size_t)(slash - url);
    }
    size_t base_len = strlen(base_path);
    bool ok = path[0] == '/' && !memchr(path, '?', path_len) && !memchr(path, '#', path_len) &&
              path_len >= base_len + CU_UUID_LEN &&
              !memcmp(path + path_len - CU_UUID_LEN - base_len, base_path, base_len);
    char tail[CU_UUID_LEN + 1];
    if (ok) {
        memcpy(tail, path + path_len - CU_UUID_LEN, CU_UUID_LEN);
        tail[CU_UUID_LEN] = '\0';
        ok = seed_path_upload_id(tail, id, NULL) == 0;
    }
    if (!ok)
        return refuse(err, "Upload-Concat: %.*s is not the URL of an upload here (%s<id>)",
                      (int)(len < 200 ? len : 200), url, base_path);
    return 0;
}

int tus_concat_parse(const char *header, const char *base_path, tus_concat *out, cu_error *err)
{
    memset(out, 0, sizeof *out);
    if (!header)
        return 0;
    if (!strcmp(header, "partial")) {
        out->kind = TUS_CONCAT_PARTIAL;
        return 0;
    }
    if (strncmp(header, "final;", 6) != 0)
        return refuse(err, "Upload-Concat must be \"partial\" or \"final;\" and the partial "
                           "uploads' URLs");
    int cap = 0;
    int rc = 0;
    for (const char *p = header + 6; rc == 0 && *p;) {
        size_t len = strcspn(p, " ");
        if (len && out->n == TUS_CONCAT_MAX) {
            rc = refuse(err, "Upload-Concat: more than %d partial uploads", TUS_CONCAT_MAX);
            break;
        }
        if (len && out->n == cap) {
            cap = cap ? cap * 2 : 8;
            void *grown = realloc(out->ids, (size_t)cap * sizeof *out->ids);
            if (!grown) {
                rc = cu_fail_oom(err);
                break;
            }
            out->ids = grown;
        }
        if (len && (rc = concat_url_id(p, len, base_path, out->ids[out->n], err)) == 0) {
            for (int i = 0; rc == 0 && i < out->n; i++)
                if (!strcmp(out->ids[i], out->ids[out->n]))
                    rc = refuse(err, "Upload-Concat: upload %s is named twice", out->ids[i]);
            out->n++;
        }
        p += len + (p[len] == ' ');
    }
    if (rc == 0 && out->n == 0)
        rc = refuse(err, "Upload-Concat: a final upload names its partial uploads");
    if (rc) {
        tus_concat_clear(out);
        return rc;
    }
    out->kind = TUS_CONCAT_FINAL;
    return 0;
}

/* ---- Upload-Checksum ---- */

int tus_checksum_parse(const char *header, upload_digest_alg *alg, unsigned char digest[64],
                       cu_error *err)
{
    static const struct {
        const char *name;
        upload_digest_alg alg;
        size_t size;
    } algs[] = {{"sha1", UPLOAD_DIGEST_SHA1, 20},
                {"md5", UPLOAD_DIGEST_MD5, 16},
                {"sha256", UPLOAD_DIGEST_SHA256, 32}};
    const char *space = strchr(header, ' ');
    size_t name_len = space ? (size_t)(space - header) : strlen(header);
    for (size_t i = 0; i < sizeof algs / sizeof *algs; i++) {
        if (strlen(algs[i].name) != name_len || strncasecmp(header, algs[i].name, name_len))
            continue;
        const char *b64 = space ? space + 1 : "";
        size_t b64_len = strlen(b64);
        unsigned char buf[64];
        int64_t n = b64_len <= 64 ? b64_decode(b64, b64_len, buf) : -1; /* <= 48 bytes */
        if (n != (int64_t)algs[i].size)
            return refuse(err,
                          "Upload-Checksum: the %s digest must be %zu bytes in base64 after one "
                          "space",
                          algs[i].name, algs[i].size);
        *alg = algs[i].alg;
        memset(digest, 0, 64);
        memcpy(digest, buf, algs[i].size);
        return 0;
    }
    return refuse(err, "Upload-Checksum: unsupported algorithm %.*s (supported: %s)",
                  (int)(name_len < 32 ? name_len : 32), header, TUS_CHECKSUM_ALGORITHMS);
}
