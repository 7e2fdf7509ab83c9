/* unit_helpers.h - small helpers shared by the unit tests (temp dirs, files, cu_error checks).
 *
 * Include after <cmocka.h>'s prerequisites and <cmocka.h> itself. Everything is static inline so
 * that each test executable only keeps what it uses. */
#ifndef CU_UNIT_HELPERS_H
#define CU_UNIT_HELPERS_H

#include <dirent.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Asserts that call returns code and that it left a message in the cu_error err. */
#define assert_cu_fails(call, want, err)                                                           \
    do {                                                                                           \
        memset(&(err), 0, sizeof(err));                                                            \
        int rc_ = (call);                                                                          \
        if (rc_ != (want))                                                                         \
            print_error("%s returned %d (%s), expected %d\n", #call, rc_, (err).msg, (want));      \
        assert_int_equal(rc_, (want));                                                             \
        assert_int_equal((err).code, (want));                                                      \
        assert_true((err).msg[0] != '\0');                                                         \
    } while (0)

/* Asserts that call returns 0, printing the cu_error message when it does not. */
#define assert_cu_ok(call, err)                                                                    \
    do {                                                                                           \
        memset(&(err), 0, sizeof(err));                                                            \
        int rc_ = (call);                                                                          \
        if (rc_ != 0)                                                                              \
            print_error("%s returned %d: %s\n", #call, rc_, (err).msg);                            \
        assert_int_equal(rc_, 0);                                                                  \
    } while (0)

/* A new private directory under $TMPDIR (or /tmp); free with tmpdir_remove. */
static inline char *tmpdir_make(void)
{
    const char *base = getenv("TMPDIR");
    char tmpl[4096];
    snprintf(tmpl, sizeof tmpl, "%s/cu-unit-XXXXXX", base && *base ? base : "/tmp");
    char *dir = mkdtemp(tmpl);
    return dir ? strdup(dir) : NULL;
}

static inline int tmpdir_remove_one(const char *path, const struct stat *sb, int flag,
                                    struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

/* Removes dir and everything below it (without following symlinks), then frees dir. */
static inline void tmpdir_remove(char *dir)
{
    if (!dir)
        return;
    nftw(dir, tmpdir_remove_one, 16, FTW_DEPTH | FTW_PHYS);
    free(dir);
}

/* dir + "/" + name, malloc'ed. */
static inline char *path_join(const char *dir, const char *name)
{
    size_t len = strlen(dir) + 1 + strlen(name) + 1;
    char *p = malloc(len);
    if (p)
        snprintf(p, len, "%s/%s", dir, name);
    return p;
}

/* Reads a whole file; returns the bytes (malloc'ed, NUL-terminated) and its length in *len, or
 * NULL when it cannot be read. */
static inline unsigned char *file_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    unsigned char *buf = malloc(cap + 1);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            cap *= 2;
            unsigned char *grown = realloc(buf, cap + 1);
            if (!grown)
                free(buf);
            buf = grown;
        }
    }
    fclose(f);
    if (buf) {
        buf[n] = '\0';
        *len = n;
    }
    return buf;
}

/* Writes len bytes to a new file at path. Returns 0 or -1. */
static inline int file_write(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t put = fwrite(data, 1, len, f);
    return (fclose(f) == 0 && put == len) ? 0 : -1;
}

/* True when path exists (without following a final symlink). */
static inline int path_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* A variable of a fake environment for config_load (see table_lookup). */
typedef struct {
    const char *name;
    const char *value;
} var;

/* The "environment": a NULL-terminated table of vars; a later entry overrides. */
static inline const char *table_lookup(void *ctx, const char *name)
{
    const char *found = NULL;
    for (const var *v = ctx; v && v->name; v++)
        if (!strcmp(v->name, name))
            found = v->value;
    return found;
}

/* Entries of a directory other than "." and "..", or -1 when it cannot be opened. */
static inline int dir_count(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

#endif
