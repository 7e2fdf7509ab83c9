/* netaddr.c - parsing and classifying IP addresses, and operators' allow lists.
 *
 * Parsing goes through getaddrinfo(AI_NUMERICHOST) rather than inet_pton because the
 * resolver behind libcurl accepts the same forms (inet_aton's "127.1", "0x7f000001",
 * "017700000001"): whatever a URL's host can mean to the connection, it means here too.
 *
 * The ranges are IANA's IPv4 and IPv6 special-purpose address registries, refused whole
 * even where a registry marks a small part global (e.g. the anycast addresses inside
 * 192.0.0.0/24 and 2001::/23): nothing there is a webhook receiver. IPv6 outside global
 * unicast (2000::/3) is unassigned or special and refused as well. */
#include "base/netaddr.h"

#include "base/util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int netaddr_from_sockaddr(const struct sockaddr *sa, size_t len, netaddr *out)
{
    memset(out, 0, sizeof *out);
    if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        out->family = AF_INET;
        memcpy(out->bytes, &in->sin_addr, 4);
        return 0;
    }
    if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        out->family = AF_INET6;
        memcpy(out->bytes, &in6->sin6_addr, 16);
        return 0;
    }
    return -1;
}

int netaddr_parse(const char *text, netaddr *out)
{
    char inner[256];
    size_t len = strlen(text);
    int family = AF_UNSPEC;
    if (len >= 2 && text[0] == '[' && text[len - 1] == ']') { /* a URL's IPv6 literal */
        text++;
        len -= 2;
        family = AF_INET6;
    }
    if (len == 0 || len >= sizeof inner)
        return -1;
    memcpy(inner, text, len);
    inner[len] = '\0';
    struct addrinfo hints = {
        .ai_flags = AI_NUMERICHOST, .ai_family = family, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    if (getaddrinfo(inner, NULL, &hints, &res) != 0 || !res)
        return -1;
    int rc = netaddr_from_sockaddr(res->ai_addr, res->ai_addrlen, out);
    freeaddrinfo(res);
    return rc;
}

void netaddr_unmap(netaddr *a)
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (a->family == AF_INET6 && !memcmp(a->bytes, mapped, sizeof mapped)) {
        memmove(a->bytes, a->bytes + 12, 4);
        memset(a->bytes + 4, 0, 12);
        a->family = AF_INET;
    }
}

void netaddr_format(const netaddr *a, char out[NETADDR_TEXT_LEN])
{
    if (!inet_ntop(a->family, a->bytes, out, NETADDR_TEXT_LEN))
        snprintf(out, NETADDR_TEXT_LEN, "?");
}

/* Whether the first bits of addr are those of prefix. */
static bool prefix_match(const unsigned char *addr, const unsigned char *prefix, int bits)
{
    int whole = bits / 8, rest = bits % 8;
    if (memcmp(addr, prefix, (size_t)whole) != 0)
        return false;
    if (rest == 0)
        return true;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (addr[whole] & mask) == (prefix[whole] & mask);
}

typedef struct {
    unsigned char prefix[16];
    int bits;
    const char *what;
} special_range;

/* First match wins, so a narrower range comes before the one holding it. */
static const special_range v4_special[] = {
    {{0, 0, 0, 0}, 32, "unspecified"},
    {{0}, 8, "reserved: \"this network\""}, /* Linux connects 0.x to the host itself */
    {{10}, 8, "private"},
    {{100, 64}, 10, "shared: carrier-grade NAT"},
    {{127}, 8, "loopback"},
    {{169, 254}, 16, "link-local"}, /* 169.254.169.254: cloud instance metadata */
    {{172, 16}, 12, "private"},
    {{192, 0, 0}, 24, "reserved: IETF protocol assignments"},
    {{192, 0, 2}, 24, "documentation"},
    {{192, 88, 99}, 24, "reserved: 6to4 relay anycast"},
    {{192, 168}, 16, "private"},
    {{198, 18}, 15, "benchmarking"},
    {{198, 51, 100}, 24, "documentation"},
    {{203, 0, 113}, 24, "documentation"},
    {{224}, 4, "multicast"},
    {{255, 255, 255, 255}, 32, "broadcast"},
    {{240}, 4, "reserved"},
};

