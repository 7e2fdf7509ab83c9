/* flow_params.h - a flow.js or resumable.js chunk's parameters, read and checked.
 *
 * Both libraries name every chunk with the same fields under their own prefix
 * (flowChunkNumber, resumableChunkNumber, ...), in the query string of the chunk test (GET)
 * and in the form fields (or, with `method: 'octet'`, the query string) of the upload (POST).
 * Both cut a file the same way: chunk n (1-based) starts at (n - 1) × chunkSize; by default
 * there are max(floor(totalSize / chunkSize), 1) chunks and the last one takes the remainder
 * (so it may be up to twice the chunk size less a byte); with `forceChunkSize` there are
 * max(ceil(totalSize / chunkSize), 1) and the last one is shorter. TotalChunks tells the two
 * apart, and every other field must agree with it. A pure function of the values, so that
 * the handler and the fuzzer (tests/fuzz/fuzz_flow_params.c) run the same code. */
#ifndef CU_API_FLOW_PARAMS_H
#define CU_API_FLOW_PARAMS_H

#include "base/error.h"
#include "core/filename.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The libraries' default identifier is "<size>-<relative path without punctuation>", so
 * every acceptable filename gives one that fits. */
#define FLOW_IDENTIFIER_MAX (FILENAME_MAX_TOTAL + 32)
/* The longest value of any field (a filename with its directory is the longest). */
#define FLOW_VALUE_MAX (FILENAME_MAX_TOTAL + 32)
/* The most chunks one file may have here (MAX_PARTS may lower it). */
#define FLOW_MAX_CHUNKS 1000000
/* The longest resumableType kept (a MIME type). */
#define FLOW_TYPE_MAX 255

typedef enum { FLOW_DIALECT_FLOW, FLOW_DIALECT_RESUMABLE, FLOW_DIALECTS } flow_dialect;

typedef enum {
    FLOW_FIELD_CHUNK_NUMBER,
    FLOW_FIELD_CHUNK_SIZE,
    FLOW_FIELD_CURRENT_CHUNK_SIZE,
    FLOW_FIELD_TOTAL_SIZE,
    FLOW_FIELD_IDENTIFIER,
    FLOW_FIELD_FILENAME,
    FLOW_FIELD_RELATIVE_PATH,
    FLOW_FIELD_TOTAL_CHUNKS,
    FLOW_FIELD_TYPE, /* resumable.js only: the file's MIME type */
    FLOW_FIELDS
} flow_field;

/* The raw values as received: value[d][f] is NULL when field f of dialect d was not sent,
 * else len[d][f] bytes (which may hold anything, NULs included). */
typedef struct {
    const char *value[FLOW_DIALECTS][FLOW_FIELDS];
    size_t len[FLOW_DIALECTS][FLOW_FIELDS];
} flow_values;

typedef struct {
    flow_dialect dialect;
    int64_t chunk_number; /* as sent: 1 to total_chunks */
    int slot;             /* chunk_number - 1 */
    int64_t chunk_size;
    int64_t current_chunk_size; /* this chunk's bytes */
    int64_t total_size;
    int64_t total_chunks;
    int64_t offset;         /* where this chunk starts in the file */
    bool last_slot_absorbs; /* the default cut (not forceChunkSize) */
    char identifier[FLOW_IDENTIFIER_MAX + 1];
    const char *filename; /* RelativePath when sent and not empty, else Filename; points into
                             the values; not checked here (the engine's filename policy is) */
    size_t filename_len;
    const char *type; /* resumableType when sent and not empty, else NULL; into the values */
    size_t type_len;
} flow_chunk;

/* The name of field f in dialect d ("flowChunkNumber", "resumableType"). */
const char *flow_field_name(flow_dialect d, flow_field f);

/* Whether len bytes at s are a MIME type as kept here: printable ASCII without spaces, at
 * most FLOW_TYPE_MAX characters. */
bool flow_type_ok(const char *s, size_t len);

/* Reads a chunk's parameters. The dialect is the one whose ChunkNumber was sent (both:
 * refused). ChunkNumber, ChunkSize, CurrentChunkSize, TotalSize, Identifier, TotalChunks and
 * a Filename or RelativePath are required; numbers are plain decimal; ChunkSize is at most
 * max_chunk_size; the identifier is 1 to FLOW_IDENTIFIER_MAX characters of
 * [A-Za-z0-9_.:~+=/-]. Returns 0, or CU_EINVAL with a message naming the field. */
int flow_chunk_parse(const flow_values *v, int64_t max_chunk_size, flow_chunk *out, cu_error *err);

/* The size of chunk `slot` (0-based) of a file of total_size bytes in chunks of chunk_size
 * as the libraries cut it (last_slot_absorbs: the default; else forceChunkSize). */
int64_t flow_chunk_bytes(int64_t total_size, int64_t chunk_size, bool last_slot_absorbs,
                         int64_t slot);

#endif
