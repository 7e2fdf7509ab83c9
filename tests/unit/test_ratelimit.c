/* test_ratelimit.c - the token buckets' arithmetic, the table of clients (IPv6 by /64, its
 * bound and what it evicts) and the table under threads (http/ratelimit.h). The filter
 * itself, over real sockets, is in test_filters.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "http/ratelimit.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#define SEC INT64_C(1000000000)
#define T0 (1000 * SEC) /* a monotonic clock's "now", well after 0 */

static netaddr addr(const char *text)
{
    netaddr a;
    assert_int_equal(netaddr_parse(text, &a), 0);
    return a;
}

static void test_bucket_math(void **state)
{
    (void)state;
    /* 60 a minute, 10 at once: one token a second, a full bucket holds 10. */
    http_rate r = http_rate_make(60, 10);
    assert_int_equal(r.interval_ns, SEC);
    assert_int_equal(r.tolerance_ns, 9 * SEC);
    int64_t tat = 0; /* a new bucket is full */
    assert_true(http_rate_full(&r, tat, T0));
    for (int i = 0; i < 10; i++)
        assert_int_equal(http_rate_take(&r, &tat, T0), 0);
    assert_false(http_rate_full(&r, tat, T0));
    /* Empty: the next token comes in exactly one interval, and a refusal takes nothing. */
    assert_int_equal(http_rate_take(&r, &tat, T0), SEC);
    assert_int_equal(http_rate_take(&r, &tat, T0 + SEC / 4), 3 * SEC / 4);
    assert_int_equal(http_rate_wait(&r, tat, T0 + SEC / 4), 3 * SEC / 4);
    assert_int_equal(http_rate_take(&r, &tat, T0 + SEC), 0);
    assert_int_equal(http_rate_take(&r, &tat, T0 + SEC), SEC);
    /* 3.5 s later: 3 tokens, not 4. */
    int64_t later = T0 + SEC + 3 * SEC + SEC / 2;
    for (int i = 0; i < 3; i++)
        assert_int_equal(http_rate_take(&r, &tat, later), 0);
    assert_int_equal(http_rate_take(&r, &tat, later), SEC / 2);
    /* Refills to the burst and no further, however long it waits. */
    int64_t much_later = later + 3600 * SEC;
    assert_true(http_rate_full(&r, tat, much_later));
    int taken = 0;
    while (http_rate_take(&r, &tat, much_later) == 0)
        taken++;
    assert_int_equal(taken, 10);

    /* Sustained: over a minute at one request every 100 ms, 60 + burst pass. */
    r = http_rate_make(60, 10);
    tat = 0;
    int passed = 0;
    for (int64_t t = T0; t < T0 + 60 * SEC; t += SEC / 10)
        passed += http_rate_take(&r, &tat, t) == 0;
    assert_in_range(passed, 69, 70);

    /* A burst of 1: exactly the rate. */
    r = http_rate_make(30, 1);
    tat = 0;
    assert_int_equal(http_rate_take(&r, &tat, T0), 0);
    assert_int_equal(http_rate_take(&r, &tat, T0), 2 * SEC);

    /* 0 a minute: no limit at all. */
    r = http_rate_make(0, 5);
    tat = 0;
    for (int i = 0; i < 1000; i++)
        assert_int_equal(http_rate_take(&r, &tat, T0), 0);
    http_rate_charge(&r, &tat, T0);
    assert_int_equal(http_rate_wait(&r, tat, T0), 0);

    /* The extremes of the configuration do not overflow. */
    r = http_rate_make(60000000, 1000000);
    assert_int_equal(r.interval_ns, 1000);
    r = http_rate_make(1, 1000000);
    tat = 0;
    assert_int_equal(http_rate_take(&r, &tat, T0), 0);
    assert_true(r.tolerance_ns > 0);
}

