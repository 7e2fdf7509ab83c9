/* test_trust.c - TRUST_PROXY lists, the addresses forwarding headers carry, and which of
 * them is the client (http/trust.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "http/trust.h"
#include "unit_helpers.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

static netaddr addr(const char *text)
{
    netaddr a;
    if (netaddr_parse(text, &a) != 0)
        print_error("test address \"%s\" does not parse\n", text);
    assert_int_equal(netaddr_parse(text, &a), 0);
    return a;
}

static http_trust *trust(const char *text)
{
    http_trust *t = NULL;
    cu_error err;
    assert_cu_ok(http_trust_parse(text, &t, &err), err);
    assert_non_null(t);
    return t;
}

static void assert_hop(const char *text, const char *want)
{
    netaddr a;
    char got[NETADDR_TEXT_LEN];
    int rc = http_trust_parse_hop(text, strlen(text), &a);
    if (rc != 0)
        print_error("hop \"%s\" did not parse\n", text);
    assert_int_equal(rc, 0);
    netaddr_format(&a, got);
    assert_string_equal(got, want);
}

static void test_parse_lists(void **state)
{
    (void)state;
    cu_error err;
    http_trust *t = NULL;
    assert_cu_ok(http_trust_parse(NULL, &t, &err), err);
    assert_null(t);
    assert_cu_ok(http_trust_parse(" , ,", &t, &err), err);
    assert_null(t);
    netaddr lo = addr("127.0.0.1");
    assert_false(http_trust_has(NULL, &lo)); /* no list: nothing trusted */

    t = trust(" 10.0.0.0/8 , ::1,192.0.2.7 ");
    netaddr in = addr("10.200.1.1"), out = addr("11.0.0.1"), v6 = addr("::1"),
            one = addr("192.0.2.7"), next = addr("192.0.2.8"), mapped = addr("::ffff:10.1.2.3");
    assert_true(http_trust_has(t, &in));
    assert_false(http_trust_has(t, &out));
    assert_true(http_trust_has(t, &v6));
    assert_true(http_trust_has(t, &one));
    assert_false(http_trust_has(t, &next));
    assert_true(http_trust_has(t, &mapped)); /* a dual-stack socket's view of 10.1.2.3 */
    assert_false(http_trust_is_cloudflare(t, &in));
    http_trust_free(t);

    /* Names are refused (a proxy is trusted by its address), and so are bad ranges. */
    const char *bad[] = {
        "proxy.internal", "localhost",   "10.0.0.0/33",      "10.1.2.3/8", "::1/129",
        "10.0.0.0/",      "cloud flare", "10.0.0.0/8,nginx", "*",          "1.2.3"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        t = NULL;
        assert_cu_fails(http_trust_parse(bad[i], &t, &err), CU_EINVAL, err);
        assert_null(t);
    }
    assert_cu_fails(http_trust_parse("10.0.0.0/8, nginx", &t, &err), CU_EINVAL, err);
    assert_non_null(strstr(err.msg, "nginx")); /* the message names the entry */
}

static void test_cloudflare_ranges(void **state)
{
    (void)state;
    http_trust *t = trust("Cloudflare, 127.0.0.1");
    const char *edges[] = {"173.245.48.1",      "103.21.244.9", "104.16.0.1",
                           "104.27.255.254",    "162.159.1.1",  "172.71.0.1",
                           "131.0.75.255",      "2400:cb00::1", "2606:4700:10::6816:1",
                           "2a06:98c7:ffff::1", "2c0f:f248::1"};
    for (size_t i = 0; i < sizeof edges / sizeof *edges; i++) {
        netaddr a = addr(edges[i]);
        if (!http_trust_is_cloudflare(t, &a))
            print_error("%s is not one of Cloudflare's\n", edges[i]);
        assert_true(http_trust_is_cloudflare(t, &a));
        assert_true(http_trust_has(t, &a));
    }
    const char *others[] = {"104.28.0.1", "8.8.8.8", "2a06:98c8::1", "2606:4701::1"};
    for (size_t i = 0; i < sizeof others / sizeof *others; i++) {
        netaddr a = addr(others[i]);
        assert_false(http_trust_is_cloudflare(t, &a));
        assert_false(http_trust_has(t, &a));
    }
    netaddr lo = addr("127.0.0.1");
    assert_true(http_trust_has(t, &lo));
    assert_false(http_trust_is_cloudflare(t, &lo));
    http_trust_free(t);
}

