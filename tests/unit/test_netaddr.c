/* test_netaddr.c - address literals in every form, which of them are not public, and allow
 * lists of names and ranges. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "base/netaddr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* text parses as an address whose canonical form is want. */
static void assert_parses(const char *text, const char *want)
{
    netaddr a;
    char got[NETADDR_TEXT_LEN];
    if (netaddr_parse(text, &a) != 0)
        print_error("\"%s\" did not parse\n", text);
    assert_int_equal(netaddr_parse(text, &a), 0);
    netaddr_format(&a, got);
    if (strcmp(got, want) != 0)
        print_error("\"%s\" parsed as %s, expected %s\n", text, got, want);
    assert_string_equal(got, want);
}

static void test_parse_every_form(void **state)
{
    (void)state;
    /* The forms inet_aton (so getaddrinfo, so libcurl's resolver) reads as 127.0.0.1. */
    assert_parses("127.0.0.1", "127.0.0.1");
    assert_parses("2130706433", "127.0.0.1");
    assert_parses("0x7f000001", "127.0.0.1");
    assert_parses("0X7F000001", "127.0.0.1");
    assert_parses("017700000001", "127.0.0.1");
    assert_parses("0177.0.0.1", "127.0.0.1");
    assert_parses("0x7f.0.0.1", "127.0.0.1");
    assert_parses("0x7f.1", "127.0.0.1");
    assert_parses("127.1", "127.0.0.1");
    assert_parses("127.0.1", "127.0.0.1");
    assert_parses("127.000.000.001", "127.0.0.1");
    assert_parses("0", "0.0.0.0");
    assert_parses("169.254.43518", "169.254.169.254");
    assert_parses("0xa9fea9fe", "169.254.169.254");
    /* IPv6, bare or as a URL brackets it, with a zone. */
    assert_parses("::1", "::1");
    assert_parses("[::1]", "::1");
    assert_parses("[0:0:0:0:0:0:0:1]", "::1");
    assert_parses("[::ffff:127.0.0.1]", "::ffff:127.0.0.1");
    assert_parses("[::ffff:7f00:1]", "::ffff:127.0.0.1");
    assert_parses("fe80::1%lo", "fe80::1");
    assert_parses("[FE80::1]", "fe80::1");
    /* Not addresses: names, junk, out of range. */
    const char *not_addresses[] = {
        "",           "localhost",  "example.com", "1.2.3.4.5", "4294967296", "0x100000000",
        "127.0.0.1 ", " 127.0.0.1", "[127.0.0.1]", "[::1",      "::1]",       "1.2.3.256",
        "[]",         "::g"};
    for (size_t i = 0; i < sizeof not_addresses / sizeof *not_addresses; i++) {
        netaddr a;
        if (netaddr_parse(not_addresses[i], &a) == 0)
            print_error("\"%s\" parsed as an address\n", not_addresses[i]);
        assert_int_equal(netaddr_parse(not_addresses[i], &a), -1);
    }
}

/* text parses, and is special (want: a word its range's name contains) or public (NULL). */
static void assert_class(const char *text, const char *want)
{
    netaddr a;
    if (netaddr_parse(text, &a) != 0)
        print_error("\"%s\" did not parse\n", text);
    assert_int_equal(netaddr_parse(text, &a), 0);
    const char *got = netaddr_special(&a);
    if (want ? !got || !strstr(got, want) : got != NULL)
        print_error("%s: \"%s\", expected %s%s%s\n", text, got ? got : "public", want ? "\"" : "",
                    want ? want : "public", want ? "\"" : "");
    if (want) {
        assert_non_null(got);
        assert_non_null(strstr(got, want));
    } else {
        assert_null(got);
    }
}

