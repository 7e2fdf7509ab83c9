/* flow_params.c - a flow.js or resumable.js chunk's parameters. */
#include "api/flow_params.h"

#include "core/upload.h"

#include <assert.h>
#include <string.h>

const char *flow_field_name(flow_dialect d, flow_field f)
{
    static const char *const names[FLOW_DIALECTS][FLOW_FIELDS] = {
        {"flowChunkNumber", "flowChunkSize", "flowCurrentChunkSize", "flowTotalSize",
         "flowIdentifier", "flowFilename", "flowRelativePath", "flowTotalChunks", "flowType"},
        {"resumableChunkNumber", "resumableChunkSize", "resumableCurrentChunkSize",
         "resumableTotalSize", "resumableIdentifier", "resumableFilename", "resumableRelativePath",
         "resumableTotalChunks", "resumableType"},
    };
    assert(d >= 0 && d < FLOW_DIALECTS && f >= 0 && f < FLOW_FIELDS);
    return names[d][f];
}

/* A plain decimal number of at most 18 digits (no sign, no space), so it fits an int64_t. */
static int parse_count(const flow_values *v, flow_dialect d, flow_field f, int64_t *out,
                       cu_error *err)
{
    const char *s = v->value[d][f];
    size_t len = v->len[d][f];
    if (!s)
        return cu_fail(err, CU_EINVAL, "Missing %s", flow_field_name(d, f));
    if (len == 0 || len > 18)
        return cu_fail(err, CU_EINVAL, "%s must be a whole number of at most 18 digits",
                       flow_field_name(d, f));
    int64_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return cu_fail(err, CU_EINVAL, "%s must be a whole number of at most 18 digits",
                           flow_field_name(d, f));
        n = n * 10 + (s[i] - '0');
    }
    *out = n;
    return 0;
}

static bool identifier_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("_.:~+=/-", c));
}

