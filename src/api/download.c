/* download.c - byte ranges, preconditions, dates, entity tags and Content-Disposition. */
#include "api/download.h"

#include "base/util.h"

#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static const char *skip_ows(const char *p)
{
    while (is_ows(*p))
        p++;
    return p;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Reads 1*DIGIT at *p, saturating at INT64_MAX (a position past any file is simply past it).
 * Returns false when there is no digit. */
static bool read_pos(const char **p, int64_t *out)
{
    if (!is_digit(**p))
        return false;
    int64_t v = 0;
    for (; is_digit(**p); (*p)++) {
        int d = **p - '0';
        v = v > (INT64_MAX - d) / 10 ? INT64_MAX : v * 10 + d;
    }
    *out = v;
    return true;
}

/* ---- Range ---- */

download_range download_range_parse(const char *header, int64_t size)
{
    download_range none = {.kind = DOWNLOAD_RANGE_NONE};
    if (!header)
        return none;
    const char *p = skip_ows(header);
    if (strncasecmp(p, "bytes=", 6) != 0)
        return none; /* another unit: ignored */
    p += 6;
    int specs = 0, satisfiable = 0;
    bool empty_suffix = false; /* a suffix range of an empty representation */
    download_range first = none;
    for (;;) {
        p = skip_ows(p);
        if (*p == ',') { /* empty list elements are allowed */
            p++;
            continue;
        }
        if (!*p)
            break;
        int64_t a = -1, b = -1;
        if (*p == '-') {
            p++;
            if (!read_pos(&p, &b))
                return none;
        } else {
            if (!read_pos(&p, &a) || *p != '-')
                return none;
            p++;
            if (is_digit(*p) && !read_pos(&p, &b))
                return none;
            if (b >= 0 && b < a)
                return none; /* an invalid range-set: the whole header is ignored */
        }
        p = skip_ows(p);
        if (*p && *p != ',')
            return none;
        if (++specs > DOWNLOAD_MAX_RANGES)
            return none;
        download_range r = {.kind = DOWNLOAD_RANGE_SINGLE};
        if (a < 0) { /* -n: the last n bytes */
            if (b == 0)
                continue;
            if (size == 0) {
                empty_suffix = true;
                continue;
            }
            r.length = b < size ? b : size;
            r.offset = size - r.length;
        } else {
            if (a >= size)
                continue;
            int64_t last = b < 0 || b >= size ? size - 1 : b;
            r.offset = a;
            r.length = last - a + 1;
        }
        if (satisfiable++ == 0)
            first = r;
    }
    if (specs == 0)
        return none;
    if (specs > 1 && (satisfiable > 0 || empty_suffix))
        return (download_range){.kind = DOWNLOAD_RANGE_MULTIPLE};
    if (satisfiable == 1)
        return first;
    if (empty_suffix)
        return none;
    return (download_range){.kind = DOWNLOAD_RANGE_UNSATISFIABLE};
}

/* ---- entity tags ---- */

bool download_etag_listed(const char *list, const char *etag, bool weak)
{
    if (!list || !etag)
        return false;
    const char *p = skip_ows(list);
    if (*p == '*')
        return !*skip_ows(p + 1);
    size_t etag_len = strlen(etag);
    bool matched = false;
    for (;;) {
        p = skip_ows(p);
        if (*p == ',') {
            p++;
            continue;
        }
        if (!*p)
            break;
        bool is_weak = false;
        if (p[0] == 'W' && p[1] == '/') {
            is_weak = true;
            p += 2;
        }
        if (*p != '"')
            return false;
        const char *start = p++;
        for (; *p && *p != '"'; p++) {
            unsigned char c = (unsigned char)*p;
            if (!(c == 0x21 || (c >= 0x23 && c <= 0x7e) || c >= 0x80))
                return false;
        }
        if (*p != '"')
            return false;
        p++;
        size_t len = (size_t)(p - start);
        if ((weak || !is_weak) && len == etag_len && memcmp(start, etag, len) == 0)
            matched = true;
        p = skip_ows(p);
        if (*p && *p != ',')
            return false;
    }
    return matched;
}

/* ---- dates ---- */

static const char *const day_names[7] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char *const long_day_names[7] = {"Sunday",   "Monday", "Tuesday", "Wednesday",
                                              "Thursday", "Friday", "Saturday"};
static const char *const month_names[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian; Howard Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* Reads exactly n digits. */
static bool read_digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++, (*p)++) {
        if (!is_digit(**p))
            return false;
        v = v * 10 + (**p - '0');
    }
    *out = v;
    return true;
}

static bool read_literal(const char **p, const char *lit)
{
    size_t n = strlen(lit);
    if (strncmp(*p, lit, n) != 0)
        return false;
    *p += n;
    return true;
}

static bool read_month(const char **p, int *month)
{
    for (int i = 0; i < 12; i++) {
        if (!strncmp(*p, month_names[i], 3)) {
            *month = i + 1;
            *p += 3;
            return true;
        }
    }
    return false;
}

