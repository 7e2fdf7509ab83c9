/* fuzz_file_link.c - what the files API reads of the client besides the download headers:
 * a signed link's query (src/api/file_link.c), the body of POST /api/files/{id}/link, and
 * the listing's limit, cursor and prefix (src/api/files_query.c).
 *
 * Input: a time (5 bytes), then newline-separated values: a link's expires, its signature,
 * a link request body, limit, cursor, prefix. Invariants: a link is accepted only with the
 * signature this key makes for that id and expiry, and only before it; a link signed here
 * is accepted until its expiry, and not with any one character changed; a request body
 * accepted gives 1 to 7 days; a listing query accepted has a limit of 1 to 1000, a cursor
 * naming a place in the order of completions, a prefix that is a directory name followed by '/',
 * and every cursor made from a file reads back as that file; every refusal has a JSON-safe message.
 */
#include "fuzz_common.h"

#include "api/file_link.h"
#include "api/files_query.h"
#include "base/util.h"

static const char id[] = "3f0c8a52-1d2e-4b7a-9c6d-5e4f3a2b1c0d";

static void check_refusal(int rc, const cu_error *err, int code)
{
    FUZZ_CHECK(rc == code && err->code == code);
    FUZZ_CHECK(err->msg[0] != '\0' && fuzz_utf8_ok(err->msg));
}

static void check_link(const unsigned char key[FILE_LINK_KEY_LEN], const char *expires,
                       const char *signature, int64_t now)
{
    cu_error err = {0};
    int rc = file_link_verify(key, id, expires, signature, now, &err);
    if (rc != 0) {
        check_refusal(rc, &err, CU_EFORBIDDEN);
    } else {
        int64_t when = 0;
        FUZZ_CHECK(util_parse_i64(expires, &when) == 0 && when > now);
        char want[FILE_LINK_SIG_LEN + 1];
        file_link_sign(key, id, when, want);
        FUZZ_CHECK(!strcmp(want, signature));
    }
    /* A link made here: valid until its expiry, with every byte of its signature. */
    int64_t exp = now + 1 + (int64_t)(strlen(signature) % 1000);
    char sig[FILE_LINK_SIG_LEN + 1], text[24];
    file_link_sign(key, id, exp, sig);
    snprintf(text, sizeof text, "%lld", (long long)exp);
    FUZZ_CHECK(file_link_verify(key, id, text, sig, now, &err) == 0);
    FUZZ_CHECK(file_link_verify(key, id, text, sig, exp, &err) == CU_EFORBIDDEN);
    size_t at = strlen(expires) % FILE_LINK_SIG_LEN;
    sig[at] = sig[at] == 'A' ? 'B' : 'A';
    FUZZ_CHECK(file_link_verify(key, id, text, sig, now, &err) == CU_EFORBIDDEN);
}

static void check_query(const char *limit, const char *cursor, const char *prefix)
{
    files_query q;
    cu_error err = {0};
    int rc = files_query_parse(limit, cursor, prefix, "owner", &q, &err);
    if (rc != 0) {
        check_refusal(rc, &err, CU_EINVAL);
        return;
    }
    FUZZ_CHECK(q.q.limit >= 1 && q.q.limit <= FILES_MAX_LIMIT);
    FUZZ_CHECK(!strcmp(q.q.owner, "owner"));
    FUZZ_CHECK((cursor != NULL) == (q.q.after_seq != 0));
    FUZZ_CHECK(q.q.after_seq >= 0);
    if (q.q.prefix) {
        size_t len = strlen(q.q.prefix);
        FUZZ_CHECK(len >= 2 && q.q.prefix[len - 1] == '/' && q.q.prefix[0] != '/');
        FUZZ_CHECK(filename_check(q.q.prefix, len - 1, &err) == 0);
    }
    /* A cursor made from a file names that file. */
    meta_upload u = {.completed_seq =
                         q.q.after_seq ? q.q.after_seq : 1 + (int64_t)strlen(prefix ? prefix : "")};
    char made[FILES_CURSOR_LEN];
    files_query_cursor(&u, made);
    files_query back;
    FUZZ_CHECK(files_query_parse(NULL, made, NULL, NULL, &back, &err) == 0);
    FUZZ_CHECK(back.q.after_seq == u.completed_seq);
    FUZZ_CHECK(back.q.limit == FILES_DEFAULT_LIMIT && !back.q.prefix);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int64_t now = (int64_t)(fuzz_take_u64(&data, &size, 5) % UINT64_C(100000000000));
    char *v[6];
    for (int i = 0; i < 6; i++)
        v[i] = fuzz_take_until(&data, &size, '\n');
    unsigned char key[FILE_LINK_KEY_LEN];
    file_link_key("fuzz-jwt-secret-0123456789", key);
    check_link(key, v[0], v[1], now);
    cu_error err = {0};
    FUZZ_CHECK(file_link_verify(key, id, NULL, v[1], now, &err) == CU_EFORBIDDEN);
    int64_t expires_in = 0;
    int rc = file_link_parse_request(v[2], strlen(v[2]), &expires_in, &err);
    if (rc == 0)
        FUZZ_CHECK(expires_in >= 1 && expires_in <= FILE_LINK_MAX_SECONDS);
    else
        check_refusal(rc, &err, CU_EINVAL);
    check_query(v[3][0] ? v[3] : NULL, v[4][0] ? v[4] : NULL, v[5][0] ? v[5] : NULL);
    for (int i = 0; i < 6; i++)
        free(v[i]);
    return 0;
}