static const special_range v6_special[] = {
    {{0}, 128, "unspecified"},
    {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 128, "loopback"},
    {{0}, 96, "reserved: IPv4-compatible"},
    {{0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0}, 96, "reserved: IPv4-translated"},
    {{0, 0x64, 0xff, 0x9b, 0, 1}, 48, "private: local-use NAT64"},
    {{0}, 8, "reserved"},
    {{0x01, 0x00}, 64, "reserved: discard-only"},
    {{0x20, 0x01, 0, 0}, 32, "reserved: Teredo"}, /* tunnels to any IPv4 address */
    {{0x20, 0x01, 0x0d, 0xb8}, 32, "documentation"},
    {{0x20, 0x01, 0}, 23, "reserved: IETF protocol assignments"},
    {{0x3f, 0xff, 0}, 20, "documentation"},
    {{0xfc}, 7, "private: unique local"},
    {{0xfe, 0x80}, 10, "link-local"},
    {{0xfe, 0xc0}, 10, "reserved: site-local"},
    {{0xff}, 8, "multicast"},
};

static const char *range_of(const special_range *table, size_t n, const unsigned char *bytes)
{
    for (size_t i = 0; i < n; i++)
        if (prefix_match(bytes, table[i].prefix, table[i].bits))
            return table[i].what;
    return NULL;
}

/* The IPv4 address an IPv6 one stands for (IPv4-mapped, NAT64 well-known prefix, 6to4),
 * into v4[4]; false when it carries none. */
static bool embedded_v4(const unsigned char *b, unsigned char v4[4])
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const unsigned char nat64[12] = {0, 0x64, 0xff, 0x9b};
    if (!memcmp(b, mapped, 12) || !memcmp(b, nat64, 12)) {
        memcpy(v4, b + 12, 4);
        return true;
    }
    if (b[0] == 0x20 && b[1] == 0x02) { /* 6to4: 2002:AABB:CCDD::/48 */
        memcpy(v4, b + 2, 4);
        return true;
    }
    return false;
}

const char *netaddr_special(const netaddr *a)
{
    if (a->family == AF_INET)
        return range_of(v4_special, sizeof v4_special / sizeof *v4_special, a->bytes);
    unsigned char v4[4];
    if (embedded_v4(a->bytes, v4))
        return range_of(v4_special, sizeof v4_special / sizeof *v4_special, v4);
    const char *what = range_of(v6_special, sizeof v6_special / sizeof *v6_special, a->bytes);
    if (!what && (a->bytes[0] & 0xe0) != 0x20)
        what = "reserved: not global unicast";
    return what;
}

/* ---- allow lists ---- */

typedef struct {
    netaddr net;
    int bits;
} addr_range;

struct netaddr_allowlist {
    char **names;
    size_t nnames;
    addr_range *ranges;
    size_t nranges;
};

void netaddr_allowlist_free(netaddr_allowlist *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->nnames; i++)
        free(l->names[i]);
    free(l->names);
    free(l->ranges);
    free(l);
}

/* A host name as the list keeps it: lowercase, without a trailing dot. false when name is
 * not one (only letters, digits, '-', '_' and dots, at most 253 characters). */
static bool normal_name(const char *name, size_t len, char *out, size_t cap)
{
    if (len && name[len - 1] == '.')
        len--;
    if (len == 0 || len > 253 || len >= cap)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!isalnum(c) && c != '-' && c != '_' && c != '.')
            return false;
        out[i] = (char)tolower(c);
    }
    out[len] = '\0';
    return true;
}

