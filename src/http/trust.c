/* trust.c - trusted proxies and the client address they forward. */
#include "http/trust.h"

#include "base/util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Cloudflare's edge ranges, as published at https://www.cloudflare.com/ips-v4 and
 * https://www.cloudflare.com/ips-v6 (also the API's GET /client/v4/ips). Copied in 2025;
 * the lists last changed in 2021, when 104.16.0.0/12 became 104.16.0.0/13 and
 * 104.24.0.0/14. Compare with those pages when upgrading and update this list when they
 * differ: a missing range makes its visitors appear as Cloudflare's addresses (one shared
 * rate limit bucket), an extra one would let its holder name any client. */
static const char cloudflare_ranges[] =
    "173.245.48.0/20,103.21.244.0/22,103.22.200.0/22,103.31.4.0/22,141.101.64.0/18,"
    "108.162.192.0/18,190.93.240.0/20,188.114.96.0/20,197.234.240.0/22,198.41.128.0/17,"
    "162.158.0.0/15,104.16.0.0/13,104.24.0.0/14,172.64.0.0/13,131.0.72.0/22,"
    "2400:cb00::/32,2606:4700::/32,2803:f800::/32,2405:b500::/32,2405:8100::/32,"
    "2a06:98c0::/29,2c0f:f248::/32";

struct http_trust {
    netaddr_allowlist *all;        /* every trusted range, Cloudflare's included */
    netaddr_allowlist *cloudflare; /* Cloudflare's, when listed; else NULL */
};

void http_trust_free(http_trust *t)
{
    if (!t)
        return;
    netaddr_allowlist_free(t->all);
    netaddr_allowlist_free(t->cloudflare);
    free(t);
}

/* Whether entry (trimmed, NUL-terminated) is an address or "address/bits": names are
 * refused here, where the allow list parser would take them. */
static bool is_range_entry(const char *entry)
{
    char addr[INET6_ADDRSTRLEN + 8];
    size_t len = strcspn(entry, "/");
    if (len == 0 || len >= sizeof addr)
        return false;
    memcpy(addr, entry, len);
    addr[len] = '\0';
    unsigned char buf[16];
    return inet_pton(AF_INET, addr, buf) == 1 || inet_pton(AF_INET6, addr, buf) == 1;
}

int http_trust_parse(const char *text, http_trust **out, cu_error *err)
{
    *out = NULL;
    char *copy = strdup(text ? text : "");
    /* The operator's entries plus, at most once, Cloudflare's: the list the allow list
     * parser then reads (it checks prefix lengths and host bits). */
    char *joined = malloc(strlen(copy ? copy : "") + sizeof cloudflare_ranges + 2);
    http_trust *t = calloc(1, sizeof *t);
    int rc = copy && joined && t ? 0 : cu_fail_oom(err);
    bool cloudflare = false;
    size_t used = 0;
    char *cursor = rc ? NULL : copy;
    for (char *tok; (tok = util_list_next(&cursor)) != NULL;) {
        if (!strcasecmp(tok, "cloudflare")) {
            cloudflare = true;
            continue;
        }
        if (!is_range_entry(tok)) {
            rc =
                cu_fail(err, CU_EINVAL,
                        "\"%s\" is not an IP address or CIDR range (nor the word cloudflare)", tok);
            break;
        }
        used += (size_t)sprintf(joined + used, "%s%s", used ? "," : "", tok);
    }
    if (rc == 0 && cloudflare) {
        used += (size_t)sprintf(joined + used, "%s%s", used ? "," : "", cloudflare_ranges);
        rc = netaddr_allowlist_parse(cloudflare_ranges, &t->cloudflare, err);
    }
    if (rc == 0 && used)
        rc = netaddr_allowlist_parse(joined, &t->all, err);
    free(copy);
    free(joined);
    if (rc != 0 || !t->all) {
        http_trust_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

bool http_trust_has(const http_trust *t, const netaddr *a)
{
    return t && netaddr_allowlist_has_addr(t->all, a);
}

bool http_trust_is_cloudflare(const http_trust *t, const netaddr *a)
{
    return t && t->cloudflare && netaddr_allowlist_has_addr(t->cloudflare, a);
}

/* Whether text[0..len) is ":digits" (a port of 1 to 5 digits). */
static bool is_port(const char *text, size_t len)
{
    if (len < 2 || len > 6 || text[0] != ':')
        return false;
    for (size_t i = 1; i < len; i++)
        if (!isdigit((unsigned char)text[i]))
            return false;
    return true;
}

int http_trust_parse_hop(const char *text, size_t len, netaddr *out)
{
    while (len && (*text == ' ' || *text == '\t'))
        text++, len--;
    while (len && (text[len - 1] == ' ' || text[len - 1] == '\t'))
        len--;
    char buf[INET6_ADDRSTRLEN];
    int family;
    if (len && text[0] == '[') { /* "[v6]" or "[v6]:port" */
        const char *close = memchr(text, ']', len);
        if (!close)
            return -1;
        size_t after = len - (size_t)(close + 1 - text);
        if (after && !is_port(close + 1, after))
            return -1;
        text++;
        len = (size_t)(close - text);
        family = AF_INET6;
    } else if (memchr(text, '.', len) && memchr(text, ':', len)) {
        const char *colon = memchr(text, ':', len); /* "v4:port" (or a v6 with a v4 tail) */
        if (is_port(colon, len - (size_t)(colon - text))) {
            len = (size_t)(colon - text);
            family = AF_INET;
        } else {
            family = AF_INET6;
        }
    } else {
        family = memchr(text, ':', len) ? AF_INET6 : AF_INET;
    }
    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, text, len);
    buf[len] = '\0';
    memset(out, 0, sizeof *out);
    if (inet_pton(family, buf, out->bytes) != 1)
        return -1;
    out->family = family;
    netaddr_unmap(out);
    return 0;
}

bool http_trust_client(const http_trust *t, const netaddr *peer, const char *cf_connecting_ip,
                       const char *const *xff, size_t nxff, netaddr *client)
{
    *client = *peer;
    netaddr_unmap(client);
    if (!http_trust_has(t, peer))
        return false;
    netaddr hop;
    if (cf_connecting_ip && http_trust_is_cloudflare(t, peer) &&
        http_trust_parse_hop(cf_connecting_ip, strlen(cf_connecting_ip), &hop) == 0) {
        *client = hop;
        return true;
    }
    /* From the rightmost entry of the last header leftwards: *client is the nearest hop
     * known so far, trusted until the loop finds one that is not. */
    int hops = 0;
    for (size_t h = nxff; h-- > 0;) {
        const char *start = xff[h];
        const char *end = start + strlen(start);
        while (end > start) {
            const char *comma = end;
            while (comma > start && comma[-1] != ',')
                comma--;
            size_t len = (size_t)(end - comma);
            end = comma > start ? comma - 1 : start;
            bool blank = strspn(comma, " \t") >= len;
            if (blank)
                continue; /* "a, , b" and a trailing comma: empty list elements (RFC 9110) */
            if (http_trust_parse_hop(comma, len, &hop) != 0 || ++hops > HTTP_TRUST_MAX_HOPS)
                return true;
            *client = hop;
            if (!http_trust_has(t, &hop))
                return true;
        }
    }
    return true;
}
