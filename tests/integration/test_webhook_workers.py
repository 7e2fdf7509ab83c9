"""Webhook delivery workers: receivers that never answer, and hosts that never accept, do not
hold back an unrelated webhook; at most WEBHOOK_PER_HOST deliveries go to one host and
WEBHOOK_CONCURRENCY in all; a try lasts at most WEBHOOK_TIMEOUT_SECONDS; a delivery in
flight is taken by no second worker or process, and one cut short by shutdown is not
counted and goes out again at the next start."""

import os
import socket
import sqlite3
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ServerTestCase  # noqa: E402
from test_webhook import Receiver, wait_on  # noqa: E402


class StuckReceiver(object):
    """Accepts connections and reads what comes, but never answers."""

    def __init__(self, host):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.cond = threading.Condition()
        self.open = 0
        self.max_open = 0
        self.accepted = 0
        self.durations = []  # seconds each closed connection stayed open
        self.closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.cond:
                self.open += 1
                self.accepted += 1
                self.max_open = max(self.max_open, self.open)
                self.cond.notify_all()
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn):
        t0 = time.time()
        try:
            while conn.recv(65536):
                pass
        except OSError:
            pass
        conn.close()
        with self.cond:
            self.open -= 1
            self.durations.append(time.time() - t0)
            self.cond.notify_all()

    def url(self):
        return "http://%s:%d/hook" % (self.host, self.port)

    def wait(self, pred, timeout):
        return wait_on(self.cond, lambda: pred(self), timeout)

    def close(self):
        self.sock.close()


class NonAccepting(object):
    """A host whose listen queue is full: connection attempts get no answer at all."""

    def __init__(self, host):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.fillers = []
        for _ in range(3):  # the queue holds one; the others wait for a SYN-ACK forever
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            c.setblocking(False)
            try:
                c.connect((host, self.port))
            except BlockingIOError:
                pass
            self.fillers.append(c)
        self.host = host

    def url(self):
        return "http://%s:%d/hook" % (self.host, self.port)

    def close(self):
        for c in self.fillers:
            c.close()
        self.sock.close()


def webhook_rows(srv):
    con = sqlite3.connect(os.path.join(srv.tmp, "uploads.db"))
    try:
        return con.execute("SELECT upload_id, attempts, claimed_until, delivered_at FROM webhooks "
                           "ORDER BY id").fetchall()
    finally:
        con.close()