/* "HH:MM:SS" */
static bool read_time(const char **p, int *h, int *mi, int *s)
{
    return read_digits(p, 2, h) && read_literal(p, ":") && read_digits(p, 2, mi) &&
           read_literal(p, ":") && read_digits(p, 2, s) && *h <= 23 && *mi <= 59 && *s <= 60;
}

/* Which of names (n of them) s starts with, followed by what; -1 when none. */
static int read_name(const char **p, const char *const *names, int n, const char *after)
{
    for (int i = 0; i < n; i++) {
        size_t len = strlen(names[i]);
        if (!strncmp(*p, names[i], len) && !strncmp(*p + len, after, strlen(after))) {
            *p += len + strlen(after);
            return i;
        }
    }
    return -1;
}

int download_date_parse(const char *s, int64_t *out)
{
    if (!s)
        return -1;
    const char *p = s;
    int year = 0, month = 0, day = 0, h = 0, mi = 0, sec = 0;
    if (read_name(&p, day_names, 7, ", ") >= 0) { /* IMF-fixdate */
        if (!read_digits(&p, 2, &day) || !read_literal(&p, " ") || !read_month(&p, &month) ||
            !read_literal(&p, " ") || !read_digits(&p, 4, &year) || !read_literal(&p, " ") ||
            !read_time(&p, &h, &mi, &sec) || !read_literal(&p, " GMT"))
            return -1;
    } else if (read_name(&p, long_day_names, 7, ", ") >= 0) { /* RFC 850 */
        if (!read_digits(&p, 2, &day) || !read_literal(&p, "-") || !read_month(&p, &month) ||
            !read_literal(&p, "-") || !read_digits(&p, 2, &year) || !read_literal(&p, " ") ||
            !read_time(&p, &h, &mi, &sec) || !read_literal(&p, " GMT"))
            return -1;
        year += year < 70 ? 2000 : 1900; /* two digits: the nearest century, as clients mean */
    } else if (read_name(&p, day_names, 7, " ") >= 0) { /* asctime */
        if (!read_month(&p, &month) || !read_literal(&p, " "))
            return -1;
        if (*p == ' ') {
            p++;
            if (!read_digits(&p, 1, &day))
                return -1;
        } else if (!read_digits(&p, 2, &day)) {
            return -1;
        }
        if (!read_literal(&p, " ") || !read_time(&p, &h, &mi, &sec) || !read_literal(&p, " ") ||
            !read_digits(&p, 4, &year))
            return -1;
    } else {
        return -1;
    }
    if (*p || day < 1 || day > 31)
        return -1;
    *out = days_from_civil(year, month, day) * 86400 + h * 3600 + mi * 60 + sec;
    return 0;
}

void download_date_format(int64_t t, char out[30])
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&tt, &tm) || tm.tm_year + 1900 > 9999 || tm.tm_year + 1900 < 0) {
        snprintf(out, 30, "Thu, 01 Jan 1970 00:00:00 GMT");
        return;
    }
    char buf[64]; /* the fields are in range (gmtime's), so 29 characters; the compiler cannot
                     tell */
    snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT", day_names[tm.tm_wday],
             tm.tm_mday, month_names[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
             tm.tm_sec);
    snprintf(out, 30, "%.29s", buf);
}

/* ---- preconditions ---- */

download_verdict download_evaluate(const download_conditions *c, const char *etag,
                                   int64_t last_modified)
{
    int64_t when;
    if (c->if_match) {
        if (!download_etag_listed(c->if_match, etag, false))
            return DOWNLOAD_PRECONDITION_FAILED;
    } else if (c->if_unmodified_since && download_date_parse(c->if_unmodified_since, &when) == 0 &&
               last_modified > when) {
        return DOWNLOAD_PRECONDITION_FAILED;
    }
    if (c->if_none_match) {
        if (download_etag_listed(c->if_none_match, etag, true))
            return DOWNLOAD_NOT_MODIFIED;
    } else if (c->if_modified_since && download_date_parse(c->if_modified_since, &when) == 0 &&
               last_modified <= when) {
        return DOWNLOAD_NOT_MODIFIED;
    }
    return DOWNLOAD_PROCEED;
}

bool download_if_range(const char *if_range, const char *etag, int64_t last_modified)
{
    if (!if_range)
        return true;
    const char *p = skip_ows(if_range);
    if (*p == '"' || (p[0] == 'W' && p[1] == '/')) {
        /* One entity tag, compared strongly: a list is not an If-Range value. */
        return !strchr(p, ',') && download_etag_listed(p, etag, false);
    }
    int64_t when;
    return download_date_parse(p, &when) == 0 && when == last_modified;
}

/* ---- what describes a file ---- */

void download_etag(const char *file_id, int64_t size, int64_t completed_at, char out[35])
{
    char text[128];
    int n = snprintf(text, sizeof text, "%s:%lld:%lld", file_id, (long long)size,
                     (long long)completed_at);
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)text, (size_t)(n < (int)sizeof text ? n : (int)sizeof text - 1),
           md);
    out[0] = '"';
    util_hex(md, 16, out + 1);
    out[33] = '"';
    out[34] = '\0';
}

