/* files_query.c - reading the listing's query. */
#include "api/files_query.h"

#include "base/util.h"

#include <stdio.h>
#include <string.h>

/* A whole number of 1 to 18 digits and nothing else. */
static bool read_count(const char *s, int64_t *out)
{
    size_t len = strlen(s);
    if (len == 0 || len > 18)
        return false;
    for (size_t i = 0; i < len; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return util_parse_i64(s, out) == 0;
}

int files_query_parse(const char *limit, const char *cursor, const char *prefix, const char *owner,
                      files_query *out, cu_error *err)
{
    memset(out, 0, sizeof *out);
    out->q.owner = owner;
    out->q.limit = FILES_DEFAULT_LIMIT;
    int64_t n = 0;
    if (limit && (!read_count(limit, &n) || n < 1 || n > FILES_MAX_LIMIT))
        return cu_fail(err, CU_EINVAL, "limit must be a whole number from 1 to %d",
                       FILES_MAX_LIMIT);
    if (limit)
        out->q.limit = (int)n;
    if (cursor &&
        (cursor[0] != 'c' || !read_count(cursor + 1, &out->q.after_seq) || out->q.after_seq < 1))
        return cu_fail(err, CU_EINVAL,
                       "Invalid cursor: pass the next_cursor of an earlier page as it was");
    if (prefix) {
        while (*prefix == '/')
            prefix++;
        size_t len = strlen(prefix);
        while (len > 0 && prefix[len - 1] == '/')
            len--;
        if (len > 0) {
            cu_error why;
            if (filename_check(prefix, len, &why) != 0)
                return cu_fail(err, CU_EINVAL, "prefix is not a directory name: %s", why.msg);
            snprintf(out->prefix, sizeof out->prefix, "%.*s/", (int)len, prefix);
            out->q.prefix = out->prefix;
        }
    }
    return 0;
}

void files_query_cursor(const meta_upload *u, char out[FILES_CURSOR_LEN])
{
    snprintf(out, FILES_CURSOR_LEN, "c%lld", (long long)u->completed_seq);
}
