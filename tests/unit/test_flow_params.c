/* test_flow_params.c - a flow.js / resumable.js chunk's parameters: both libraries' cuts,
 * both prefixes, and what is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "api/flow_params.h"
#include "unit_helpers.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* Values built field by field (the strings live in the struct). */
typedef struct {
    flow_values v;
    char buf[FLOW_DIALECTS][FLOW_FIELDS][FLOW_VALUE_MAX + 8];
} values;

static void set(values *x, flow_dialect d, flow_field f, const char *s)
{
    if (!s) {
        x->v.value[d][f] = NULL;
        return;
    }
    size_t len = strlen(s);
    assert_true(len < sizeof x->buf[d][f]);
    memcpy(x->buf[d][f], s, len + 1);
    x->v.value[d][f] = x->buf[d][f];
    x->v.len[d][f] = len;
}

static void set_num(values *x, flow_dialect d, flow_field f, int64_t n)
{
    char s[32];
    snprintf(s, sizeof s, "%" PRId64, n);
    set(x, d, f, s);
}

/* The libraries' cut, as their JavaScript computes it (bootstrap, computeEndByte). */
static int64_t js_count(int64_t total, int64_t cs, bool force)
{
    int64_t n = force ? (total + cs - 1) / cs : total / cs;
    return n > 0 ? n : 1;
}

static void js_chunk(int64_t total, int64_t cs, bool force, int64_t offset, int64_t *start,
                     int64_t *end)
{
    *start = offset * cs;
    *end = (offset + 1) * cs < total ? (offset + 1) * cs : total;
    if (total - *end < cs && !force)
        *end = total;
}

static void fill(values *x, flow_dialect d, int64_t n, int64_t cs, int64_t current, int64_t total,
                 int64_t chunks)
{
    memset(x, 0, sizeof *x);
    set_num(x, d, FLOW_FIELD_CHUNK_NUMBER, n);
    set_num(x, d, FLOW_FIELD_CHUNK_SIZE, cs);
    set_num(x, d, FLOW_FIELD_CURRENT_CHUNK_SIZE, current);
    set_num(x, d, FLOW_FIELD_TOTAL_SIZE, total);
    set_num(x, d, FLOW_FIELD_TOTAL_CHUNKS, chunks);
    set(x, d, FLOW_FIELD_IDENTIFIER, "123-abc");
    set(x, d, FLOW_FIELD_FILENAME, "a.bin");
}

static void test_both_cuts_every_chunk(void **state)
{
    (void)state;
    const int64_t sizes[] = {1, 3, 1 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        int64_t cs = sizes[i];
        const int64_t totals[] = {0,          1,      cs - 1,     cs,         cs + 1,
                                  2 * cs - 1, 2 * cs, 2 * cs + 1, 7 * cs / 2, 10 * cs + 7};
        for (size_t t = 0; t < sizeof totals / sizeof *totals; t++)
            for (int force = 0; force < 2; force++) {
                int64_t total = totals[t];
                if (total < 0)
                    continue;
                int64_t chunks = js_count(total, cs, force);
                for (int64_t off = 0; off < chunks; off++) {
                    int64_t start, end;
                    js_chunk(total, cs, force, off, &start, &end);
                    values x;
                    fill(&x, force ? FLOW_DIALECT_RESUMABLE : FLOW_DIALECT_FLOW, off + 1, cs,
                         end - start, total, chunks);
                    flow_chunk c;
                    cu_error err;
                    assert_cu_ok(flow_chunk_parse(&x.v, 1 << 20, &c, &err), err);
                    assert_int_equal(c.slot, off);
                    assert_int_equal(c.offset, start);
                    assert_int_equal(c.current_chunk_size, end - start);
                    assert_int_equal(flow_chunk_bytes(total, cs, c.last_slot_absorbs, off),
                                     end - start);
                    /* A cut that both ways give the same is read as the default one. */
                    assert_int_equal(c.last_slot_absorbs,
                                     !force || js_count(total, cs, false) == chunks);
                    /* One byte more or less than the cut: refused, naming the field. */
                    fill(&x, FLOW_DIALECT_FLOW, off + 1, cs, end - start + 1, total, chunks);
                    assert_cu_fails(flow_chunk_parse(&x.v, 1 << 20, &c, &err), CU_EINVAL, err);
                    assert_non_null(strstr(err.msg, "flowCurrentChunkSize"));
                }
            }
    }
}