static void test_charge_is_capped(void **state)
{
    (void)state;
    /* Failures: 30 a minute, 30 at once (one every 2 s). */
    http_rate r = http_rate_make(30, 30);
    int64_t tat = 0;
    for (int i = 0; i < 29; i++) {
        http_rate_charge(&r, &tat, T0);
        assert_int_equal(http_rate_wait(&r, tat, T0), 0);
    }
    http_rate_charge(&r, &tat, T0);
    assert_int_equal(http_rate_wait(&r, tat, T0), 2 * SEC);
    /* Failures keep coming (requests that passed the check at the same time): still one
     * interval, not one per failure. */
    for (int i = 0; i < 100; i++)
        http_rate_charge(&r, &tat, T0);
    assert_int_equal(http_rate_wait(&r, tat, T0), 2 * SEC);
    assert_int_equal(http_rate_wait(&r, tat, T0 + 2 * SEC), 0);
}

static void test_table_keys_and_limits(void **state)
{
    (void)state;
    http_ratelimit_options o = {
        .per_minute = 60, .burst = 3, .auth_failures_per_minute = 2, .max_clients = 64};
    http_ratelimit *rl = http_ratelimit_new(&o);
    assert_non_null(rl);
    bool auth;
    netaddr a = addr("192.0.2.1"), b = addr("192.0.2.2");
    for (int i = 0; i < 3; i++)
        assert_int_equal(http_ratelimit_check(rl, &a, false, T0, &auth), 0);
    assert_int_equal(http_ratelimit_check(rl, &a, false, T0, &auth), SEC);
    assert_false(auth);
    /* Another address has its own bucket. */
    assert_int_equal(http_ratelimit_check(rl, &b, false, T0, &auth), 0);
    /* IPv6: one bucket per /64. */
    netaddr v1 = addr("2001:db8:1:2::1"), v2 = addr("2001:db8:1:2:ffff:ffff:ffff:ffff"),
            v3 = addr("2001:db8:1:3::1");
    for (int i = 0; i < 3; i++)
        assert_int_equal(http_ratelimit_check(rl, i % 2 ? &v1 : &v2, false, T0, &auth), 0);
    assert_true(http_ratelimit_check(rl, &v2, false, T0, &auth) > 0);
    assert_int_equal(http_ratelimit_check(rl, &v3, false, T0, &auth), 0);
    /* An IPv4 address and the IPv6 address with the same leading bytes are not one. */
    netaddr v4like = addr("c000:201::"); /* 192.0.2.1 in its first 32 bits */
    assert_int_equal(http_ratelimit_check(rl, &v4like, false, T0, &auth), 0);

    /* Failures: two allowed, then requests that need credentials are refused, others not. */
    netaddr c = addr("198.51.100.1");
    http_ratelimit_failure(rl, &c, T0);
    assert_int_equal(http_ratelimit_check(rl, &c, true, T0, &auth), 0);
    http_ratelimit_failure(rl, &c, T0);
    int64_t wait = http_ratelimit_check(rl, &c, true, T0 + SEC / 10, &auth);
    assert_true(auth);
    assert_int_equal(wait, 30 * SEC - SEC / 10);
    assert_int_equal(http_ratelimit_check(rl, &c, false, T0 + SEC / 10, &auth), 0);
    assert_false(auth);
    assert_int_equal(http_ratelimit_check(rl, &c, true, T0 + 30 * SEC, &auth), 0);
    http_ratelimit_free(rl);

    /* Both limits off: nothing is tracked at all. */
    o = (http_ratelimit_options){.per_minute = 0, .burst = 1, .auth_failures_per_minute = 0};
    rl = http_ratelimit_new(&o);
    for (int i = 0; i < 100; i++)
        assert_int_equal(http_ratelimit_check(rl, &a, true, T0, &auth), 0);
    http_ratelimit_failure(rl, &a, T0);
    assert_int_equal(http_ratelimit_clients(rl), 0);
    http_ratelimit_free(rl);
}

