/* filename.c - client file name policy. */
#include "core/filename.h"

#include <ctype.h>
#include <stdbool.h>
#include <string.h>

/* Whether comp (clen bytes) starts with an upload id and '_': how stored files are named
 * ("<id>_<name>"). A directory of that name could stand where another upload's file must go
 * and block its completion for good. */
static bool looks_like_stored_name(const char *comp, size_t clen)
{
    if (clen < 37 || comp[36] != '_')
        return false;
    for (int i = 0; i < 36; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? comp[i] != '-' : !isxdigit((unsigned char)comp[i]))
            return false;
    }
    return true;
}

int filename_check(const char *name, size_t len, cu_error *err)
{
    if (len == 0)
        return cu_fail(err, CU_EINVAL, "filename must not be empty");
    if (len > FILENAME_MAX_TOTAL)
        return cu_fail(err, CU_EINVAL, "filename is %zu bytes, at most %d are allowed", len,
                       FILENAME_MAX_TOTAL);
    if (name[0] == '/')
        return cu_fail(err, CU_EINVAL, "filename must be a relative path, not \"/...\"");
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c == '\0')
            return cu_fail(err, CU_EINVAL, "filename must not contain NUL characters");
        if (c < 0x20 || c == 0x7f)
            return cu_fail(err, CU_EINVAL, "filename must not contain control characters");
        if (c == '\\')
            return cu_fail(err, CU_EINVAL, "filename must not contain backslashes (use /)");
    }
    size_t start = 0;
    while (start <= len) {
        const char *slash = memchr(name + start, '/', len - start);
        size_t end = slash ? (size_t)(slash - name) : len;
        size_t clen = end - start;
        const char *comp = name + start;
        bool last = !slash;
        if (clen == 0)
            return cu_fail(err, CU_EINVAL,
                           last ? "filename must not end with /"
                                : "filename must not contain empty path components (//)");
        if ((clen == 1 && comp[0] == '.') || (clen == 2 && comp[0] == '.' && comp[1] == '.'))
            return cu_fail(err, CU_EINVAL, "filename must not contain \".\" or \"..\" components");
        if (clen > FILENAME_MAX_COMPONENT)
            return cu_fail(err, CU_EINVAL,
                           "filename has a path component of %zu bytes, at most %d "
                           "are allowed",
                           clen, FILENAME_MAX_COMPONENT);
        if (!last && looks_like_stored_name(comp, clen))
            return cu_fail(err, CU_EINVAL,
                           "a directory name must not start with an upload id and \"_\" "
                           "(stored files are named that way)");
        if (last && clen > FILENAME_MAX_BASENAME)
            return cu_fail(err, CU_EINVAL,
                           "file name is %zu bytes, at most %d are allowed (it is stored as "
                           "<file_id>_<name>)",
                           clen, FILENAME_MAX_BASENAME);
        start = end + 1;
        if (last)
            break;
    }
    return 0;
}

int filename_check_for_storage(const char *name, const char *forbidden, bool trailing_dot_space,
                               const char *backend, cu_error *err)
{
    const char *bad = forbidden ? strpbrk(name, forbidden) : NULL;
    if (bad)
        return cu_fail(err, CU_EINVAL, "filename must not contain '%c' with %s storage", *bad,
                       backend);
    if (!trailing_dot_space) {
        for (const char *p = name; *p; p++) {
            bool end = p[1] == '\0' || p[1] == '/';
            if (end && (*p == '.' || *p == ' '))
                return cu_fail(err, CU_EINVAL,
                               "filename components must not end in a dot or a space with %s "
                               "storage",
                               backend);
        }
    }
    return 0;
}

const char *filename_split(const char *name, size_t *dir_len)
{
    const char *slash = strrchr(name, '/');
    *dir_len = slash ? (size_t)(slash - name) : 0;
    return slash ? slash + 1 : name;
}
