/* fuzz_filetype.c - kinds of file (src/base/filetype.c): a client's content type read to its
 * essence and matched against ALLOWED_TYPES, a file name against ALLOWED_EXTENSIONS.
 *
 * The input is four fields separated by newlines: a pattern list, an extension list (the
 * operator's, parsed as config_load does), a content type (the client's, any bytes, NULs
 * included) and a file name (the rest). The client's fields are also matched against fixed
 * lists, so that they are exercised when the operator's fields do not parse. Invariants, each
 * against an oracle written here independently: an essence is found exactly when the value is
 * OWS token "/" token OWS [";" ...], it is that, lowercased, and it reads again as itself; a
 * type matches a list exactly when an entry names it, or its type with a star, or two stars;
 * a name matches exactly when its last component is longer than ".ext" and ends with it (any
 * case); every refusal of a list is CU_EINVAL with a message fit for a JSON reply. */
#include "fuzz_common.h"

#include "base/filetype.h"

#include <ctype.h>
#include <strings.h>

static bool oracle_tchar(unsigned char c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* The essence of value (len bytes) by the rule above, or false. */
static bool oracle_essence(const char *value, size_t len, char out[FILETYPE_MAX])
{
    const char *semi = memchr(value, ';', len);
    size_t end = semi ? (size_t)(semi - value) : len, start = 0;
    while (start < end && (value[start] == ' ' || value[start] == '\t'))
        start++;
    while (end > start && (value[end - 1] == ' ' || value[end - 1] == '\t'))
        end--;
    const char *slash = memchr(value + start, '/', end - start);
    if (!slash)
        return false;
    size_t type_len = (size_t)(slash - value) - start, sub_len = end - start - type_len - 1;
    if (type_len == 0 || sub_len == 0 || end - start >= FILETYPE_MAX)
        return false;
    for (size_t i = start; i < end; i++)
        if (value + i != slash && !oracle_tchar((unsigned char)value[i]))
            return false;
    if ((type_len == 1 && value[start] == '*') || (sub_len == 1 && slash[1] == '*'))
        return false;
    for (size_t i = 0; i < end - start; i++)
        out[i] = (char)tolower((unsigned char)value[start + i]);
    out[end - start] = '\0';
    return true;
}

/* An entry of a list without the white space around it (in place). */
static char *oracle_trim(char *p)
{
    while (isspace((unsigned char)*p))
        p++;
    size_t len = strlen(p);
    while (len && isspace((unsigned char)p[len - 1]))
        p[--len] = '\0';
    return p;
}

/* Whether the comma-separated patterns (as accepted by the parser) take essence. */
static bool oracle_pattern_match(const char *patterns, const char *essence)
{
    char *copy = strdup(patterns), *save = NULL;
    FUZZ_CHECK(copy != NULL);
    bool hit = false;
    for (char *e = strtok_r(copy, ",", &save); e && !hit; e = strtok_r(NULL, ",", &save)) {
        char *p = oracle_trim(e);
        size_t len = strlen(p);
        if (!strcmp(p, "*/*"))
            hit = true;
        else if (len > 2 && !strcmp(p + len - 2, "/*"))
            hit = !strncasecmp(essence, p, len - 1);
        else
            hit = !strcasecmp(essence, p);
    }
    free(copy);
    return hit;
}

static bool oracle_extension_match(const char *extensions, const char *name, size_t len)
{
    const char *base = name;
    for (size_t i = 0; i < len; i++)
        if (name[i] == '/')
            base = name + i + 1;
    size_t base_len = len - (size_t)(base - name);
    char *copy = strdup(extensions), *save = NULL;
    FUZZ_CHECK(copy != NULL);
    bool hit = false;
    for (char *entry = strtok_r(copy, ",", &save); entry && !hit;
         entry = strtok_r(NULL, ",", &save)) {
        char *e = oracle_trim(entry);
        size_t elen = strlen(e);
        if (*e == '.')
            e++, elen--;
        if (base_len < elen + 2 || base[base_len - elen - 1] != '.')
            continue;
        hit = true;
        for (size_t i = 0; i < elen && hit; i++)
            hit = base[base_len - elen + i] != '\0' &&
                  tolower((unsigned char)base[base_len - elen + i]) == tolower((unsigned char)e[i]);
    }
    free(copy);
    return hit;
}

static void check_list_refusal(int rc, const cu_error *err, const filetype_list *list)
{
    FUZZ_CHECK(rc == CU_EINVAL && err->code == CU_EINVAL && list == NULL);
    FUZZ_CHECK(err->msg[0] != '\0' && fuzz_utf8_ok(err->msg));
}

/* The client's content type and name against a pattern list and an extension list. */
static void check_against(const char *type_text, const filetype_list *types, const char *ext_text,
                          const filetype_list *exts, const char *ctype, size_t ctype_len,
                          const char *name, size_t name_len)
{
    char got[FILETYPE_MAX], want[FILETYPE_MAX];
    int rc = filetype_essence(ctype, ctype_len, got);
    bool expect = oracle_essence(ctype, ctype_len, want);
    FUZZ_CHECK((rc == 0) == expect);
    if (rc == 0) {
        FUZZ_CHECK(!strcmp(got, want));
        char again[FILETYPE_MAX];
        FUZZ_CHECK(filetype_essence(got, strlen(got), again) == 0 && !strcmp(again, got));
        if (types)
            FUZZ_CHECK(filetype_patterns_match(types, got) == oracle_pattern_match(type_text, got));
    }
    if (exts)
        FUZZ_CHECK(filetype_extensions_match(exts, name, name_len) ==
                   oracle_extension_match(ext_text, name, name_len));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *type_text = fuzz_take_until(&data, &size, '\n');
    char *ext_text = fuzz_take_until(&data, &size, '\n');
    const uint8_t *nl = memchr(data, '\n', size);
    size_t ctype_len = nl ? (size_t)(nl - data) : size;
    char *ctype = fuzz_strndup(data, ctype_len); /* may hold NULs: its length decides */
    data += nl ? ctype_len + 1 : size;
    size -= nl ? ctype_len + 1 : size;
    char *name = fuzz_strndup(data, size);

    filetype_list *types = NULL, *exts = NULL;
    cu_error err = {0};
    int rc = filetype_patterns_parse(type_text, &types, &err);
    if (rc)
        check_list_refusal(rc, &err, types);
    else
        FUZZ_CHECK((types == NULL) == (type_text[0] == '\0'));
    rc = filetype_extensions_parse(ext_text, &exts, &err);
    if (rc)
        check_list_refusal(rc, &err, exts);
    else
        FUZZ_CHECK((exts == NULL) == (ext_text[0] == '\0'));
    check_against(type_text, types, ext_text, exts, ctype, ctype_len, name, size);
    filetype_list_free(types);
    filetype_list_free(exts);

    static const char fixed_types[] = "image/*,video/mp4,*/*", fixed_exts[] = ".png,tar.gz,JPG";
    filetype_list *ft = NULL, *fe = NULL;
    FUZZ_CHECK(filetype_patterns_parse(fixed_types + 0, &ft, &err) == 0);
    FUZZ_CHECK(filetype_extensions_parse(fixed_exts, &fe, &err) == 0);
    check_against(fixed_types, ft, fixed_exts, fe, ctype, ctype_len, name, size);
    filetype_list_free(ft);
    filetype_list_free(fe);
    /* Without a star-star entry, matching means something. */
    FUZZ_CHECK(filetype_patterns_parse("image/*,video/mp4", &ft, &err) == 0);
    check_against("image/*,video/mp4", ft, fixed_exts, NULL, ctype, ctype_len, name, size);
    filetype_list_free(ft);

    free(name);
    free(ctype);
    free(ext_text);
    free(type_text);
    return 0;
}