static void test_table_bounded(void **state)
{
    (void)state;
    http_ratelimit_options o = {
        .per_minute = 60, .burst = 2, .auth_failures_per_minute = 1, .max_clients = 16};
    http_ratelimit *rl = http_ratelimit_new(&o);
    bool auth;
    /* A client that used its burst, then many others, all seen after it. */
    netaddr limited = addr("203.0.113.1");
    http_ratelimit_check(rl, &limited, false, T0, &auth);
    http_ratelimit_check(rl, &limited, false, T0, &auth);
    assert_true(http_ratelimit_check(rl, &limited, false, T0, &auth) > 0);
    for (int i = 0; i < 1000; i++) {
        char text[32];
        snprintf(text, sizeof text, "10.%d.%d.1", i / 250, i % 250);
        netaddr a = addr(text);
        http_ratelimit_check(rl, &a, false, T0 + 10, &auth); /* one token: not full */
        assert_true(http_ratelimit_clients(rl) <= 16);
    }
    assert_int_equal(http_ratelimit_clients(rl), 16);
    /* None of them was full, so the least recently seen went first: the limited client too. */
    assert_int_equal(http_ratelimit_check(rl, &limited, false, T0 + 20, &auth), 0);
    http_ratelimit_free(rl);

    /* Clients whose buckets are full are forgotten before one that is still limited. */
    rl = http_ratelimit_new(&o);
    netaddr failing = addr("203.0.113.2");
    http_ratelimit_failure(rl, &failing, T0);
    for (int i = 0; i < 15; i++) {
        char text[32];
        snprintf(text, sizeof text, "10.1.0.%d", i + 1);
        netaddr a = addr(text);
        http_ratelimit_check(rl, &a, false, T0, &auth);
    }
    /* 30 s on, the 15 are full again; "failing" is the least recently seen but its failure
     * bucket refills only at 60 s: the 15 go first. */
    for (int i = 0; i < 15; i++) {
        char text[32];
        snprintf(text, sizeof text, "10.2.0.%d", i + 1);
        netaddr a = addr(text);
        http_ratelimit_check(rl, &a, false, T0 + 30 * SEC, &auth);
    }
    assert_int_equal(http_ratelimit_clients(rl), 16);
    assert_true(http_ratelimit_check(rl, &failing, true, T0 + 30 * SEC, &auth) > 0);
    assert_true(auth);
    http_ratelimit_free(rl);
}

typedef struct {
    http_ratelimit *rl;
    netaddr a;
    _Atomic int *passed;
} hammer_arg;

static void *hammer(void *p)
{
    hammer_arg *h = p;
    bool auth;
    for (int i = 0; i < 5000; i++)
        if (http_ratelimit_check(h->rl, &h->a, false, T0, &auth) == 0)
            atomic_fetch_add(h->passed, 1);
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    /* 8 threads, one client, one instant: exactly the burst passes, never one more. */
    http_ratelimit_options o = {.per_minute = 600, .burst = 300, .auth_failures_per_minute = 30};
    http_ratelimit *rl = http_ratelimit_new(&o);
    _Atomic int passed = 0;
    pthread_t th[8];
    hammer_arg args[8];
    for (int i = 0; i < 8; i++) {
        args[i] = (hammer_arg){.rl = rl, .a = addr("192.0.2.9"), .passed = &passed};
        pthread_create(&th[i], NULL, hammer, &args[i]);
    }
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&passed), 300);
    /* And 8 clients at once: each its own burst. */
    atomic_store(&passed, 0);
    for (int i = 0; i < 8; i++) {
        char text[32];
        snprintf(text, sizeof text, "2001:db8:%d::1", i + 1);
        args[i] = (hammer_arg){.rl = rl, .a = addr(text), .passed = &passed};
        pthread_create(&th[i], NULL, hammer, &args[i]);
    }
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&passed), 8 * 300);
    http_ratelimit_free(rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bucket_math),
        cmocka_unit_test(test_charge_is_capped),
        cmocka_unit_test(test_table_keys_and_limits),
        cmocka_unit_test(test_table_bounded),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