bool flow_type_ok(const char *s, size_t len)
{
    if (len > FLOW_TYPE_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (s[i] <= ' ' || s[i] > '~')
            return false;
    return true;
}

int64_t flow_chunk_bytes(int64_t total_size, int64_t chunk_size, bool last_slot_absorbs,
                         int64_t slot)
{
    assert(total_size >= 0 && chunk_size > 0 && slot >= 0);
    int64_t n = upload_slot_count(total_size, chunk_size, last_slot_absorbs);
    assert(slot < n || (n == 0 && slot == 0));
    int64_t start = slot * chunk_size;
    if (last_slot_absorbs)
        return slot == n - 1 ? total_size - start : chunk_size;
    return total_size - start < chunk_size ? total_size - start : chunk_size;
}

int flow_chunk_parse(const flow_values *v, int64_t max_chunk_size, flow_chunk *out, cu_error *err)
{
    memset(out, 0, sizeof *out);
    bool flow = v->value[FLOW_DIALECT_FLOW][FLOW_FIELD_CHUNK_NUMBER] != NULL;
    bool resumable = v->value[FLOW_DIALECT_RESUMABLE][FLOW_FIELD_CHUNK_NUMBER] != NULL;
    if (flow && resumable)
        return cu_fail(err, CU_EINVAL,
                       "Send flowChunkNumber or resumableChunkNumber (and their fields), not both");
    if (!flow && !resumable)
        return cu_fail(err, CU_EINVAL,
                       "Missing flowChunkNumber (or resumableChunkNumber): the chunk's fields "
                       "must come before its file part, or in the query string");
    flow_dialect d = flow ? FLOW_DIALECT_FLOW : FLOW_DIALECT_RESUMABLE;
    out->dialect = d;
    int rc;
    if ((rc = parse_count(v, d, FLOW_FIELD_CHUNK_NUMBER, &out->chunk_number, err)) != 0 ||
        (rc = parse_count(v, d, FLOW_FIELD_CHUNK_SIZE, &out->chunk_size, err)) != 0 ||
        (rc = parse_count(v, d, FLOW_FIELD_CURRENT_CHUNK_SIZE, &out->current_chunk_size, err)) !=
            0 ||
        (rc = parse_count(v, d, FLOW_FIELD_TOTAL_SIZE, &out->total_size, err)) != 0 ||
        (rc = parse_count(v, d, FLOW_FIELD_TOTAL_CHUNKS, &out->total_chunks, err)) != 0)
        return rc;

    const char *id = v->value[d][FLOW_FIELD_IDENTIFIER];
    size_t id_len = v->len[d][FLOW_FIELD_IDENTIFIER];
    if (!id)
        return cu_fail(err, CU_EINVAL, "Missing %s", flow_field_name(d, FLOW_FIELD_IDENTIFIER));
    if (id_len == 0 || id_len > FLOW_IDENTIFIER_MAX)
        return cu_fail(err, CU_EINVAL, "%s must be 1 to %d characters",
                       flow_field_name(d, FLOW_FIELD_IDENTIFIER), FLOW_IDENTIFIER_MAX);
    for (size_t i = 0; i < id_len; i++)
        if (!identifier_char(id[i]))
            return cu_fail(err, CU_EINVAL, "%s may hold only letters, digits and _ . : ~ + = / -",
                           flow_field_name(d, FLOW_FIELD_IDENTIFIER));
    memcpy(out->identifier, id, id_len);
    out->identifier[id_len] = '\0';

    const char *path = v->value[d][FLOW_FIELD_RELATIVE_PATH];
    size_t path_len = v->len[d][FLOW_FIELD_RELATIVE_PATH];
    if (path && path_len) {
        out->filename = path;
        out->filename_len = path_len;
    } else if (v->value[d][FLOW_FIELD_FILENAME] && v->len[d][FLOW_FIELD_FILENAME]) {
        out->filename = v->value[d][FLOW_FIELD_FILENAME];
        out->filename_len = v->len[d][FLOW_FIELD_FILENAME];
    } else {
        return cu_fail(err, CU_EINVAL, "Missing %s (or %s)",
                       flow_field_name(d, FLOW_FIELD_FILENAME),
                       flow_field_name(d, FLOW_FIELD_RELATIVE_PATH));
    }
    const char *type = v->value[d][FLOW_FIELD_TYPE];
    size_t type_len = v->len[d][FLOW_FIELD_TYPE];
    if (type && type_len) {
        if (!flow_type_ok(type, type_len))
            return cu_fail(err, CU_EINVAL,
                           "%s must be a MIME type (printable ASCII, at most %d characters)",
                           flow_field_name(d, FLOW_FIELD_TYPE), FLOW_TYPE_MAX);
        out->type = type;
        out->type_len = type_len;
    }

    if (out->chunk_size < 1 || out->chunk_size > max_chunk_size)
        return cu_fail(err, CU_EINVAL, "%s must be 1 to %lld bytes",
                       flow_field_name(d, FLOW_FIELD_CHUNK_SIZE), (long long)max_chunk_size);
    /* The two ways the libraries cut a file; equal counts mean equal chunks. */
    int64_t whole = out->total_size / out->chunk_size;
    int64_t by_default = whole > 0 ? whole : 1;
    int64_t forced = whole + (out->total_size % out->chunk_size != 0);
    if (forced < 1)
        forced = 1;
    if (out->total_chunks != by_default && out->total_chunks != forced)
        return cu_fail(err, CU_EINVAL,
                       "%s is %lld, but %lld bytes in chunks of %lld make %lld chunks (or %lld "
                       "with forceChunkSize)",
                       flow_field_name(d, FLOW_FIELD_TOTAL_CHUNKS), (long long)out->total_chunks,
                       (long long)out->total_size, (long long)out->chunk_size,
                       (long long)by_default, (long long)forced);
    if (out->total_chunks > FLOW_MAX_CHUNKS)
        return cu_fail(err, CU_EINVAL, "%lld chunks are too many: at most %d per file",
                       (long long)out->total_chunks, FLOW_MAX_CHUNKS);
    out->last_slot_absorbs = out->total_chunks == by_default;
    if (out->chunk_number < 1 || out->chunk_number > out->total_chunks)
        return cu_fail(err, CU_EINVAL, "%s must be 1 to %lld",
                       flow_field_name(d, FLOW_FIELD_CHUNK_NUMBER), (long long)out->total_chunks);
    out->slot = (int)(out->chunk_number - 1);
    out->offset = (int64_t)out->slot * out->chunk_size;
    int64_t expected =
        flow_chunk_bytes(out->total_size, out->chunk_size, out->last_slot_absorbs, out->slot);
    if (out->current_chunk_size != expected)
        return cu_fail(err, CU_EINVAL, "%s of chunk %lld must be %lld bytes, not %lld",
                       flow_field_name(d, FLOW_FIELD_CURRENT_CHUNK_SIZE),
                       (long long)out->chunk_number, (long long)expected,
                       (long long)out->current_chunk_size);
    return 0;
}
