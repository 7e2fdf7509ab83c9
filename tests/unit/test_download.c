/* test_download.c - ranges, preconditions, dates, entity tags, Content-Disposition and
 * content types (src/api/download.c), with RFC 9110's and RFC 6266's own examples. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "api/download.h"
#include "unit_helpers.h"

#include <string.h>

static void assert_range(const char *header, int64_t size, download_range_kind kind, int64_t offset,
                         int64_t length)
{
    download_range r = download_range_parse(header, size);
    if (r.kind != kind)
        fail_msg("%s on %lld bytes: kind %d, expected %d", header ? header : "(none)",
                 (long long)size, r.kind, kind);
    if (kind == DOWNLOAD_RANGE_SINGLE) {
        assert_int_equal(r.offset, offset);
        assert_int_equal(r.length, length);
    }
}

static void test_ranges(void **state)
{
    (void)state;
    /* RFC 9110 section 14.1.2's examples, on a 10000-byte representation. */
    assert_range("bytes=0-499", 10000, DOWNLOAD_RANGE_SINGLE, 0, 500);
    assert_range("bytes=500-999", 10000, DOWNLOAD_RANGE_SINGLE, 500, 500);
    assert_range("bytes=-500", 10000, DOWNLOAD_RANGE_SINGLE, 9500, 500);
    assert_range("bytes=9500-", 10000, DOWNLOAD_RANGE_SINGLE, 9500, 500);
    assert_range("bytes=0-0,-1", 10000, DOWNLOAD_RANGE_MULTIPLE, 0, 0);
    assert_range("bytes= 0-999, 4500-5499, -1000", 10000, DOWNLOAD_RANGE_MULTIPLE, 0, 0);
    /* The last position is cut to the end; a suffix longer than the file is all of it. */
    assert_range("bytes=9000-20000", 10000, DOWNLOAD_RANGE_SINGLE, 9000, 1000);
    assert_range("bytes=-20000", 10000, DOWNLOAD_RANGE_SINGLE, 0, 10000);
    assert_range("bytes=0-99999999999999999999999", 10, DOWNLOAD_RANGE_SINGLE, 0, 10);
    assert_range("BYTES=1-1", 10, DOWNLOAD_RANGE_SINGLE, 1, 1);  /* units are case-insensitive */
    assert_range("bytes=1-1,", 10, DOWNLOAD_RANGE_SINGLE, 1, 1); /* empty list elements */
    /* Nothing of it overlaps: 416. */
    assert_range("bytes=10000-", 10000, DOWNLOAD_RANGE_UNSATISFIABLE, 0, 0);
    assert_range("bytes=10000-10001, 20000-", 10000, DOWNLOAD_RANGE_UNSATISFIABLE, 0, 0);
    assert_range("bytes=-0", 10000, DOWNLOAD_RANGE_UNSATISFIABLE, 0, 0);
    assert_range("bytes=0-", 0, DOWNLOAD_RANGE_UNSATISFIABLE, 0, 0);
    /* An empty file: a suffix range is all of it (nothing), answered as a whole. */
    assert_range("bytes=-5", 0, DOWNLOAD_RANGE_NONE, 0, 0);
    /* Ignored, as the RFC says: no header, another unit, malformed, backwards. */
    assert_range(NULL, 10, DOWNLOAD_RANGE_NONE, 0, 0);
    assert_range("items=0-1", 10, DOWNLOAD_RANGE_NONE, 0, 0);
    assert_range("bytes=", 10, DOWNLOAD_RANGE_NONE, 0, 0);
    assert_range("bytes=a-b", 10, DOWNLOAD_RANGE_NONE, 0, 0);
    assert_range("bytes=5-1", 10, DOWNLOAD_RANGE_NONE, 0, 0);
    assert_range("bytes=0-1x", 10, DOWNLOAD_RANGE_NONE, 0, 0);
    assert_range("bytes=--1", 10, DOWNLOAD_RANGE_NONE, 0, 0);
    assert_range("bytes=0-1;2-3", 10, DOWNLOAD_RANGE_NONE, 0, 0);
    /* A list longer than anyone needs is not worth reading. */
    char many[DOWNLOAD_MAX_RANGES * 8 + 16] = "bytes=";
    for (int i = 0; i <= DOWNLOAD_MAX_RANGES; i++)
        strcat(many, "0-0,");
    assert_range(many, 10, DOWNLOAD_RANGE_NONE, 0, 0);
}

