/* filename_oracle.h - the filename policy restated independently (docs/API.md, filename.h),
 * to hold filename_check and filename_check_for_storage to it on every input: both
 * fuzz_filename and fuzz_init_json (whose filenames go through the same checks) use it. */
#ifndef CU_FUZZ_FILENAME_ORACLE_H
#define CU_FUZZ_FILENAME_ORACLE_H

#include "fuzz_common.h"

#include "core/filename.h"

/* The SMB backend's rules (src/storage/smb.c): Windows refuses these characters, and
 * components ending in a dot or a space. */
#define ORACLE_SMB_FORBIDDEN "\\:*?\"<>|"

/* Whether a component is named the way stored files are, "<uuid>_...": no directory may
 * be (it could stand where another upload's file must go). */
static inline bool oracle_stored_name(const char *comp, size_t clen)
{
    static const char hex[] = "0123456789abcdefABCDEF";
    if (clen < 37 || comp[36] != '_')
        return false;
    for (size_t i = 0; i < 36; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? comp[i] != '-' : !comp[i] || !strchr(hex, comp[i]))
            return false;
    }
    return true;
}

/* Whether the policy allows name: 1 to 1024 bytes, relative, no NUL, control character or
 * backslash, and split on '/' into components that are neither empty, "." nor "..", of at
 * most 255 bytes, the last (stored as "<uuid>_<name>") of at most 218, the others not
 * named like a stored file. */
static inline bool oracle_filename_ok(const char *name, size_t len)
{
    if (len < 1 || len > 1024 || name[0] == '/')
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c < 0x20 || c == 0x7f || c == '\\')
            return false;
    }
    size_t comp = 0; /* start of the current component */
    for (size_t i = 0; i <= len; i++) {
        if (i < len && name[i] != '/')
            continue;
        size_t clen = i - comp;
        bool last = i == len;
        if (clen == 0 || clen > 255 || (last && clen > 218))
            return false;
        if (name[comp] == '.' && (clen == 1 || (clen == 2 && name[comp + 1] == '.')))
            return false;
        if (!last && oracle_stored_name(name + comp, clen))
            return false;
        comp = i + 1;
    }
    return true;
}

/* Whether a name the policy allows also suits a backend with these rules. */
static inline bool oracle_storage_ok(const char *name, const char *forbidden, bool trailing_ok)
{
    for (const char *p = name; *p; p++) {
        if (forbidden && strchr(forbidden, *p))
            return false;
        if (!trailing_ok && (*p == '.' || *p == ' ') && (p[1] == '/' || p[1] == '\0'))
            return false;
    }
    return true;
}

static inline void oracle_check_refusal(int rc, const cu_error *err)
{
    FUZZ_CHECK(rc == CU_EINVAL && err->code == CU_EINVAL);
    FUZZ_CHECK(err->msg[0] != '\0' && fuzz_utf8_ok(err->msg));
}

/* Runs the policy on name (len bytes, read no further) and every backend's rules, and
 * checks each verdict against the oracle. Returns whether filename_check accepted it. */
static inline bool oracle_check_filename(const char *name, size_t len)
{
    cu_error err = {0};
    int rc = filename_check(name, len, &err);
    FUZZ_CHECK((rc == 0) == oracle_filename_ok(name, len));
    if (rc != 0) {
        oracle_check_refusal(rc, &err);
        return false;
    }
    /* What an accepted name guarantees to everything that joins it under a root. */
    FUZZ_CHECK(memchr(name, '\0', len) == NULL);
    char *copy = fuzz_strndup((const uint8_t *)name, len);
    FUZZ_CHECK(strstr(copy, "//") == NULL && copy[len - 1] != '/');
    size_t dir_len;
    const char *base = filename_split(copy, &dir_len);
    FUZZ_CHECK(base >= copy && base < copy + len && *base != '\0' && !strchr(base, '/'));
    FUZZ_CHECK(dir_len == 0 ? base == copy : base == copy + dir_len + 1 && copy[dir_len] == '/');
    FUZZ_CHECK(strlen(base) <= FILENAME_MAX_BASENAME);

    /* Local disk and S3 take every such name; SMB has rules of its own. */
    FUZZ_CHECK(filename_check_for_storage(copy, NULL, true, "local", &err) == 0);
    rc = filename_check_for_storage(copy, ORACLE_SMB_FORBIDDEN, false, "smb", &err);
    FUZZ_CHECK((rc == 0) == oracle_storage_ok(copy, ORACLE_SMB_FORBIDDEN, false));
    if (rc != 0)
        oracle_check_refusal(rc, &err);
    free(copy);
    return true;
}

#endif
