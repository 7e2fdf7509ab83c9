/* filetype.h - which kinds of file are allowed: media type patterns and name extensions.
 *
 * The operator lists what is allowed (ALLOWED_TYPES: image types and video/mp4, say;
 * ALLOWED_EXTENSIONS: ".jpg,png"); clients send a content type (a header, a form field, tus
 * metadata), read here to its essence: "Image/PNG; charset=x" is "image/png" (RFC 9110,
 * section 8.3.1). Pure functions: the engine calls them at creation and on what libmagic reports; a
 * fuzzer calls them on arbitrary bytes. Matching is case-insensitive throughout. */
#ifndef CU_FILETYPE_H
#define CU_FILETYPE_H

#include "base/error.h"

#include <stdbool.h>
#include <stddef.h>

/* Room for an essence: type "/" subtype (RFC 6838 allows 127 characters each), NUL. */
#define FILETYPE_MAX 256

typedef struct filetype_list filetype_list;

/* Reads the essence of a content type of len bytes (not NUL-terminated): a type and a subtype,
 * each a token (RFC 9110 tchar, and not "*"), lowercased, without the parameters and the
 * whitespace around it, into out (FILETYPE_MAX bytes). Returns 0, or -1 when value is not a
 * media type. */
int filetype_essence(const char *value, size_t len, char out[FILETYPE_MAX]);

/* Parses a comma-separated list of media type patterns: "type/subtype", a type with a star for
 * its subtype (any subtype), or a star for both (anything); spaces around an entry are ignored.
 * NULL or "" gives *out = NULL (no list). On a bad entry returns CU_EINVAL naming it. Free with
 * filetype_list_free. */
int filetype_patterns_parse(const char *text, filetype_list **out, cu_error *err);
/* Whether an essence (as filetype_essence makes it) matches one of the patterns. */
bool filetype_patterns_match(const filetype_list *patterns, const char *essence);

/* Parses a comma-separated list of extensions, with or without their dot (".jpg", "tar.gz");
 * letters, digits, '-', '_', '+' and inner dots only. NULL or "" gives *out = NULL. */
int filetype_extensions_parse(const char *text, filetype_list **out, cu_error *err);
/* Whether the last component of a file name (len bytes, may carry a directory) ends in one of
 * the extensions, after at least one other character ("a.png", not ".png"). */
bool filetype_extensions_match(const filetype_list *extensions, const char *filename, size_t len);

void filetype_list_free(filetype_list *list);

#endif