static void test_dates(void **state)
{
    (void)state;
    int64_t t;
    /* RFC 9110 section 5.6.7: the same instant in the three forms. */
    assert_int_equal(download_date_parse("Sun, 06 Nov 1994 08:49:37 GMT", &t), 0);
    assert_int_equal(t, 784111777);
    assert_int_equal(download_date_parse("Sunday, 06-Nov-94 08:49:37 GMT", &t), 0);
    assert_int_equal(t, 784111777);
    assert_int_equal(download_date_parse("Sun Nov  6 08:49:37 1994", &t), 0);
    assert_int_equal(t, 784111777);
    char out[30];
    download_date_format(784111777, out);
    assert_string_equal(out, "Sun, 06 Nov 1994 08:49:37 GMT");
    download_date_format(0, out);
    assert_string_equal(out, "Thu, 01 Jan 1970 00:00:00 GMT");
    const char *bad[] = {"",
                         "Sun, 06 Nov 1994 08:49:37 UTC",
                         "Sun, 6 Nov 1994 08:49:37 GMT",
                         "Sun, 06 Nov 1994 24:00:00 GMT",
                         "Sun, 06 Nov 1994 08:49:37 GMT ",
                         "Xyz, 06 Nov 1994 08:49:37 GMT",
                         "Sun, 32 Nov 1994 08:49:37 GMT",
                         "1994-11-06T08:49:37Z"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(download_date_parse(bad[i], &t), -1);
    assert_int_equal(download_date_parse(NULL, &t), -1);
}

static void test_etags_and_preconditions(void **state)
{
    (void)state;
    char etag[35];
    download_etag("550e8400-e29b-41d4-a716-446655440000", 1000, 1700000000, etag);
    assert_int_equal(strlen(etag), 34);
    assert_true(etag[0] == '"' && etag[33] == '"');
    char other[35];
    download_etag("550e8400-e29b-41d4-a716-446655440000", 1001, 1700000000, other);
    assert_string_not_equal(etag, other); /* another file, another tag */
    download_etag("550e8400-e29b-41d4-a716-446655440000", 1000, 1700000000, other);
    assert_string_equal(etag, other); /* the same file, the same tag, every time */

    char list[128];
    snprintf(list, sizeof list, "\"a\", W/%s", etag);
    assert_true(download_etag_listed(list, etag, true));
    assert_false(download_etag_listed(list, etag, false)); /* a weak tag never matches strongly */
    snprintf(list, sizeof list, " \"a\" ,%s", etag);
    assert_true(download_etag_listed(list, etag, false));
    assert_true(download_etag_listed("*", etag, false));
    assert_false(download_etag_listed("\"a\", junk", etag, true));
    snprintf(list, sizeof list, "%s, junk", etag);
    assert_false(download_etag_listed(list, etag, true)); /* malformed: matches nothing */

    int64_t modified = 784111777;
    download_conditions c = {0};
    assert_int_equal(download_evaluate(&c, etag, modified), DOWNLOAD_PROCEED);
    c.if_none_match = etag;
    assert_int_equal(download_evaluate(&c, etag, modified), DOWNLOAD_NOT_MODIFIED);
    c.if_none_match = "\"other\"";
    c.if_modified_since = "Sun, 06 Nov 1994 08:49:37 GMT"; /* ignored beside If-None-Match */
    assert_int_equal(download_evaluate(&c, etag, modified), DOWNLOAD_PROCEED);
    c.if_none_match = NULL;
    assert_int_equal(download_evaluate(&c, etag, modified), DOWNLOAD_NOT_MODIFIED);
    c.if_modified_since = "Sun, 06 Nov 1994 08:49:36 GMT";
    assert_int_equal(download_evaluate(&c, etag, modified), DOWNLOAD_PROCEED);
    c.if_modified_since = "not a date"; /* ignored */
    assert_int_equal(download_evaluate(&c, etag, modified), DOWNLOAD_PROCEED);
    c = (download_conditions){.if_match = "\"other\""};
    assert_int_equal(download_evaluate(&c, etag, modified), DOWNLOAD_PRECONDITION_FAILED);
    c.if_match = etag;
    c.if_unmodified_since = "Thu, 01 Jan 1970 00:00:00 GMT"; /* ignored beside If-Match */
    assert_int_equal(download_evaluate(&c, etag, modified), DOWNLOAD_PROCEED);
    c.if_match = NULL;
    assert_int_equal(download_evaluate(&c, etag, modified), DOWNLOAD_PRECONDITION_FAILED);
    c.if_unmodified_since = "Sun, 06 Nov 1994 08:49:37 GMT";
    assert_int_equal(download_evaluate(&c, etag, modified), DOWNLOAD_PROCEED);

    /* If-Range: the file's own tag or date sends the range; anything else the whole. */
    assert_true(download_if_range(NULL, etag, modified));
    assert_true(download_if_range(etag, etag, modified));
    assert_false(download_if_range("\"other\"", etag, modified));
    snprintf(list, sizeof list, "W/%s", etag);
    assert_false(download_if_range(list, etag, modified));
    assert_true(download_if_range("Sun, 06 Nov 1994 08:49:37 GMT", etag, modified));
    assert_false(download_if_range("Sun, 06 Nov 1994 08:49:38 GMT", etag, modified));
    assert_false(download_if_range("garbage", etag, modified));
}

static void test_disposition(void **state)
{
    (void)state;
    char out[DOWNLOAD_DISPOSITION_CAP(64)];
    download_disposition("report.pdf", out, sizeof out);
    assert_string_equal(out, "attachment; filename=\"report.pdf\"");
    /* RFC 6266 section 5's example: the euro sign, with an ASCII fallback. */
    download_disposition("\xe2\x82\xac rates", out, sizeof out);
    assert_string_equal(out,
                        "attachment; filename=\"_ rates\"; filename*=UTF-8''%E2%82%AC%20rates");
    download_disposition("r\xc3\xa9sum\xc3\xa9.pdf", out, sizeof out);
    assert_string_equal(
        out, "attachment; filename=\"r_sum_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf");
    download_disposition("say \"hi\"\\100%.txt", out, sizeof out);
    assert_string_equal(out, "attachment; filename=\"say _hi__100_.txt\"; "
                             "filename*=UTF-8''say%20%22hi%22%5C100%25.txt");
    char tiny[8];
    download_disposition("report.pdf", tiny, sizeof tiny);
    assert_string_equal(tiny, "attachm"); /* too small: still a terminated string */
}

static void test_content_type(void **state)
{
    (void)state;
    const char *ok[] = {"image/png", "text/plain; charset=utf-8", "application/vnd.api+json"};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
        assert_ptr_equal(download_content_type(ok[i]), ok[i]);
    const char *bad[] = {NULL,
                         "",
                         "png",
                         "image/",
                         "/png",
                         "image/png\r\nX-Evil: 1",
                         "text/html extra",
                         "\xe2\x82\xac/x"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_string_equal(download_content_type(bad[i]), "application/octet-stream");
}

static void test_accept_encoding(void **state)
{
    (void)state;
    const char *yes[] = {"gzip",
                         "GZIP",
                         "x-gzip",
                         "gzip, deflate, br, zstd",
                         "br;q=1.0, gzip;q=0.8, *;q=0.1",
                         " deflate ,gzip ",
                         "gzip;q=1",
                         "gzip;q=0.001",
                         "gzip ; Q=0.5",
                         "*",
                         "identity, *;q=0.5",
                         "gzip;level=9",
                         ",,gzip,"};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++)
        assert_true(download_accepts_gzip(yes[i]));
    const char *no[] = {NULL,
                        "",
                        "identity",
                        "deflate, br",
                        "gzip;q=0",
                        "gzip;q=0.000",
                        "*, gzip;q=0",
                        "gzip, gzip;q=0",
                        "gzip;q=0, gzip",
                        "*;q=0",
                        "gzipx",
                        "gzip;q=2",
                        "gzip;q=0.0001",
                        "gzip;q=1.5",
                        "gzip;q=",
                        "gzip;q=\"1\"",
                        "gzip x",
                        "gzip;",
                        "gz ip"};
    for (size_t i = 0; i < sizeof no / sizeof *no; i++)
        assert_false(download_accepts_gzip(no[i]));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ranges),
        cmocka_unit_test(test_dates),
        cmocka_unit_test(test_etags_and_preconditions),
        cmocka_unit_test(test_disposition),
        cmocka_unit_test(test_content_type),
        cmocka_unit_test(test_accept_encoding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
