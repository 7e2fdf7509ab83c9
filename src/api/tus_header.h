/* tus_header.h - the tus request headers that carry structure, read by pure functions.
 *
 * Upload-Metadata (comma-separated "key base64value" pairs), Upload-Concat ("partial", or
 * "final;" and the partial uploads' URLs), Upload-Checksum ("<algorithm> <base64 digest>")
 * and the byte counts of Upload-Offset and Upload-Length. Kept apart from the handler
 * (tus.c) so that the bytes a client sends are read by code the handler and the fuzzers
 * (tests/fuzz/fuzz_tus_*.c) share. Every refusal is CU_EINVAL with a message fit for the
 * client (tus answers 400), UTF-8 whatever the header held. */
#ifndef CU_API_TUS_HEADER_H
#define CU_API_TUS_HEADER_H

#include "base/error.h"
#include "base/util.h"
#include "core/upload.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TUS_METADATA_MAX 16384    /* bytes of one Upload-Metadata header */
#define TUS_METADATA_MAX_PAIRS 64 /* pairs in it */
#define TUS_CONCAT_MAX 1000       /* partial uploads one final upload joins */
/* What Tus-Checksum-Algorithm advertises: the algorithms tus_checksum_parse takes. */
#define TUS_CHECKSUM_ALGORITHMS "sha1,md5,sha256"

typedef struct {
    char *key;        /* 1 or more visible ASCII characters, neither ',' nor ' ' */
    char *value;      /* decoded (malloc'ed, a NUL after value_len bytes, which may hold
                         NULs); NULL when the pair has no value */
    size_t value_len; /* 0 for none or an empty one */
} tus_metadata_pair;

typedef struct {
    tus_metadata_pair *pairs; /* in the header's order, keys unique */
    int n;
} tus_metadata;

/* Reads an Upload-Metadata header (NULL: none, no pairs). Elements are separated by commas,
 * spaces and tabs around them are dropped and empty ones skipped; each is a key, optionally
 * a space and its value in base64 (standard alphabet, padding optional). A repeated key, a
 * key with other characters, a value that is not base64, more than TUS_METADATA_MAX bytes or
 * TUS_METADATA_MAX_PAIRS pairs are refused. On success out must be released with
 * tus_metadata_clear; on failure it holds nothing. */
int tus_metadata_parse(const char *header, tus_metadata *out, cu_error *err);
/* The pair named key (compared exactly), or NULL. */
const tus_metadata_pair *tus_metadata_get(const tus_metadata *m, const char *key);
void tus_metadata_clear(tus_metadata *m);

typedef enum { TUS_CONCAT_NONE, TUS_CONCAT_PARTIAL, TUS_CONCAT_FINAL } tus_concat_kind;

typedef struct {
    tus_concat_kind kind;
    int n;                        /* FINAL: how many partial uploads it joins (1 or more) */
    char (*ids)[CU_UUID_LEN + 1]; /* FINAL: their upload ids, in order, lowercase (malloc'ed) */
} tus_concat;

/* Reads an Upload-Concat header (NULL: NONE): "partial", or "final;" followed by the partial
 * uploads' URLs separated by spaces. A URL is absolute (http:// or https://, any host) or a
 * path; its path must end in base_path and a UUID (a proxy may have put a prefix before
 * base_path), with no query or fragment. The same upload twice, no URL, or more than
 * TUS_CONCAT_MAX are refused. Release with tus_concat_clear (on failure out holds nothing). */
int tus_concat_parse(const char *header, const char *base_path, tus_concat *out, cu_error *err);
void tus_concat_clear(tus_concat *c);

/* Reads an Upload-Checksum header: an algorithm of TUS_CHECKSUM_ALGORITHMS (in any case), one
 * space, and the digest in base64 (exactly that algorithm's length). Fills *alg and the
 * digest's first bytes (16 for md5, 20 for sha1, 32 for sha256). */
int tus_checksum_parse(const char *header, upload_digest_alg *alg, unsigned char digest[64],
                       cu_error *err);

/* A byte count (Upload-Offset, Upload-Length): decimal digits only, at most INT64_MAX.
 * Returns 0, or -1 for anything else. */
int tus_parse_size(const char *value, int64_t *out);

#endif
