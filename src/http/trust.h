/* trust.h - who the client is when the server sits behind proxies (TRUST_PROXY).
 *
 * Without trusted proxies the client is the socket's peer, whatever the request's headers
 * say: X-Forwarded-For and CF-Connecting-IP are text any client can send. With them, a
 * request whose peer is a trusted proxy names its client in one of those headers:
 *   - CF-Connecting-IP, when the peer is one of Cloudflare's ranges and `cloudflare` was
 *     listed (Cloudflare sets the header itself, over any a client sent);
 *   - else X-Forwarded-For, read from the right (each proxy appends the address it received
 *     the request from): trusted hops are skipped and the first untrusted one is the client.
 *     An entry that is not an address, or more than HTTP_TRUST_MAX_HOPS trusted hops,
 *     ends the walk: the client is then the last trusted hop reached, since nothing to
 *     the left of it can be believed;
 *   - else the peer itself.
 * Whether the peer is a trusted proxy also says whether X-Forwarded-Proto and
 * X-Forwarded-Host may be believed (the nearest proxy sets them).
 *
 * Everything here is a pure function of its arguments, so it can be tested and fuzzed
 * without a server. */
#ifndef CU_HTTP_TRUST_H
#define CU_HTTP_TRUST_H

#include "base/error.h"
#include "base/netaddr.h"

#include <stdbool.h>
#include <stddef.h>

/* Trusted hops read from X-Forwarded-For before the walk stops. */
#define HTTP_TRUST_MAX_HOPS 32

typedef struct http_trust http_trust;

/* Parses TRUST_PROXY: a comma-separated list of addresses and CIDR ranges ("10.0.0.0/8",
 * "::1") and the word `cloudflare` (Cloudflare's published ranges, compiled in). Host names
 * are refused: a proxy is trusted by its address. NULL or blank text gives no trust (*out
 * NULL, which every function here takes). Returns 0 or CU_EINVAL naming the bad entry (or
 * CU_ENOMEM). Free with http_trust_free. */
int http_trust_parse(const char *text, http_trust **out, cu_error *err);
void http_trust_free(http_trust *t);
/* Whether a is a trusted proxy (an IPv4-mapped IPv6 address matches the IPv4 ranges). */
bool http_trust_has(const http_trust *t, const netaddr *a);
/* Whether a is in Cloudflare's ranges and TRUST_PROXY listed `cloudflare`. */
bool http_trust_is_cloudflare(const http_trust *t, const netaddr *a);

/* Parses one address as a forwarding header carries it: optional blanks around it, IPv4
 * "192.0.2.1" with an optional ":port", IPv6 "2001:db8::1" or "[2001:db8::1]" with an
 * optional ":port" after the bracket. Only canonical literals (inet_pton's), never names or
 * "unknown". An IPv4-mapped IPv6 address comes out as IPv4. Returns 0 or -1. */
int http_trust_parse_hop(const char *text, size_t len, netaddr *out);

/* The client of a request from peer, given its CF-Connecting-IP (or NULL) and its
 * X-Forwarded-For headers in the order received (nxff of them, each a comma-separated
 * list). Writes the client into *client (IPv4-mapped peers come out as IPv4) and returns
 * whether the peer is a trusted proxy. */
bool http_trust_client(const http_trust *t, const netaddr *peer, const char *cf_connecting_ip,
                       const char *const *xff, size_t nxff, netaddr *client);

#endif