/* RFC 8187's attr-char: what filename* carries unencoded. */
static bool is_attr_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           strchr("!#$&+-.^_`|~", c) != NULL;
}

void download_disposition(const char *name, char *out, size_t cap)
{
    size_t len = strlen(name), n = 0;
    if (cap < DOWNLOAD_DISPOSITION_CAP(len)) {
        snprintf(out, cap, "attachment");
        return;
    }
    n += (size_t)snprintf(out, cap, "attachment; filename=\"");
    bool same = true;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c >= 0xc0) { /* a UTF-8 sequence stands as one '_' */
            while (i + 1 < len && ((unsigned char)name[i + 1] & 0xc0) == 0x80)
                i++;
            c = '_';
            same = false;
        } else if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '%') {
            c = '_';
            same = false;
        }
        out[n++] = (char)c;
    }
    out[n++] = '"';
    if (!same) {
        n += (size_t)snprintf(out + n, cap - n, "; filename*=UTF-8''");
        static const char hex[] = "0123456789ABCDEF";
        for (size_t i = 0; i < len; i++) {
            unsigned char c = (unsigned char)name[i];
            if (is_attr_char(c)) {
                out[n++] = (char)c;
            } else {
                out[n++] = '%';
                out[n++] = hex[c >> 4];
                out[n++] = hex[c & 15];
            }
        }
    }
    out[n] = '\0';
}

/* RFC 9110's tchar: what a token (a media type's type and subtype) is made of. */
static bool is_tchar(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || is_digit(c) ||
           (c && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

const char *download_content_type(const char *declared)
{
    static const char fallback[] = "application/octet-stream";
    if (!declared)
        return fallback;
    size_t len = strlen(declared);
    if (len == 0 || len > 255)
        return fallback;
    for (size_t i = 0; i < len; i++)
        if (declared[i] < 0x20 || declared[i] > 0x7e)
            return fallback;
    const char *p = declared;
    if (!is_tchar(*p))
        return fallback;
    while (is_tchar(*p))
        p++;
    if (*p++ != '/' || !is_tchar(*p))
        return fallback;
    while (is_tchar(*p))
        p++;
    p = skip_ows(p);
    return !*p || *p == ';' ? declared : fallback;
}

/* ---- Accept-Encoding ---- */

/* A qvalue: "0" ["." 0*3DIGIT] or "1" ["." 0*3"0"]. Returns 1 above zero, 0 for zero, -1
 * when malformed. */
static int qvalue_positive(const char *p, size_t len)
{
    if (len == 0 || (p[0] != '0' && p[0] != '1') || (len > 1 && p[1] != '.') || len > 5)
        return -1;
    bool nonzero = p[0] == '1';
    for (size_t i = 2; i < len; i++) {
        if (p[i] < '0' || p[i] > '9' || (p[0] == '1' && p[i] != '0'))
            return -1;
        nonzero |= p[i] != '0';
    }
    return nonzero ? 1 : 0;
}

/* One element "coding *( OWS ; OWS name = value )" in [p, end): sets *coding (and its
 * length) and returns 1 (weight above 0), 0 (q=0) or -1 (malformed). */
static int encoding_element(const char *p, const char *end, const char **coding, size_t *len)
{
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    *coding = p;
    while (p < end && is_tchar(*p))
        p++;
    *len = (size_t)(p - *coding);
    if (*len == 0)
        return -1;
    int weight = 1;
    for (;;) {
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (p == end)
            return weight;
        if (*p != ';')
            return -1;
        p++;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        const char *name = p;
        while (p < end && is_tchar(*p))
            p++;
        size_t name_len = (size_t)(p - name);
        if (name_len == 0 || p == end || *p != '=')
            return -1;
        const char *value = ++p;
        while (p < end && is_tchar(*p))
            p++;
        if (name_len == 1 && (name[0] == 'q' || name[0] == 'Q')) {
            weight = qvalue_positive(value, (size_t)(p - value));
            if (weight < 0)
                return -1;
        } else if (p == value) {
            return -1; /* an empty or quoted value: no coding of ours has parameters */
        }
    }
}

bool download_accepts_gzip(const char *accept_encoding)
{
    if (!accept_encoding)
        return false;
    int gzip = -1, star = -1; /* -1: not listed; 0: refused; 1: taken */
    const char *p = accept_encoding;
    for (;;) {
        const char *end = strchr(p, ',');
        if (!end)
            end = p + strlen(p);
        const char *coding;
        size_t len;
        int weight = encoding_element(p, end, &coding, &len);
        if (weight >= 0) {
            int *which = (len == 4 && !strncasecmp(coding, "gzip", 4)) ||
                                 (len == 6 && !strncasecmp(coding, "x-gzip", 6))
                             ? &gzip
                         : len == 1 && coding[0] == '*' ? &star
                                                        : NULL;
            if (which && *which != 0)
                *which = weight; /* a refusal stands */
        }
        if (!*end)
            break;
        p = end + 1;
    }
    return gzip == 1 || (gzip == -1 && star == 1);
}
