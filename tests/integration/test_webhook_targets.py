"""Where webhooks may go: an address literal that is not public is refused at init in every
spelling; a name that resolves inward is refused when the delivery connects, and given up
at once; WEBHOOK_ALLOWED_HOSTS opens exactly the names and ranges it lists; redirects are
not followed; a URL's credentials never reach the log."""

import base64
import os
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ServerTestCase  # noqa: E402
from test_webhook import Receiver  # noqa: E402

PASSWORD = "s3cret-pw-4f2a"

# Every form libc or libcurl reads as an address that is not public, port included.
REFUSED_AT_INIT = [
    "http://127.0.0.1:22/",
    "http://0x7f000001:{port}/hook",
    "http://2130706433:{port}/hook",
    "http://0177.0.0.1:{port}/",
    "http://017700000001/",
    "http://127.1:{port}/",
    "http://0x7f.1/",
    "http://127.0.0.1.:{port}/",
    "http://%31%32%37.0.0.1/",
    "http://\uff11\uff12\uff17.\uff10.\uff10.\uff11:{port}/",  # fullwidth digits (IDNA)
    "https://127.0.0.1/",
    "http://[::1]:{port}/",
    "http://[0:0:0:0:0:0:0:1]/",
    "http://[::ffff:127.0.0.1]:{port}/",
    "http://[::ffff:7f00:1]/",
    "http://[::127.0.0.1]/",
    "http://[64:ff9b::127.0.0.1]/",
    "http://[2002:7f00:1::1]/",
    "http://[fe80::1%25lo]/",
    "http://169.254.169.254/latest/meta-data/",
    "http://0xa9fea9fe/",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://[fd00::1]/",
    "http://0.0.0.0:{port}/",
    "http://0:{port}/",
    "http://[::]/",
    "http://255.255.255.255/",
    "http://224.0.0.1/",
    "http://192.0.2.1/",
    "http://user:" + PASSWORD + "@127.0.0.1:{port}/",
]


def db_rows(srv, sql, args=()):
    con = sqlite3.connect(os.path.join(srv.tmp, "uploads.db"))
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