static void test_last_chunk_absorbs_up_to_twice(void **state)
{
    (void)state;
    values x;
    flow_chunk c;
    cu_error err;
    int64_t cs = 1 << 20, total = 3 * cs - 1; /* two chunks: 1 MiB and 2 MiB - 1 */
    fill(&x, FLOW_DIALECT_FLOW, 2, cs, 2 * cs - 1, total, 2);
    assert_cu_ok(flow_chunk_parse(&x.v, cs, &c, &err), err);
    assert_true(c.last_slot_absorbs);
    assert_int_equal(c.current_chunk_size, 2 * cs - 1);
    /* With forceChunkSize the same file is three chunks, the last one short. */
    fill(&x, FLOW_DIALECT_FLOW, 3, cs, cs - 1, total, 3);
    assert_cu_ok(flow_chunk_parse(&x.v, cs, &c, &err), err);
    assert_false(c.last_slot_absorbs);
    assert_int_equal(c.offset, 2 * cs);
    /* Any other count is neither cut. */
    fill(&x, FLOW_DIALECT_FLOW, 1, cs, cs, total, 4);
    assert_cu_fails(flow_chunk_parse(&x.v, cs, &c, &err), CU_EINVAL, err);
    assert_non_null(strstr(err.msg, "flowTotalChunks"));
}

static void test_dialects_and_names(void **state)
{
    (void)state;
    values x;
    flow_chunk c;
    cu_error err;
    fill(&x, FLOW_DIALECT_RESUMABLE, 1, 10, 10, 10, 1);
    set(&x, FLOW_DIALECT_RESUMABLE, FLOW_FIELD_RELATIVE_PATH, "dir/sub/a.bin");
    set(&x, FLOW_DIALECT_RESUMABLE, FLOW_FIELD_TYPE, "image/png");
    assert_cu_ok(flow_chunk_parse(&x.v, 100, &c, &err), err);
    assert_int_equal(c.dialect, FLOW_DIALECT_RESUMABLE);
    assert_int_equal(c.filename_len, strlen("dir/sub/a.bin"));
    assert_memory_equal(c.filename, "dir/sub/a.bin", c.filename_len);
    assert_memory_equal(c.type, "image/png", c.type_len);
    assert_string_equal(c.identifier, "123-abc");
    /* An empty relative path falls back to the filename. */
    set(&x, FLOW_DIALECT_RESUMABLE, FLOW_FIELD_RELATIVE_PATH, "");
    assert_cu_ok(flow_chunk_parse(&x.v, 100, &c, &err), err);
    assert_memory_equal(c.filename, "a.bin", c.filename_len);
    set(&x, FLOW_DIALECT_RESUMABLE, FLOW_FIELD_TYPE, "image png");
    assert_cu_fails(flow_chunk_parse(&x.v, 100, &c, &err), CU_EINVAL, err);
    assert_non_null(strstr(err.msg, "resumableType"));
    set(&x, FLOW_DIALECT_RESUMABLE, FLOW_FIELD_TYPE, NULL);
    /* Fields of the other prefix are not read... */
    set(&x, FLOW_DIALECT_FLOW, FLOW_FIELD_TOTAL_SIZE, "99");
    assert_cu_ok(flow_chunk_parse(&x.v, 100, &c, &err), err);
    /* ...but two chunk numbers are ambiguous. */
    set(&x, FLOW_DIALECT_FLOW, FLOW_FIELD_CHUNK_NUMBER, "1");
    assert_cu_fails(flow_chunk_parse(&x.v, 100, &c, &err), CU_EINVAL, err);
    memset(&x, 0, sizeof x);
    assert_cu_fails(flow_chunk_parse(&x.v, 100, &c, &err), CU_EINVAL, err);
    assert_non_null(strstr(err.msg, "before its file part"));
    /* Each required field, missing, is named. */
    const flow_field required[] = {FLOW_FIELD_CHUNK_SIZE,   FLOW_FIELD_CURRENT_CHUNK_SIZE,
                                   FLOW_FIELD_TOTAL_SIZE,   FLOW_FIELD_IDENTIFIER,
                                   FLOW_FIELD_TOTAL_CHUNKS, FLOW_FIELD_FILENAME};
    for (size_t i = 0; i < sizeof required / sizeof *required; i++) {
        fill(&x, FLOW_DIALECT_FLOW, 1, 10, 10, 10, 1);
        set(&x, FLOW_DIALECT_FLOW, required[i], NULL);
        assert_cu_fails(flow_chunk_parse(&x.v, 100, &c, &err), CU_EINVAL, err);
        assert_non_null(strstr(err.msg, flow_field_name(FLOW_DIALECT_FLOW, required[i])));
    }
}