static void test_ipv4_ranges(void **state)
{
    (void)state;
    assert_class("0.0.0.0", "unspecified");
    assert_class("0.1.2.3", "this network");
    assert_class("10.0.0.1", "private");
    assert_class("10.255.255.255", "private");
    assert_class("100.64.0.1", "carrier-grade NAT");
    assert_class("100.127.255.255", "carrier-grade NAT");
    assert_class("127.0.0.1", "loopback");
    assert_class("127.255.255.254", "loopback");
    assert_class("169.254.169.254", "link-local"); /* cloud metadata */
    assert_class("172.16.0.1", "private");
    assert_class("172.31.255.255", "private");
    assert_class("192.0.0.8", "IETF");
    assert_class("192.0.2.1", "documentation");
    assert_class("192.88.99.1", "6to4");
    assert_class("192.168.1.1", "private");
    assert_class("198.18.0.1", "benchmarking");
    assert_class("198.19.255.255", "benchmarking");
    assert_class("198.51.100.7", "documentation");
    assert_class("203.0.113.9", "documentation");
    assert_class("224.0.0.1", "multicast");
    assert_class("239.255.255.250", "multicast");
    assert_class("240.0.0.1", "reserved");
    assert_class("255.255.255.254", "reserved");
    assert_class("255.255.255.255", "broadcast");
    /* The same in other spellings. */
    assert_class("2130706433", "loopback");
    assert_class("0x7f.1", "loopback");
    assert_class("0251.0376.0251.0376", "link-local");
    assert_class("012.1", "private"); /* 10.0.0.1 */
    /* Public, including the neighbours of every range. */
    const char *public[] = {"1.1.1.1",         "8.8.8.8",     "9.255.255.255",   "11.0.0.0",
                            "100.63.255.255",  "100.128.0.0", "126.255.255.255", "128.0.0.0",
                            "169.253.255.255", "169.255.0.0", "172.15.255.255",  "172.32.0.0",
                            "192.0.1.255",     "192.0.3.0",   "192.167.255.255", "192.169.0.0",
                            "198.17.255.255",  "198.20.0.0",  "223.255.255.255", "93.184.216.34"};
    for (size_t i = 0; i < sizeof public / sizeof *public; i++)
        assert_class(public[i], NULL);
}

static void test_ipv6_ranges(void **state)
{
    (void)state;
    assert_class("::", "unspecified");
    assert_class("::1", "loopback");
    assert_class("::2", "IPv4-compatible");
    assert_class("::127.0.0.1", "IPv4-compatible");
    assert_class("::8.8.8.8", "IPv4-compatible"); /* deprecated whatever it carries */
    assert_class("::ffff:0:808:808", "IPv4-translated");
    assert_class("100::1", "discard");
    assert_class("fc00::1", "unique local");
    assert_class("fd12:3456::1", "unique local");
    assert_class("fe80::1", "link-local");
    assert_class("febf:ffff::1", "link-local");
    assert_class("fec0::1", "site-local");
    assert_class("ff02::1", "multicast");
    assert_class("ff05::1:3", "multicast");
    assert_class("2001:db8::1", "documentation");
    assert_class("3fff::1", "documentation");
    assert_class("2001::1", "Teredo");
    assert_class("2001:2::1", "IETF");
    assert_class("2001:10::1", "IETF");
    assert_class("64:ff9b:1::1", "local-use NAT64");
    assert_class("4000::1", "not global unicast");
    assert_class("8000::1", "not global unicast");
    /* Forms that carry an IPv4 address are what that address is. */
    assert_class("::ffff:127.0.0.1", "loopback");
    assert_class("::ffff:7f00:1", "loopback");
    assert_class("::ffff:10.1.2.3", "private");
    assert_class("::ffff:169.254.169.254", "link-local");
    assert_class("::ffff:0.0.0.0", "unspecified");
    assert_class("64:ff9b::127.0.0.1", "loopback");
    assert_class("64:ff9b::a9fe:a9fe", "link-local");
    assert_class("64:ff9b::192.168.0.1", "private");
    assert_class("2002:7f00:1::1", "loopback");
    assert_class("2002:a00:1::", "private");
    assert_class("2002:c0a8:101::1", "private");
    /* Public. */
    const char *public[] = {
        "2606:4700:4700::1111", "2a00:1450:4001:80b::200e", "2001:4860::8888", "::ffff:8.8.8.8",
        "64:ff9b::808:808",     "2002:808:808::1",          "2c0f:fb50::1",    "3ffe::1"};
    for (size_t i = 0; i < sizeof public / sizeof *public; i++)
        assert_class(public[i], NULL);
}

static void test_from_sockaddr(void **state)
{
    (void)state;
    struct sockaddr_in in = {.sin_family = AF_INET};
    inet_pton(AF_INET, "169.254.169.254", &in.sin_addr);
    netaddr a;
    assert_int_equal(netaddr_from_sockaddr((struct sockaddr *)&in, sizeof in, &a), 0);
    assert_int_equal(a.family, AF_INET);
    assert_non_null(netaddr_special(&a));
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "::ffff:127.0.0.1", &in6.sin6_addr);
    assert_int_equal(netaddr_from_sockaddr((struct sockaddr *)&in6, sizeof in6, &a), 0);
    assert_int_equal(a.family, AF_INET6);
    assert_string_equal(netaddr_special(&a), "loopback");
    /* Too short for its family, or another family: not an address. */
    assert_int_equal(netaddr_from_sockaddr((struct sockaddr *)&in6, sizeof in, &a), -1);
    struct sockaddr un = {.sa_family = AF_UNIX};
    assert_int_equal(netaddr_from_sockaddr(&un, sizeof un, &a), -1);
}

