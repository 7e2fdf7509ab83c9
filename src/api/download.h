/* download.h - the pure parts of serving a file over HTTP: byte ranges, conditional
 * requests, HTTP dates, entity tags and Content-Disposition (RFC 9110, RFC 6266, RFC 8187).
 *
 * No I/O and no request: header values in, decisions out, so that every rule can be tested
 * and fuzzed on its own (tests/fuzz/fuzz_download.c). Every function takes NULL for a header
 * the request did not carry. Representations here are immutable finished files, so one strong
 * entity tag and one modification time describe each for good. */
#ifndef CU_API_DOWNLOAD_H
#define CU_API_DOWNLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What a Range header asks of a representation of a given size. */
typedef enum {
    DOWNLOAD_RANGE_NONE,     /* no Range, or one to ignore (another unit, malformed): all of it */
    DOWNLOAD_RANGE_SINGLE,   /* one satisfiable range: 206 with offset and length */
    DOWNLOAD_RANGE_MULTIPLE, /* several ranges, at least one satisfiable: answered with all of
                                it (200), as RFC 9110 lets a server do, rather than multipart */
    DOWNLOAD_RANGE_UNSATISFIABLE /* no range overlaps the representation: 416 */
} download_range_kind;

typedef struct {
    download_range_kind kind;
    int64_t offset, length; /* DOWNLOAD_RANGE_SINGLE: the bytes to send */
} download_range;

/* Ranges read from one header at most; a longer list is ignored (all of it is sent). */
#define DOWNLOAD_MAX_RANGES 64

/* Reads "bytes=a-b", "bytes=a-" and "bytes=-n" (and lists of them) against size bytes. A
 * last position past the end is cut to the end; "bytes=-n" with n above size is all of it.
 * For an empty representation only a suffix range is satisfiable, and it is all of it (0
 * bytes), so it is answered as NONE. */
download_range download_range_parse(const char *header, int64_t size);

/* The outcome of a request's preconditions (RFC 9110 section 13.2.2, for GET and HEAD). */
typedef enum {
    DOWNLOAD_PROCEED,
    DOWNLOAD_NOT_MODIFIED,       /* 304 */
    DOWNLOAD_PRECONDITION_FAILED /* 412 */
} download_verdict;

typedef struct {
    const char *if_match;
    const char *if_none_match;
    const char *if_modified_since;
    const char *if_unmodified_since;
} download_conditions;

/* Evaluates the preconditions in RFC 9110's order against the representation's strong etag
 * (quoted, as sent in ETag) and last_modified (seconds since the epoch): If-Match (strong
 * comparison), else If-Unmodified-Since; then If-None-Match (weak comparison), else
 * If-Modified-Since. A date that does not parse is ignored, as the RFC says. */
download_verdict download_evaluate(const download_conditions *c, const char *etag,
                                   int64_t last_modified);

/* Whether a Range may be honoured under If-Range (true when if_range is NULL): an entity tag
 * must match etag strongly, a date must equal last_modified exactly; anything else means
 * the whole representation is sent. */
bool download_if_range(const char *if_range, const char *etag, int64_t last_modified);

/* Whether the entity-tag list (If-Match, If-None-Match: "*" or 1#entity-tag) holds etag,
 * compared weakly (W/ ignored) or strongly (a weak tag never matches). A malformed list
 * matches nothing. */
bool download_etag_listed(const char *list, const char *etag, bool weak);

/* Parses an HTTP-date in any of the three forms a recipient must accept (IMF-fixdate
 * "Sun, 06 Nov 1994 08:49:37 GMT", RFC 850 "Sunday, 06-Nov-94 08:49:37 GMT", asctime "Sun Nov
 *  6 08:49:37 1994"). Returns 0 with *out seconds since the epoch, or -1. */
int download_date_parse(const char *s, int64_t *out);
/* Formats t as an IMF-fixdate into out[30]. */
void download_date_format(int64_t t, char out[30]);

/* The strong entity tag of a finished file (quoted, into out[35]): a digest of what makes the
 * file itself (its id, size and completion time), so it is the same on every request and
 * every server sharing the store, and different for every other file. */
void download_etag(const char *file_id, int64_t size, int64_t completed_at, char out[35]);

/* Room for download_disposition's output for any name of up to name_len bytes. */
#define DOWNLOAD_DISPOSITION_CAP(name_len) ((name_len)*4 + 64)

/* Content-Disposition for a download of a file called name (RFC 6266): attachment; an ASCII
 * fallback filename="..." (every byte outside printable ASCII, and every '"', '\\' and '%',
 * as '_'; a UTF-8 sequence as one '_') and, when that differs from name, filename*=UTF-8''
 * with name percent-encoded (RFC 8187). out must hold DOWNLOAD_DISPOSITION_CAP(strlen(name))
 * bytes. */
void download_disposition(const char *name, char *out, size_t cap);

/* The Content-Type to send for a stored, client-declared type: declared when it is a
 * well-formed media type (type "/" subtype, optional parameters, printable ASCII, at most 255
 * bytes), else application/octet-stream. */
const char *download_content_type(const char *declared);

/* Whether Accept-Encoding (RFC 9110 section 12.5.3) takes gzip: "gzip" (or "x-gzip") listed
 * with a weight above 0, or "*" above 0 while gzip is not listed; a listing of gzip with
 * q=0 refuses it whatever else is listed. No header means the bytes as they are (curl
 * without --compressed sends none and expects them so): false. A malformed element (a bad
 * token or weight, a quoted parameter) counts as not sent. */
bool download_accepts_gzip(const char *accept_encoding);

#endif