static void test_numbers_and_identifiers(void **state)
{
    (void)state;
    values x;
    flow_chunk c;
    cu_error err;
    const char *bad_numbers[] = {
        "", "-1", "+1", " 1", "1 ", "0x10", "1e3", "1.0", "9999999999999999999"};
    for (size_t i = 0; i < sizeof bad_numbers / sizeof *bad_numbers; i++) {
        fill(&x, FLOW_DIALECT_FLOW, 1, 10, 10, 10, 1);
        set(&x, FLOW_DIALECT_FLOW, FLOW_FIELD_TOTAL_SIZE, bad_numbers[i]);
        assert_cu_fails(flow_chunk_parse(&x.v, 100, &c, &err), CU_EINVAL, err);
    }
    fill(&x, FLOW_DIALECT_FLOW, 1, 101, 10, 10, 1); /* above the largest chunk size */
    assert_cu_fails(flow_chunk_parse(&x.v, 100, &c, &err), CU_EINVAL, err);
    assert_non_null(strstr(err.msg, "flowChunkSize"));
    /* Over FLOW_MAX_CHUNKS chunks. */
    fill(&x, FLOW_DIALECT_FLOW, 1, 1, 1, FLOW_MAX_CHUNKS + 1, FLOW_MAX_CHUNKS + 1);
    assert_cu_fails(flow_chunk_parse(&x.v, 100, &c, &err), CU_EINVAL, err);

    char id[FLOW_IDENTIFIER_MAX + 2];
    memset(id, 'a', sizeof id);
    id[FLOW_IDENTIFIER_MAX] = '\0';
    fill(&x, FLOW_DIALECT_FLOW, 1, 10, 10, 10, 1);
    set(&x, FLOW_DIALECT_FLOW, FLOW_FIELD_IDENTIFIER, id);
    assert_cu_ok(flow_chunk_parse(&x.v, 100, &c, &err), err);
    assert_string_equal(c.identifier, id);
    id[FLOW_IDENTIFIER_MAX] = 'a';
    id[FLOW_IDENTIFIER_MAX + 1] = '\0';
    set(&x, FLOW_DIALECT_FLOW, FLOW_FIELD_IDENTIFIER, id);
    assert_cu_fails(flow_chunk_parse(&x.v, 100, &c, &err), CU_EINVAL, err);
    const char *good_ids[] = {"31457280-dirabin", "9f8e-UUID_x.y:z~+=/-"};
    for (size_t i = 0; i < sizeof good_ids / sizeof *good_ids; i++) {
        set(&x, FLOW_DIALECT_FLOW, FLOW_FIELD_IDENTIFIER, good_ids[i]);
        assert_cu_ok(flow_chunk_parse(&x.v, 100, &c, &err), err);
    }
    const char *bad_ids[] = {"", "a b", "a\"b", "a\\b", "a%b", "caf\xc3\xa9", "a\tb", "a?b"};
    for (size_t i = 0; i < sizeof bad_ids / sizeof *bad_ids; i++) {
        set(&x, FLOW_DIALECT_FLOW, FLOW_FIELD_IDENTIFIER, bad_ids[i]);
        assert_cu_fails(flow_chunk_parse(&x.v, 100, &c, &err), CU_EINVAL, err);
        assert_non_null(strstr(err.msg, "flowIdentifier"));
    }
    /* A NUL inside a value is a byte like any other: not a digit, not an identifier char. */
    set(&x, FLOW_DIALECT_FLOW, FLOW_FIELD_IDENTIFIER, "ab");
    x.buf[FLOW_DIALECT_FLOW][FLOW_FIELD_IDENTIFIER][1] = '\0';
    assert_cu_fails(flow_chunk_parse(&x.v, 100, &c, &err), CU_EINVAL, err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_both_cuts_every_chunk),
        cmocka_unit_test(test_last_chunk_absorbs_up_to_twice),
        cmocka_unit_test(test_dialects_and_names),
        cmocka_unit_test(test_numbers_and_identifiers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