static bool has_addr(const netaddr_allowlist *l, const char *text)
{
    netaddr a;
    assert_int_equal(netaddr_parse(text, &a), 0);
    return netaddr_allowlist_has_addr(l, &a);
}

static void test_allowlist(void **state)
{
    (void)state;
    cu_error err;
    netaddr_allowlist *l = NULL;
    assert_int_equal(netaddr_allowlist_parse(" Hooks.Internal. , 10.1.0.0/16,127.0.0.1, "
                                             "fd00:1::/32,[::1],localhost,",
                                             &l, &err),
                     0);
    assert_non_null(l);
    /* Names: exactly those listed, any case, with or without the trailing dot. */
    assert_true(netaddr_allowlist_has_name(l, "hooks.internal"));
    assert_true(netaddr_allowlist_has_name(l, "HOOKS.INTERNAL."));
    assert_true(netaddr_allowlist_has_name(l, "localhost"));
    assert_false(netaddr_allowlist_has_name(l, "a.hooks.internal"));
    assert_false(netaddr_allowlist_has_name(l, "hooks.internal.evil.com"));
    assert_false(netaddr_allowlist_has_name(l, "internal"));
    assert_false(netaddr_allowlist_has_name(l, "10.1.0.1")); /* addresses are not names */
    /* Ranges: exactly what they cover. */
    assert_true(has_addr(l, "10.1.0.0"));
    assert_true(has_addr(l, "10.1.255.255"));
    assert_false(has_addr(l, "10.2.0.0"));
    assert_false(has_addr(l, "10.0.255.255"));
    assert_true(has_addr(l, "127.0.0.1"));
    assert_false(has_addr(l, "127.0.0.2"));
    assert_true(has_addr(l, "::ffff:127.0.0.1")); /* the same destination */
    assert_true(has_addr(l, "::ffff:10.1.2.3"));
    assert_false(has_addr(l, "64:ff9b::127.0.0.1"));
    assert_true(has_addr(l, "::1"));
    assert_false(has_addr(l, "::2"));
    assert_true(has_addr(l, "fd00:1:ffff::1"));
    assert_false(has_addr(l, "fd00:2::1"));
    assert_false(has_addr(l, "169.254.169.254"));
    netaddr_allowlist_free(l);

    /* A whole family, and short forms. */
    assert_int_equal(netaddr_allowlist_parse("0.0.0.0/0, 127.1", &l, &err), 0);
    assert_true(has_addr(l, "169.254.169.254"));
    assert_false(has_addr(l, "::1"));
    netaddr_allowlist_free(l);

    /* Nothing listed: an empty list, which allows nothing. */
    const char *empty[] = {"", " ", ",", " , ,"};
    for (size_t i = 0; i < sizeof empty / sizeof *empty; i++) {
        l = (netaddr_allowlist *)1;
        assert_int_equal(netaddr_allowlist_parse(empty[i], &l, &err), 0);
        assert_null(l);
    }
    assert_int_equal(netaddr_allowlist_parse(NULL, &l, &err), 0);
    assert_null(l);
    assert_false(netaddr_allowlist_has_name(NULL, "localhost"));
    assert_false(has_addr(NULL, "127.0.0.1"));

    /* Bad entries are refused, named. */
    const char *bad[] = {"10.0.0.0/33", "10.0.0.0/-1", "10.0.0.0/", "10.0.0.0/8x",
                         "10.1.2.3/8",  "::1/129",     "fd00::1/8", "*.example.com",
                         "exa mple",    "a/b",         "[zz]",      "http://x"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        l = NULL;
        int rc = netaddr_allowlist_parse(bad[i], &l, &err);
        if (rc != CU_EINVAL)
            print_error("\"%s\": rc %d\n", bad[i], rc);
        assert_int_equal(rc, CU_EINVAL);
        assert_null(l);
        assert_non_null(strstr(err.msg, "\""));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_every_form), cmocka_unit_test(test_ipv4_ranges),
        cmocka_unit_test(test_ipv6_ranges),      cmocka_unit_test(test_from_sockaddr),
        cmocka_unit_test(test_allowlist),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