static void test_parse_hops(void **state)
{
    (void)state;
    assert_hop("203.0.113.7", "203.0.113.7");
    assert_hop("  203.0.113.7\t", "203.0.113.7");
    assert_hop("203.0.113.7:51234", "203.0.113.7");
    assert_hop("2001:db8::1", "2001:db8::1");
    assert_hop("[2001:db8::1]", "2001:db8::1");
    assert_hop("[2001:db8::1]:443", "2001:db8::1");
    assert_hop("::ffff:203.0.113.7", "203.0.113.7"); /* mapped: the IPv4 client it is */
    assert_hop("2001:DB8::A", "2001:db8::a");
    const char *bad[] = {"",
                         " ",
                         "unknown",
                         "localhost",
                         "127.1",
                         "0x7f000001",
                         "203.0.113.7:",
                         "203.0.113.7:123456",
                         "203.0.113.7:http",
                         "[2001:db8::1",
                         "[2001:db8::1]x",
                         "[2001:db8::1]:",
                         "[]",
                         "2001:db8::1:443x",
                         "fe80::1%eth0",
                         "203.0.113.7 203.0.113.8",
                         "_hidden",
                         "1.2.3.4.5"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        netaddr a;
        if (http_trust_parse_hop(bad[i], strlen(bad[i]), &a) == 0)
            print_error("\"%s\" parsed as a hop\n", bad[i]);
        assert_int_equal(http_trust_parse_hop(bad[i], strlen(bad[i]), &a), -1);
    }
    /* Only len bytes count: a hop inside a longer header. */
    netaddr a;
    assert_int_equal(http_trust_parse_hop("10.0.0.1, 10.0.0.2", 8, &a), 0);
}

/* The client for peer with these headers, as text; *trusted set to what was returned. */
static const char *client_of(const http_trust *t, const char *peer, const char *cf,
                             const char *const *xff, size_t nxff, bool *trusted)
{
    static char out[NETADDR_TEXT_LEN];
    netaddr p = addr(peer), c;
    *trusted = http_trust_client(t, &p, cf, xff, nxff, &c);
    netaddr_format(&c, out);
    return out;
}

