/* fuzz_flow_params.c - a flow.js / resumable.js chunk's parameters (src/api/flow_params.c).
 *
 * The input: a first byte choosing the largest chunk size (1 byte, 1 MiB or 50 MiB), then
 * lines "name=value" (a value may hold any byte but a newline; a name sent twice: the last
 * counts, as in the handler). Invariants: an accepted chunk names exactly one dialect, and
 * its numbers are the plain decimal values sent; its identifier is the value sent, 1 to
 * FLOW_IDENTIFIER_MAX characters of the allowed set; the chunk count is what one of the
 * libraries' two cuts gives (recomputed here as their JavaScript does), the chunk's offset
 * and size are that cut's, and the engine's slots of such an upload agree byte for byte;
 * the filename is the RelativePath sent, or else the Filename, never empty. A refusal is
 * CU_EINVAL with a message fit for a JSON reply. */
#include "fuzz_common.h"

#include "api/flow_params.h"
#include "core/upload.h"

/* The value of name in the input's lines (the last one), or NULL. */
static const char *lookup(const char *text, size_t size, const char *name, size_t *len)
{
    const char *found = NULL;
    size_t name_len = strlen(name);
    const char *p = text, *end = text + size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = nl ? nl : end;
        if ((size_t)(line_end - p) > name_len && memcmp(p, name, name_len) == 0 &&
            p[name_len] == '=') {
            found = p + name_len + 1;
            *len = (size_t)(line_end - found);
        }
        p = line_end + 1;
    }
    return found;
}

/* A plain decimal of 1 to 18 digits, or -1. */
static int64_t decimal(const char *s, size_t len)
{
    if (!s || len == 0 || len > 18)
        return -1;
    int64_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        n = n * 10 + (s[i] - '0');
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    static const int64_t max_chunks[] = {1, 1 << 20, 50 << 20};
    int64_t max_chunk = max_chunks[data[0] % 3];
    const char *text = (const char *)data + 1;
    size--;
    flow_values v;
    memset(&v, 0, sizeof v);
    for (int d = 0; d < FLOW_DIALECTS; d++)
        for (int f = 0; f < FLOW_FIELDS; f++)
            v.value[d][f] = lookup(text, size, flow_field_name(d, f), &v.len[d][f]);

    flow_chunk c;
    cu_error err = {0};
    int rc = flow_chunk_parse(&v, max_chunk, &c, &err);
    if (rc != 0) {
        FUZZ_CHECK(rc == CU_EINVAL && err.code == CU_EINVAL);
        FUZZ_CHECK(err.msg[0] != '\0' && fuzz_utf8_ok(err.msg));
        return 0;
    }
    flow_dialect d = c.dialect;
    FUZZ_CHECK(v.value[d][FLOW_FIELD_CHUNK_NUMBER] && !v.value[!d][FLOW_FIELD_CHUNK_NUMBER]);
#define SENT(f) decimal(v.value[d][f], v.len[d][f])
    FUZZ_CHECK(c.chunk_number == SENT(FLOW_FIELD_CHUNK_NUMBER));
    FUZZ_CHECK(c.chunk_size == SENT(FLOW_FIELD_CHUNK_SIZE));
    FUZZ_CHECK(c.current_chunk_size == SENT(FLOW_FIELD_CURRENT_CHUNK_SIZE));
    FUZZ_CHECK(c.total_size == SENT(FLOW_FIELD_TOTAL_SIZE));
    FUZZ_CHECK(c.total_chunks == SENT(FLOW_FIELD_TOTAL_CHUNKS));
#undef SENT
    size_t id_len = strlen(c.identifier);
    FUZZ_CHECK(id_len >= 1 && id_len <= FLOW_IDENTIFIER_MAX);
    FUZZ_CHECK(id_len == v.len[d][FLOW_FIELD_IDENTIFIER] &&
               memcmp(c.identifier, v.value[d][FLOW_FIELD_IDENTIFIER], id_len) == 0);
    for (size_t i = 0; i < id_len; i++)
        FUZZ_CHECK(strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:~+=/-",
                          c.identifier[i]));

    /* The libraries' cut (bootstrap and computeEndByte in both). */
    FUZZ_CHECK(c.chunk_size >= 1 && c.chunk_size <= max_chunk);
    bool force = !c.last_slot_absorbs;
    int64_t whole = c.total_size / c.chunk_size;
    int64_t js_count = force ? whole + (c.total_size % c.chunk_size != 0) : whole;
    if (js_count < 1)
        js_count = 1;
    FUZZ_CHECK(c.total_chunks == js_count && c.total_chunks <= FLOW_MAX_CHUNKS);
    int64_t other = !force ? whole + (c.total_size % c.chunk_size != 0) : whole;
    if (other < 1)
        other = 1;
    FUZZ_CHECK(!force || other != js_count); /* equal cuts are read as the default one */
    FUZZ_CHECK(c.chunk_number >= 1 && c.chunk_number <= c.total_chunks);
    FUZZ_CHECK(c.slot == c.chunk_number - 1);
    int64_t start = (c.chunk_number - 1) * c.chunk_size;
    int64_t end =
        c.chunk_number * c.chunk_size < c.total_size ? c.chunk_number * c.chunk_size : c.total_size;
    if (!force && c.total_size - end < c.chunk_size)
        end = c.total_size;
    FUZZ_CHECK(c.offset == start && c.current_chunk_size == end - start && end <= c.total_size);

    /* The engine's slots of such an upload are the same chunks. */
    meta_upload u = {.layout = UPLOAD_LAYOUT_SLOTS,
                     .total_size = c.total_size,
                     .chunk_size = c.chunk_size,
                     .total_parts = (int)c.total_chunks};
    FUZZ_CHECK(upload_slot_count(c.total_size, c.chunk_size, c.last_slot_absorbs) ==
               c.total_chunks);
    FUZZ_CHECK(upload_slot_size(&u, c.slot) == c.current_chunk_size);

    const char *rel = v.value[d][FLOW_FIELD_RELATIVE_PATH];
    size_t rel_len = v.len[d][FLOW_FIELD_RELATIVE_PATH];
    if (rel && rel_len)
        FUZZ_CHECK(c.filename == rel && c.filename_len == rel_len);
    else
        FUZZ_CHECK(c.filename == v.value[d][FLOW_FIELD_FILENAME] &&
                   c.filename_len == v.len[d][FLOW_FIELD_FILENAME]);
    FUZZ_CHECK(c.filename_len > 0);
    if (c.type) {
        FUZZ_CHECK(c.type == v.value[d][FLOW_FIELD_TYPE] && c.type_len > 0);
        FUZZ_CHECK(flow_type_ok(c.type, c.type_len));
        for (size_t i = 0; i < c.type_len; i++)
            FUZZ_CHECK(c.type[i] > ' ' && c.type[i] <= '~');
    }
    return 0;
}