class WebhookTargetTest(ServerTestCase):

    def receiver(self, **kw):
        r = Receiver(**kw)
        self.addCleanup(r.close)
        return r

    def completed_with_hook(self, srv, url, name="t.bin"):
        """A zero-byte upload with url as its webhook, completed; returns its id."""
        init = self.assertOk(srv.init(name, 0, webhook_url=url))
        self.assertOk(srv.complete(init["file_id"]))
        return init["file_id"]

    def wait_for(self, cond, timeout, what):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if cond():
                return
            time.sleep(0.05)
        self.fail("%s within %s s" % (what, timeout))

    def test_address_literals_refused_at_init(self):
        rec = self.receiver()
        srv = self.start_server()
        for form in REFUSED_AT_INIT:
            url = form.format(port=rec.port)
            with self.subTest(url=url):
                j = self.assertError(srv.init("a.bin", 10, webhook_url=url), 400,
                                     "webhooks go only to public addresses")
                self.assertIn("WEBHOOK_ALLOWED_HOSTS", j["error"])
                self.assertNotIn(PASSWORD, j["error"])
        # Nothing was created, nothing was sent, and the log never saw the password.
        self.assertEqual(db_rows(srv, "SELECT COUNT(*) FROM uploads"), [(0,)])
        time.sleep(0.5)
        self.assertEqual(rec.hits, [])
        self.assertNotIn(PASSWORD, srv.log_text())
        # Names are left to delivery; public addresses pass.
        self.assertOk(srv.init("a.bin", 10, webhook_url="http://localhost:%d/" % rec.port))
        self.assertOk(srv.init("b.bin", 10, webhook_url="https://93.184.216.34/hook"))
        self.assertOk(srv.init("c.bin", 10, webhook_url="https://[2606:4700:4700::1111]/"))

    def test_name_resolving_inward_refused_at_delivery(self):
        rec = self.receiver()
        srv = self.start_server(env={"WEBHOOK_RETRY_BASE_SECONDS": "0.2"})
        fid = self.completed_with_hook(srv, rec.url(host="localhost"))

        def given_up():
            return db_rows(srv, "SELECT gave_up_at FROM webhooks WHERE upload_id = ?",
                           (fid,))[0][0] is not None

        self.wait_for(given_up, 10, "the delivery to localhost was not given up")
        (attempts, error, delivered), = db_rows(
            srv, "SELECT attempts, last_error, delivered_at FROM webhooks WHERE upload_id = ?",
            (fid,))
        # Refused by policy: recorded as one failed try, and not retried (it would be
        # refused again; WEBHOOK_MAX_ATTEMPTS is 10 here).
        self.assertEqual(attempts, 1)
        self.assertIsNone(delivered)
        self.assertIn("refused", error)
        self.assertIn("is not a public address (loopback)", error)
        self.assertIn("WEBHOOK_ALLOWED_HOSTS", error)
        time.sleep(1.0)
        self.assertEqual(rec.hits, [], "a webhook reached a loopback receiver through a name")
        log = srv.log_text()
        self.assertIn("giving up at try 1", log)
        self.assertEqual(log.count("webhook for upload %s" % fid), 1, log[-3000:])

    def test_allowed_hosts_open_exactly_what_is_listed(self):
        one = self.receiver(host="127.0.0.1")
        two = self.receiver(host="127.0.0.2")
        # An address: that one, in any spelling; its neighbour stays closed.
        srv = self.start_server(env={"WEBHOOK_ALLOWED_HOSTS": "127.0.0.2"})
        self.assertError(srv.init("a.bin", 0, webhook_url=one.url()), 400, "public addresses")
        self.completed_with_hook(srv, two.url())
        self.completed_with_hook(srv, "http://0x7f000002:%d/hook" % two.port)
        self.assertTrue(two.wait_hits(2, 10), "no webhooks to the listed address")
        # A name the list does not hold, resolving to an address it does not hold.
        fid = self.completed_with_hook(srv, one.url(host="localhost"))
        self.wait_for(lambda: db_rows(srv, "SELECT gave_up_at FROM webhooks WHERE upload_id = ?",
                                      (fid,))[0][0] is not None, 10, "not refused")
        self.assertEqual(one.hits, [])
        srv.stop()

        # A name: that name, wherever it resolves; addresses stay closed.
        srv = self.start_server(env={"WEBHOOK_ALLOWED_HOSTS": "hooks.example, LOCALHOST"})
        self.assertError(srv.init("a.bin", 0, webhook_url=one.url()), 400, "public addresses")
        self.completed_with_hook(srv, one.url(host="localhost"))
        self.assertTrue(one.wait_hits(1, 10), "no webhook to the listed name")

        # A range (IPv4 and IPv6 together).
        srv.stop()
        srv = self.start_server(env={"WEBHOOK_ALLOWED_HOSTS": "fd00::/8, 127.0.0.0/30"})
        self.completed_with_hook(srv, two.url(host="127.0.0.2"))
        self.assertTrue(two.wait_hits(3, 10), "no webhook into the listed range")
        self.assertError(srv.init("a.bin", 0, webhook_url="http://127.0.0.4/"), 400)

    def test_allowed_ipv6_loopback(self):
        try:
            rec = self.receiver(host="::1")
        except OSError:
            self.skipTest("no IPv6 loopback here")
        srv = self.start_server()
        self.assertError(srv.init("a.bin", 0, webhook_url=rec.url()), 400, "loopback")
        srv.stop()
        srv = self.start_server(env={"WEBHOOK_ALLOWED_HOSTS": "::1/128"})
        self.completed_with_hook(srv, rec.url())
        self.assertTrue(rec.wait_hits(1, 10), "no webhook to the listed IPv6 address")
        # The IPv4 loopback is not in the list.
        self.assertError(srv.init("b.bin", 0, webhook_url="http://127.0.0.1/"), 400, "loopback")

    def test_redirect_not_followed(self):
        inner = self.receiver(host="127.0.0.2")
        outer = self.receiver(default=(307, 0.0), headers={"Location": inner.url("/inside")})
        srv = self.start_server(env={"WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
                                     "WEBHOOK_RETRY_BASE_SECONDS": "0.3", "WEBHOOK_MAX_ATTEMPTS": "2"})
        fid = self.completed_with_hook(srv, outer.url())
        self.assertTrue(outer.wait_hits(2, 10), "expected 2 tries at the redirecting receiver")
        time.sleep(1.0)
        self.assertEqual(inner.hits, [], "a redirect was followed")
        error, = db_rows(srv, "SELECT last_error FROM webhooks WHERE upload_id = ?", (fid,))[0]
        self.assertIn("HTTP 307", error)

    def test_credentials_never_logged(self):
        good = self.receiver(host="127.0.0.2")
        flaky = self.receiver(script=[(500, 0.0)], host="127.0.0.2")
        srv = self.start_server(env={"WEBHOOK_ALLOWED_HOSTS": "127.0.0.2",
                                     "WEBHOOK_RETRY_BASE_SECONDS": "0.3"})
        userinfo = "hook-user:%s@" % PASSWORD
        self.completed_with_hook(srv, good.url(userinfo=userinfo))
        self.completed_with_hook(srv, flaky.url(userinfo=userinfo))
        # localhost is 127.0.0.1 (or ::1), which the list does not hold: refused.
        refused = self.completed_with_hook(srv, good.url(host="localhost", userinfo=userinfo))
        self.assertError(srv.init("x.bin", 0, webhook_url="http://%s10.0.0.1/" % userinfo), 400)
        self.assertTrue(good.wait_hits(1, 10) and flaky.wait_hits(2, 10), "webhooks missing")
        self.wait_for(lambda: db_rows(srv, "SELECT gave_up_at FROM webhooks WHERE upload_id = ?",
                                      (refused,))[0][0] is not None, 10, "not refused")
        # The receiver gets the credentials (as HTTP Basic auth), the log never does.
        want = "Basic " + base64.b64encode(("hook-user:" + PASSWORD).encode()).decode()
        self.assertEqual(good.hits[0]["headers"].get("authorization"), want)
        srv.stop()
        log = srv.log_text()
        self.assertNotIn(PASSWORD, log)
        self.assertNotIn("hook-user", log)
        self.assertIn("delivered to http://***@127.0.0.2:%d/hook" % good.port, log)
        self.assertIn("to http://***@127.0.0.2:%d/hook failed" % flaky.port, log)
        self.assertIn("to http://***@localhost:%d/hook: giving up" % good.port, log)


if __name__ == "__main__":
    import unittest
    unittest.main()
