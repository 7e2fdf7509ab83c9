/* util.h - small helpers shared by every layer: ids, time, hex, digests. */
#ifndef CU_UTIL_H
#define CU_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <time.h>

#define CU_UUID_LEN 36
#define CU_SHA256_HEX_LEN 64

/* Fills buf with len cryptographically random bytes. Returns 0 or -1. */
int util_random_bytes(void *buf, size_t len);
/* Writes a random (version 4) lowercase UUID and a NUL into out[37]. Returns 0 or -1. */
int util_uuid_v4(char out[CU_UUID_LEN + 1]);
/* True when s is a lowercase or uppercase UUID in canonical 8-4-4-4-12 form. */
bool util_is_uuid(const char *s);

/* Seconds since the epoch, as a double with sub-second precision. */
double util_now(void);
/* Seconds on the monotonic clock (for measuring intervals and timeouts). */
double util_monotonic(void);
/* Initialises a condition variable whose timed waits use the monotonic clock, so that
 * setting the wall clock never stretches or cuts a wait. Returns 0 or an errno value. */
int util_cond_init_monotonic(pthread_cond_t *cond);
/* The CLOCK_MONOTONIC instant `seconds` from now, for pthread_cond_timedwait on a condition
 * made by util_cond_init_monotonic. */
struct timespec util_deadline_monotonic(double seconds);
/* Sleeps for seconds on the monotonic clock (to a deadline, so signals do not stretch it). */
void util_sleep(double seconds);
/* Formats t (seconds since the epoch) as RFC 3339 UTC "2025-12-16T12:00:00Z" into out[21]. */
void util_rfc3339(int64_t t, char out[21]);

/* Lowercase hex of len bytes into out[2*len+1]. */
void util_hex(const unsigned char *bytes, size_t len, char *out);
/* Parses exactly 64 hex digits (either case) into 32 bytes. Returns 0 or -1. */
int util_unhex_sha256(const char *hex, unsigned char out[32]);
/* Decodes standard base64 (with padding) into out; returns the length or -1. */
int util_base64_decode(const char *in, size_t in_len, unsigned char *out, size_t out_cap);

/* Replaces, in place, every byte of s that is not part of well-formed UTF-8 (a stray or
 * truncated sequence, an overlong form, a surrogate, past U+10FFFF) with '?'. For text that
 * quotes a client's bytes and must become a JSON string. */
void util_utf8_scrub(char *s);

/* SHA-256 of a buffer, as hex into out[65]. */
void util_sha256_hex(const void *data, size_t len, char out[CU_SHA256_HEX_LEN + 1]);
/* Compares two strings in time independent of where they differ (and of their lengths). */
bool util_secret_equal(const char *a, const char *b);

/* Parses a whole decimal integer (optional sign, no junk). Returns 0 or -1. */
int util_parse_i64(const char *s, int64_t *out);
/* Parses a whole finite decimal number. Returns 0 or -1. */
int util_parse_double(const char *s, double *out);
/* The next item of a comma-separated list in a writable buffer (*cursor starts at it and is
 * moved on): the item with blanks around it removed, NUL-terminated in place; empty items
 * are skipped. NULL at the end of the list. */
char *util_list_next(char **cursor);

/* Appends s to the NUL-terminated out (capacity cap), percent-encoding every byte but RFC
 * 3986's unreserved characters (and '/' when keep_slash), in uppercase hex: the canonical
 * form SigV4 signs and libsmbclient decodes. Stops early rather than overflow. */
void util_percent_encode(char *out, size_t cap, const char *s, bool keep_slash);

/* Creates every missing directory of path (like mkdir -p). Returns 0 or -errno. */
int util_mkdir_p(const char *path, unsigned mode);

#endif
