/* netaddr.h - IP addresses as the network sees them: every textual form libc accepts, and
 * which of them are not ordinary public unicast addresses.
 *
 * A server that connects where a client tells it (webhooks) must not be talked into
 * reaching its own loopback, the private network behind it or a cloud's metadata service.
 * netaddr_special() names every such range (IANA's special-purpose registries), looking
 * through the IPv6 forms that carry an IPv4 address (mapped, NAT64, 6to4); an allow list
 * (host names and CIDRs an operator trusts) opens exactly what it lists. */
#ifndef CU_NETADDR_H
#define CU_NETADDR_H

#include "base/error.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* Longest text netaddr_format writes, NUL included (INET6_ADDRSTRLEN). */
#define NETADDR_TEXT_LEN 46

typedef struct {
    int family;              /* AF_INET or AF_INET6 */
    unsigned char bytes[16]; /* network order; AF_INET uses the first 4 */
} netaddr;

/* Parses an address literal in any form getaddrinfo(AI_NUMERICHOST) accepts: dotted quads
 * and their short, octal, hex and single-number forms ("127.1", "0x7f000001",
 * "2130706433"), IPv6 text with an optional zone ("fe80::1%eth0"), and IPv6 in brackets
 * as URLs write it. Returns 0, or -1 when text is not an address (e.g. a host name). */
int netaddr_parse(const char *text, netaddr *out);
/* The address of an AF_INET or AF_INET6 sockaddr of len bytes; -1 for any other. */
int netaddr_from_sockaddr(const struct sockaddr *sa, size_t len, netaddr *out);
/* An IPv4-mapped IPv6 address (::ffff:a.b.c.d, as a dual-stack socket reports an IPv4
 * peer) becomes the IPv4 address it stands for; any other address is left as it is. */
void netaddr_unmap(netaddr *a);
/* Canonical text ("127.0.0.1", "::ffff:127.0.0.1") into out[NETADDR_TEXT_LEN]. */
void netaddr_format(const netaddr *a, char out[NETADDR_TEXT_LEN]);
/* NULL for an ordinary public unicast address; otherwise the name of its range
 * ("loopback", "private", "link-local", "multicast", "reserved: Teredo", ...). An IPv6
 * address that carries an IPv4 one (IPv4-mapped ::ffff:0:0/96, NAT64 64:ff9b::/96, 6to4
 * 2002::/16) is what its IPv4 address is. */
const char *netaddr_special(const netaddr *a);

/* A parsed allow list: host names and address ranges. */
typedef struct netaddr_allowlist netaddr_allowlist;

/* Parses a comma-separated list of host names ("hooks.internal"), addresses ("10.0.0.7",
 * "::1") and CIDR ranges ("10.0.0.0/8", "fd00::/8"); blanks around entries are ignored,
 * names compare without case and without a trailing dot. An empty or NULL text gives an
 * empty list (*out NULL, which every function here takes). Returns 0 or CU_EINVAL naming
 * the bad entry (or CU_ENOMEM). Free with netaddr_allowlist_free. */
int netaddr_allowlist_parse(const char *text, netaddr_allowlist **out, cu_error *err);
/* Whether host (as a URL names it) is one of the list's names. */
bool netaddr_allowlist_has_name(const netaddr_allowlist *l, const char *host);
/* Whether a is in one of the list's ranges (an IPv4-mapped IPv6 address also matches the
 * IPv4 ranges: it is the same destination). */
bool netaddr_allowlist_has_addr(const netaddr_allowlist *l, const netaddr *a);
void netaddr_allowlist_free(netaddr_allowlist *l);

#endif