static void test_client_walk(void **state)
{
    (void)state;
    http_trust *t = trust("127.0.0.1, 10.0.0.0/8, 2001:db8:ffff::/48");
    bool trusted;
    const char *one[] = {"198.51.100.1"};
    /* An untrusted peer: its headers mean nothing, whatever they say. */
    assert_string_equal(client_of(t, "203.0.113.9", "198.51.100.2", one, 1, &trusted),
                        "203.0.113.9");
    assert_false(trusted);
    assert_string_equal(client_of(NULL, "127.0.0.1", NULL, one, 1, &trusted), "127.0.0.1");
    assert_false(trusted);
    /* A trusted peer: the rightmost untrusted entry. */
    assert_string_equal(client_of(t, "127.0.0.1", NULL, one, 1, &trusted), "198.51.100.1");
    assert_true(trusted);
    const char *chain[] = {"1.1.1.1, 198.51.100.1, 10.1.1.1, 10.2.2.2"};
    assert_string_equal(client_of(t, "127.0.0.1", NULL, chain, 1, &trusted), "198.51.100.1");
    /* A forged left part is never reached: 6.6.6.6 is what the client itself wrote. */
    const char *forged[] = {"6.6.6.6, 198.51.100.1"};
    assert_string_equal(client_of(t, "10.0.0.5", NULL, forged, 1, &trusted), "198.51.100.1");
    /* Several headers are one list, in order: the last header's last entry is nearest. */
    const char *split[] = {"6.6.6.6", "198.51.100.3, 10.0.0.9", " ,10.0.0.8,"};
    assert_string_equal(client_of(t, "127.0.0.1", NULL, split, 3, &trusted), "198.51.100.3");
    /* Every hop trusted: the leftmost. */
    const char *inside[] = {"10.0.0.1, 10.0.0.2"};
    assert_string_equal(client_of(t, "127.0.0.1", NULL, inside, 1, &trusted), "10.0.0.1");
    /* No header: the peer. */
    assert_string_equal(client_of(t, "127.0.0.1", NULL, NULL, 0, &trusted), "127.0.0.1");
    assert_true(trusted);
    /* Garbage ends the walk at the last trusted hop: nothing left of it is believed. */
    const char *garbage[] = {"198.51.100.1, unknown, 10.0.0.3"};
    assert_string_equal(client_of(t, "127.0.0.1", NULL, garbage, 1, &trusted), "10.0.0.3");
    const char *garbage_first[] = {"198.51.100.1, evil"};
    assert_string_equal(client_of(t, "127.0.0.1", NULL, garbage_first, 1, &trusted), "127.0.0.1");
    /* IPv6 hops, ports and brackets; a mapped peer is its IPv4 address. */
    const char *v6[] = {"[2001:db8:1::7]:5000, [2001:db8:ffff::1]"};
    assert_string_equal(client_of(t, "::ffff:127.0.0.1", NULL, v6, 1, &trusted), "2001:db8:1::7");
    assert_true(trusted);
    assert_string_equal(client_of(t, "::ffff:203.0.113.9", NULL, NULL, 0, &trusted), "203.0.113.9");
    /* More trusted hops than the walk takes: it stops at the last one it read. */
    char many[64 * 12] = "198.51.100.1";
    for (int i = 0; i < HTTP_TRUST_MAX_HOPS + 5; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), ",10.0.0.%d", i + 1);
    const char *long_chain[] = {many};
    char want[32];
    snprintf(want, sizeof want, "10.0.0.%d", HTTP_TRUST_MAX_HOPS + 5 - HTTP_TRUST_MAX_HOPS + 1);
    assert_string_equal(client_of(t, "127.0.0.1", NULL, long_chain, 1, &trusted), want);
    /* CF-Connecting-IP means nothing unless the peer is Cloudflare's and listed as such. */
    assert_string_equal(client_of(t, "127.0.0.1", "198.51.100.50", one, 1, &trusted),
                        "198.51.100.1");
    http_trust_free(t);
}

static void test_cloudflare_header(void **state)
{
    (void)state;
    http_trust *t = trust("cloudflare");
    bool trusted;
    const char *xff[] = {"6.6.6.6, 198.51.100.1"};
    /* From Cloudflare's edge: CF-Connecting-IP, which Cloudflare itself sets. */
    assert_string_equal(client_of(t, "172.64.1.1", "198.51.100.77", xff, 1, &trusted),
                        "198.51.100.77");
    assert_true(trusted);
    assert_string_equal(client_of(t, "2606:4700::1", "2001:db8::77", xff, 1, &trusted),
                        "2001:db8::77");
    /* Malformed: X-Forwarded-For instead. */
    assert_string_equal(client_of(t, "172.64.1.1", "nope", xff, 1, &trusted), "198.51.100.1");
    /* From anyone else: forged, ignored. */
    assert_string_equal(client_of(t, "203.0.113.9", "198.51.100.77", xff, 1, &trusted),
                        "203.0.113.9");
    assert_false(trusted);
    http_trust_free(t);

    /* Behind a local proxy that is behind Cloudflare: the walk passes both. */
    t = trust("127.0.0.1,cloudflare");
    const char *via[] = {"198.51.100.1, 162.158.0.9"};
    assert_string_equal(client_of(t, "127.0.0.1", "6.6.6.6", via, 1, &trusted), "198.51.100.1");
    http_trust_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_lists),       cmocka_unit_test(test_cloudflare_ranges),
        cmocka_unit_test(test_parse_hops),        cmocka_unit_test(test_client_walk),
        cmocka_unit_test(test_cloudflare_header),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