class WebhookWorkersTest(ServerTestCase):

    def stuck(self, host):
        r = StuckReceiver(host)
        self.addCleanup(r.close)
        return r

    def receiver(self, **kw):
        r = Receiver(**kw)
        self.addCleanup(r.close)
        return r

    def hook(self, srv, url):
        """Completes a zero-byte upload whose webhook goes to url; returns its id."""
        init = self.assertOk(srv.init("w.bin", 0, webhook_url=url))
        self.assertOk(srv.complete(init["file_id"]))
        return init["file_id"]

    def test_slow_receivers_do_not_delay_others(self):
        slow_a, slow_b = self.stuck("127.0.0.2"), self.stuck("127.0.0.3")
        deaf = NonAccepting("127.0.0.4")
        self.addCleanup(deaf.close)
        good = self.receiver(host="127.0.0.1")
        # The defaults: 8 workers, 2 per host, 5 s to connect, 10 s a try.
        srv = self.start_server(env={"WEBHOOK_ALLOWED_HOSTS": "127.0.0.0/8"})
        for target in (slow_a, slow_b, deaf) * 3:
            self.hook(srv, target.url())
        self.assertTrue(slow_a.wait(lambda r: r.open == 2, 5) and slow_b.wait(lambda r: r.open == 2, 5),
                        "the receivers that never answer did not get their 2 deliveries each")
        t0 = time.time()
        self.hook(srv, good.url())
        self.assertTrue(good.wait_hits(1, 3), "an unrelated webhook waited behind slow receivers")
        took = good.hits[0]["t"] - t0
        self.assertLess(took, 2.0, "the good receiver's webhook took %.2f s" % took)
        # At most WEBHOOK_PER_HOST (2) at a time to each slow host, the third waits.
        time.sleep(1.0)
        self.assertEqual((slow_a.max_open, slow_b.max_open), (2, 2))
        self.assertEqual((slow_a.accepted, slow_b.accepted), (2, 2))
        # Shutdown stays prompt with every worker stuck, and the tries cut short are not
        # counted.
        t0 = time.time()
        srv.stop()
        self.assertLess(time.time() - t0, 4.0, "stopping took %.1f s" % (time.time() - t0))
        rows = webhook_rows(srv)
        self.assertEqual(len(rows), 10)
        for upload_id, attempts, claimed_until, delivered_at in rows[:9]:
            self.assertEqual((attempts, claimed_until, delivered_at), (0, None, None), upload_id)
        self.assertIsNotNone(rows[9][3])

    def test_pool_and_host_limits_and_timeout(self):
        slow = [self.stuck("127.0.0.%d" % n) for n in (2, 3, 4)]
        good = self.receiver(host="127.0.0.5")
        srv = self.start_server(env={"WEBHOOK_ALLOWED_HOSTS": "127.0.0.0/8", "WEBHOOK_CONCURRENCY": "3",
                                     "WEBHOOK_PER_HOST": "1", "WEBHOOK_TIMEOUT_SECONDS": "1.5",
                                     "WEBHOOK_RETRY_BASE_SECONDS": "60"})
        for target in slow * 2:
            self.hook(srv, target.url())
        self.assertTrue(all(r.wait(lambda r: r.accepted >= 1, 5) for r in slow))
        t0 = time.time()
        self.hook(srv, good.url())
        # Every worker is taken: the good webhook waits for a try to time out, no longer.
        self.assertTrue(good.wait_hits(1, 6), "no webhook once a worker was free")
        took = good.hits[0]["t"] - t0
        self.assertLess(took, 4.0, "the webhook took %.2f s with a 1.5 s timeout" % took)
        self.assertTrue(all(r.wait(lambda r: r.accepted >= 2, 6) for r in slow))
        for r in slow:
            self.assertEqual(r.max_open, 1, "WEBHOOK_PER_HOST=1 but %d at once" % r.max_open)
            self.assertTrue(r.wait(lambda r: len(r.durations) >= 1, 5))
            self.assertLess(r.durations[0], 3.0, "a try lasted %.1f s" % r.durations[0])
        self.assertIn("timed out", srv.log_text())

    def test_many_bad_hosts_cannot_starve_a_good_receiver(self):
        """29 hosts that accept and never answer (or one client with 29 names), two webhooks
        each, queued before a good receiver's: the good one still arrives at once, since a
        worker is kept for hosts whose last try worked and failing ones share half."""
        bad = [self.stuck("127.0.0.%d" % n) for n in range(2, 31)]
        good = self.receiver(host="127.0.0.1")
        srv = self.start_server(env={"WEBHOOK_ALLOWED_HOSTS": "127.0.0.0/8", "WEBHOOK_TIMEOUT_SECONDS": "3",
                                     "WEBHOOK_RETRY_BASE_SECONDS": "1"})
        self.hook(srv, good.url())
        self.assertTrue(good.wait_hits(1, 5), "the good receiver's first webhook")
        for target in bad * 2:
            self.hook(srv, target.url())
        deadline = time.time() + 5
        while time.time() < deadline and sum(r.open for r in bad) < 7:
            time.sleep(0.05)
        self.assertGreaterEqual(sum(r.open for r in bad), 7, "the bad hosts did not take their workers")
        for n in range(2, 5):  # while the bad ones time out, fail and come due again
            t0 = time.time()
            self.hook(srv, good.url())
            self.assertTrue(good.wait_hits(n, 3), "webhook %d waited behind the bad hosts" % n)
            took = good.hits[n - 1]["t"] - t0
            self.assertLess(took, 2.0, "the good receiver's webhook %d took %.2f s" % (n, took))
            self.assertLessEqual(sum(r.open for r in bad), 7, "the bad hosts took every worker")
            time.sleep(2.0)

    def test_in_flight_delivery_taken_once(self):
        slow = self.stuck("127.0.0.2")
        good = self.receiver()
        env = {"WEBHOOK_ALLOWED_HOSTS": "127.0.0.0/8", "WEBHOOK_TIMEOUT_SECONDS": "60",
               "WEBHOOK_CONNECT_TIMEOUT_SECONDS": "60"}
        srv = self.start_server(env=env)
        fid = self.hook(srv, slow.url())
        self.assertTrue(slow.wait(lambda r: r.accepted == 1, 5))
        # Deliveries queued meanwhile make the dispatcher look again and again; a second
        # server on the same database looks too. Nobody takes the one in flight.
        other = self.start_server(env=dict(env, DATABASE_PATH=os.path.join(srv.tmp, "uploads.db"),
                                           LOCAL_STORAGE_PATH=os.path.join(srv.tmp, "uploads")))
        for _ in range(5):
            self.hook(srv, good.url())
            self.hook(other, good.url())
        self.assertTrue(good.wait_hits(10, 10))
        time.sleep(1.0)
        self.assertEqual(slow.accepted, 1, "a delivery in flight was taken twice")
        other.stop()

        # Killed in flight: the claim stays until its lease runs out (the server cannot tell
        # a dead holder from a slow one), so the restarted server does not send it again yet.
        srv.kill9()
        self.assertTrue(slow.wait(lambda r: r.open == 0, 5))
        srv.start()
        time.sleep(2.0)
        self.assertEqual(slow.accepted, 1, "a claimed delivery was taken again before its lease ran out")
        row = [r for r in webhook_rows(srv) if r[0] == fid][0]
        self.assertEqual(row[1], 0)
        self.assertGreater(row[2], time.time() + 60, "the claim's lease is shorter than a try")

    def test_cut_short_by_shutdown_goes_out_at_next_start(self):
        slow = self.stuck("127.0.0.2")
        srv = self.start_server(env={"WEBHOOK_ALLOWED_HOSTS": "127.0.0.2",
                                     "WEBHOOK_TIMEOUT_SECONDS": "60"})
        fid = self.hook(srv, slow.url())
        self.assertTrue(slow.wait(lambda r: r.accepted == 1, 5))
        srv.stop()
        self.assertEqual(webhook_rows(srv), [(fid, 0, None, None)])
        srv.start()
        self.assertTrue(slow.wait(lambda r: r.accepted == 2, 3), "not tried again at the next start")
        self.assertIn("cut short by shutdown", srv.log_text())


if __name__ == "__main__":
    import unittest
    unittest.main()
