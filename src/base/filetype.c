/* filetype.c - media type essences, type patterns and extension lists. */
#include "base/filetype.h"

#include "base/util.h"

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A list of lowercased entries: patterns ("image/png", "image/" for a type's every subtype,
 * "" for anything) or extensions without their dot. */
struct filetype_list {
    size_t n;
    char **entries;
};

void filetype_list_free(filetype_list *list)
{
    if (!list)
        return;
    for (size_t i = 0; i < list->n; i++)
        free(list->entries[i]);
    free(list->entries);
    free(list);
}

/* RFC 9110's tchar: the characters of a token. */
static bool is_tchar(unsigned char c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* The length of the token at s (at most len bytes). */
static size_t token_len(const char *s, size_t len)
{
    size_t n = 0;
    while (n < len && is_tchar((unsigned char)s[n]))
        n++;
    return n;
}

static void lower_copy(char *out, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        out[i] = (char)tolower((unsigned char)s[i]);
    out[len] = '\0';
}

int filetype_essence(const char *value, size_t len, char out[FILETYPE_MAX])
{
    out[0] = '\0';
    if (!value)
        return -1;
    size_t i = 0;
    while (i < len && is_ows(value[i]))
        i++;
    size_t type_start = i, type_len = token_len(value + i, len - i);
    i += type_len;
    if (type_len == 0 || i >= len || value[i] != '/')
        return -1;
    i++;
    size_t sub_start = i, sub_len = token_len(value + i, len - i);
    i += sub_len;
    if (sub_len == 0 || type_len + 1 + sub_len >= FILETYPE_MAX)
        return -1;
    /* A star is a pattern's, not a type's. */
    if ((type_len == 1 && value[type_start] == '*') || (sub_len == 1 && value[sub_start] == '*'))
        return -1;
    while (i < len && is_ows(value[i]))
        i++;
    if (i < len && value[i] != ';') /* the parameters are not the type's business */
        return -1;
    lower_copy(out, value + type_start, type_len);
    out[type_len] = '/';
    lower_copy(out + type_len + 1, value + sub_start, sub_len);
    return 0;
}

/* Splits text at commas into a list, each trimmed entry given to check (which may rewrite
 * it in place, shortening it, and returns 0 or CU_EINVAL with the message in err). */
static int list_parse(const char *text, const char *what, int (*check)(char *entry, cu_error *err),
                      filetype_list **out, cu_error *err)
{
    *out = NULL;
    if (!text || !*text)
        return 0;
    filetype_list *list = calloc(1, sizeof *list);
    size_t cap = 1;
    for (const char *p = text; *p; p++)
        cap += *p == ',';
    if (!list || !(list->entries = calloc(cap, sizeof *list->entries))) {
        free(list);
        return cu_fail_oom(err);
    }
    const char *p = text;
    for (;;) {
        size_t len = strcspn(p, ",");
        size_t start = 0;
        while (start < len && isspace((unsigned char)p[start]))
            start++;
        while (len > start && isspace((unsigned char)p[len - 1]))
            len--;
        char *entry = len > start ? strndup(p + start, len - start) : NULL;
        if (len == start) {
            filetype_list_free(list);
            return cu_fail(err, CU_EINVAL, "an empty %s in the list", what);
        }
        if (!entry) {
            filetype_list_free(list);
            return cu_fail_oom(err);
        }
        int rc = check(entry, err);
        if (rc) {
            free(entry);
            filetype_list_free(list);
            if (err)
                util_utf8_scrub(err->msg); /* it quotes the entry, whatever its bytes */
            return rc;
        }
        list->entries[list->n++] = entry;
        p += strcspn(p, ",");
        if (!*p)
            break;
        p++;
    }
    *out = list;
    return 0;
}

/* A type and subtype stay as they are (lowercased); a type with a star becomes the type and its
 * slash ("image/"), matching every subtype; two stars become "", matching anything. */
static int check_pattern(char *entry, cu_error *err)
{
    size_t len = strlen(entry);
    if (!strcmp(entry, "*/*")) {
        entry[0] = '\0';
        return 0;
    }
    char essence[FILETYPE_MAX];
    if (len >= 2 && !strcmp(entry + len - 2, "/*")) {
        size_t type_len = len - 2;
        if (type_len > 0 && token_len(entry, type_len) == type_len &&
            !memchr(entry, '*', type_len)) {
            lower_copy(entry, entry, type_len + 1);
            return 0;
        }
    } else if (!strchr(entry, '*') && filetype_essence(entry, len, essence) == 0 &&
               strlen(essence) == len) {
        memcpy(entry, essence, len + 1);
        return 0;
    }
    return cu_fail(err, CU_EINVAL,
                   "\"%s\" is not a media type pattern (type/subtype, type/*, or */*)", entry);
}

int filetype_patterns_parse(const char *text, filetype_list **out, cu_error *err)
{
    return list_parse(text, "media type", check_pattern, out, err);
}

bool filetype_patterns_match(const filetype_list *patterns, const char *essence)
{
    if (!patterns || !essence)
        return false;
    for (size_t i = 0; i < patterns->n; i++) {
        const char *p = patterns->entries[i];
        size_t len = strlen(p);
        bool whole_type = len == 0 || p[len - 1] == '/';
        if (whole_type ? !strncmp(essence, p, len) : !strcmp(essence, p))
            return true;
    }
    return false;
}

static int check_extension(char *entry, cu_error *err)
{
    const char *ext = entry[0] == '.' ? entry + 1 : entry;
    size_t len = strlen(ext);
    bool ok = len > 0 && ext[0] != '.' && ext[len - 1] != '.';
    for (size_t i = 0; ok && i < len; i++) {
        unsigned char c = (unsigned char)ext[i];
        ok = isalnum(c) || c == '-' || c == '_' || c == '+' || (c == '.' && ext[i + 1] != '.');
    }
    if (!ok)
        return cu_fail(err, CU_EINVAL,
                       "\"%s\" is not a file name extension (letters, digits, '-', '_', '+' and "
                       "inner dots, with or without a leading dot)",
                       entry);
    lower_copy(entry, ext, len);
    return 0;
}

int filetype_extensions_parse(const char *text, filetype_list **out, cu_error *err)
{
    return list_parse(text, "extension", check_extension, out, err);
}

bool filetype_extensions_match(const filetype_list *extensions, const char *filename, size_t len)
{
    if (!extensions || !filename)
        return false;
    const char *base = filename;
    for (size_t i = 0; i < len; i++)
        if (filename[i] == '/')
            base = filename + i + 1;
    size_t base_len = len - (size_t)(base - filename);
    for (size_t i = 0; i < extensions->n; i++) {
        size_t ext_len = strlen(extensions->entries[i]);
        /* ".ext" after at least one character of the name itself. */
        if (base_len < ext_len + 2)
            continue;
        const char *tail = base + base_len - ext_len;
        if (tail[-1] == '.' && !strncasecmp(tail, extensions->entries[i], ext_len))
            return true;
    }
    return false;
}
