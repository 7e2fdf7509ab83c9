/* fuzz_trust.c - TRUST_PROXY, the addresses X-Forwarded-For and CF-Connecting-IP carry, and
 * the client they name (src/http/trust.c).
 *
 * The input is NUL-separated: TRUST_PROXY text, the peer (as a hop; an unparsable one is
 * taken from a fixed list by its first byte), CF-Connecting-IP (an empty field: none), then
 * any number of X-Forwarded-For header values.
 * Invariants: a parse error is CU_EINVAL (or CU_ENOMEM) with a message; every hop that parses
 * formats to text that parses back to the same address, never IPv4-mapped; an untrusted
 * peer is its own client whatever the headers say; a trusted peer's client is what a
 * straightforward model of the walk (split every header forwards, read the entries from
 * the right) gives, and is the peer, the CF-Connecting-IP of a Cloudflare peer, or one of
 * the entries. */
#include "fuzz_common.h"

#include "http/trust.h"

#include <arpa/inet.h>

static const char *const fallback_peers[] = {"127.0.0.1",    "10.0.0.1",    "172.64.0.1",
                                             "2606:4700::1", "203.0.113.9", "::ffff:127.0.0.1",
                                             "2001:db8::1",  "162.158.1.1"};

static bool same(const netaddr *a, const netaddr *b)
{
    return a->family == b->family && !memcmp(a->bytes, b->bytes, sizeof a->bytes);
}

static void check_hop(const char *text, size_t len)
{
    netaddr a, back;
    if (http_trust_parse_hop(text, len, &a) != 0)
        return;
    FUZZ_CHECK(a.family == AF_INET || a.family == AF_INET6);
    char out[NETADDR_TEXT_LEN];
    netaddr_format(&a, out);
    FUZZ_CHECK(http_trust_parse_hop(out, strlen(out), &back) == 0 && same(&a, &back));
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    FUZZ_CHECK(a.family == AF_INET || memcmp(a.bytes, mapped, sizeof mapped) != 0);
}

/* The walk, written the plain way: every entry of every header in order, then from the
 * right. */
static netaddr model(const http_trust *t, const netaddr *peer, const char *cf, char **xff,
                     size_t nxff)
{
    netaddr client = *peer, hop;
    netaddr_unmap(&client);
    if (cf && http_trust_is_cloudflare(t, peer) && http_trust_parse_hop(cf, strlen(cf), &hop) == 0)
        return hop;
    const char *starts[4096];
    size_t lens[4096], n = 0;
    for (size_t h = 0; h < nxff; h++) {
        const char *p = xff[h];
        for (;;) {
            size_t len = strcspn(p, ",");
            if (strspn(p, " \t") < len && n < sizeof lens / sizeof *lens) {
                starts[n] = p;
                lens[n++] = len;
            }
            if (!p[len])
                break;
            p += len + 1;
        }
    }
    int hops = 0;
    while (n-- > 0) {
        if (http_trust_parse_hop(starts[n], lens[n], &hop) != 0 || ++hops > HTTP_TRUST_MAX_HOPS)
            return client;
        client = hop;
        if (!http_trust_has(t, &hop))
            return client;
    }
    return client;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 8192)
        return 0; /* the model's entry list is bounded; real header blocks are too */
    char *trust_text = fuzz_take_until(&data, &size, 0);
    char *peer_text = fuzz_take_until(&data, &size, 0);
    char *cf = fuzz_take_until(&data, &size, 0);
    char *xff[64];
    size_t nxff = 0;
    while (size && nxff < sizeof xff / sizeof *xff)
        xff[nxff++] = fuzz_take_until(&data, &size, 0);

    http_trust *t = NULL;
    cu_error err = {0};
    int rc = http_trust_parse(trust_text, &t, &err);
    if (rc != 0) {
        FUZZ_CHECK((rc == CU_EINVAL || rc == CU_ENOMEM) && err.code == rc && err.msg[0]);
        FUZZ_CHECK(t == NULL);
    }
    check_hop(peer_text, strlen(peer_text));
    check_hop(cf, strlen(cf));
    for (size_t i = 0; i < nxff; i++)
        check_hop(xff[i], strlen(xff[i]));

    netaddr peer;
    if (http_trust_parse_hop(peer_text, strlen(peer_text), &peer) != 0) {
        size_t pick = peer_text[0] ? (unsigned char)peer_text[0] : 0;
        const char *fixed = fallback_peers[pick % (sizeof fallback_peers / sizeof *fallback_peers)];
        FUZZ_CHECK(netaddr_parse(fixed, &peer) == 0);
    }
    const char *cf_header = cf[0] ? cf : NULL;
    netaddr client;
    bool trusted = http_trust_client(t, &peer, cf_header, (const char *const *)xff, nxff, &client);
    FUZZ_CHECK(trusted == http_trust_has(t, &peer));
    netaddr unmapped = peer;
    netaddr_unmap(&unmapped);
    netaddr want = trusted ? model(t, &peer, cf_header, xff, nxff) : unmapped;
    FUZZ_CHECK(same(&client, &want));
    /* Without trust nothing a header says counts. */
    netaddr untrusted_client;
    FUZZ_CHECK(!http_trust_client(NULL, &peer, cf_header, (const char *const *)xff, nxff,
                                  &untrusted_client));
    FUZZ_CHECK(same(&untrusted_client, &unmapped));

    http_trust_free(t);
    for (size_t i = 0; i < nxff; i++)
        free(xff[i]);
    free(cf);
    free(peer_text);
    free(trust_text);
    return 0;
}