/* Parses "addr/bits" (or "addr") into r. */
static int parse_range(char *entry, addr_range *r, cu_error *err)
{
    char *slash = strchr(entry, '/');
    if (slash)
        *slash = '\0';
    if (netaddr_parse(entry, &r->net) != 0)
        return cu_fail(err, CU_EINVAL, "\"%s\" is not an IP address", entry);
    int max = r->net.family == AF_INET ? 32 : 128;
    r->bits = max;
    if (slash) {
        char *end;
        long bits = strtol(slash + 1, &end, 10);
        if (!isdigit((unsigned char)slash[1]) || *end || bits < 0 || bits > max)
            return cu_fail(err, CU_EINVAL, "\"%s/%s\": the prefix length must be 0 to %d", entry,
                           slash + 1, max);
        r->bits = (int)bits;
    }
    /* 10.1.2.3/8 is more likely a typo than a way to say 10.0.0.0/8: say so. */
    unsigned char zero[16] = {0};
    netaddr host = r->net;
    for (int bit = 0; bit < r->bits; bit++)
        host.bytes[bit / 8] &= (unsigned char)~(0x80 >> (bit % 8));
    if (memcmp(host.bytes, zero, sizeof zero) != 0)
        return cu_fail(err, CU_EINVAL, "\"%s/%d\" has bits set after its prefix", entry, r->bits);
    return 0;
}

static int add_entry(netaddr_allowlist *l, char *entry, cu_error *err)
{
    char name[256];
    bool is_range = strchr(entry, '/') || strchr(entry, ':') || entry[0] == '[';
    netaddr probe;
    if (!is_range && netaddr_parse(entry, &probe) == 0)
        is_range = true; /* "10.0.0.7", "127.1" */
    if (is_range) {
        addr_range r;
        int rc = parse_range(entry, &r, err);
        if (rc)
            return rc;
        addr_range *grown = realloc(l->ranges, (l->nranges + 1) * sizeof *grown);
        if (!grown)
            return cu_fail_oom(err);
        l->ranges = grown;
        l->ranges[l->nranges++] = r;
        return 0;
    }
    if (!normal_name(entry, strlen(entry), name, sizeof name))
        return cu_fail(err, CU_EINVAL, "\"%s\" is not a host name, IP address or CIDR range",
                       entry);
    char **grown = realloc(l->names, (l->nnames + 1) * sizeof *grown);
    if (!grown)
        return cu_fail_oom(err);
    l->names = grown;
    if (!(l->names[l->nnames] = strdup(name)))
        return cu_fail_oom(err);
    l->nnames++;
    return 0;
}

int netaddr_allowlist_parse(const char *text, netaddr_allowlist **out, cu_error *err)
{
    *out = NULL;
    if (!text || !*text)
        return 0;
    netaddr_allowlist *l = calloc(1, sizeof *l);
    char *copy = strdup(text);
    int rc = l && copy ? 0 : cu_fail_oom(err);
    char *cursor = copy;
    for (char *tok; rc == 0 && (tok = util_list_next(&cursor)) != NULL;)
        rc = add_entry(l, tok, err);
    free(copy);
    if (rc == 0 && l->nnames == 0 && l->nranges == 0) {
        netaddr_allowlist_free(l); /* only commas and blanks: nothing allowed */
        return 0;
    }
    if (rc) {
        netaddr_allowlist_free(l);
        return rc;
    }
    *out = l;
    return 0;
}

bool netaddr_allowlist_has_name(const netaddr_allowlist *l, const char *host)
{
    char name[256];
    if (!l || !normal_name(host, strlen(host), name, sizeof name))
        return false;
    for (size_t i = 0; i < l->nnames; i++)
        if (!strcmp(l->names[i], name))
            return true;
    return false;
}

bool netaddr_allowlist_has_addr(const netaddr_allowlist *l, const netaddr *a)
{
    if (!l)
        return false;
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    netaddr v4 = {.family = AF_INET};
    bool is_mapped = a->family == AF_INET6 && !memcmp(a->bytes, mapped, 12);
    if (is_mapped)
        memcpy(v4.bytes, a->bytes + 12, 4);
    for (size_t i = 0; i < l->nranges; i++) {
        const addr_range *r = &l->ranges[i];
        if (r->net.family == a->family && prefix_match(a->bytes, r->net.bytes, r->bits))
            return true;
        if (is_mapped && r->net.family == AF_INET && prefix_match(v4.bytes, r->net.bytes, r->bits))
            return true;
    }
    return false;
}
