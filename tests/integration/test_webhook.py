"""Webhooks: payload, headers and signature, not delaying complete, retries with backoff,
the attempt limit, and delivery surviving a server restart.

The receivers here listen on loopback, which webhooks may reach only when
WEBHOOK_ALLOWED_HOSTS lists it: every server these tests start lists 127.0.0.1
(test_webhook_targets.py tests the refusals)."""

import hashlib
import hmac
import http.server
import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import CHUNK, ServerTestCase  # noqa: E402

SECRET = "it-webhook-secret-77"
PAYLOAD_KEYS = {"event", "file_id", "filename", "total_size", "final_path", "storage_backend", "completed_at"}


def wait_on(cond, pred, timeout):
    """Waits on the threading.Condition cond until pred() holds; False after timeout s."""
    deadline = time.time() + timeout
    with cond:
        while not pred():
            left = deadline - time.time()
            if left <= 0:
                return False
            cond.wait(left)
        return True


class Receiver(object):
    """A local HTTP receiver that records every POST and answers from a script."""

    def __init__(self, script=None, default=(200, 0.0), host="127.0.0.1", headers=None):
        self.script = list(script or [])  # [(status, delay_seconds), ...] then `default`
        self.default = default
        self.host = host
        self.reply_headers = dict(headers or {})  # sent with every answer
        self.hits = []  # dicts: t, path, headers, body, status, done
        self.cond = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                with receiver.cond:
                    status, delay = receiver.script.pop(0) if receiver.script else receiver.default
                    hit = {"t": time.time(), "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                           "body": body, "status": status, "done": False}
                    receiver.hits.append(hit)
                    receiver.cond.notify_all()
                if delay:
                    time.sleep(delay)
                reply = b'{"ok": true}'
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(reply)))
                    for k, v in receiver.reply_headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(reply)
                except OSError:
                    pass
                with receiver.cond:
                    hit["done"] = True
                    receiver.cond.notify_all()

            def log_message(self, *a):
                pass

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_class = type("Server", (http.server.ThreadingHTTPServer,), {"address_family": family})
        self.httpd = server_class((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path="/hook", host=None, userinfo=""):
        host = host or (("[%s]" % self.host) if ":" in self.host else self.host)
        return "http://%s%s:%d%s" % (userinfo, host, self.port, path)

    def wait_hits(self, n, timeout, done=False):
        return wait_on(self.cond, lambda: len(self.hits) >= n and (not done or all(h["done"] for h in self.hits[:n])),
                       timeout)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class WebhookTest(ServerTestCase):

    def start_server(self, env=None, allowed="127.0.0.1", **kw):
        """A server whose webhooks may reach `allowed` (WEBHOOK_ALLOWED_HOSTS; None: the
        default, public addresses only)."""
        env = dict(env or {})
        if allowed is not None:
            env.setdefault("WEBHOOK_ALLOWED_HOSTS", allowed)
        return super().start_server(env=env, **kw)

    def receiver(self, script=None, default=(200, 0.0), **kw):
        r = Receiver(script, default, **kw)
        self.addCleanup(r.close)
        return r

    def complete_upload(self, srv, url, size=CHUNK + 321, name="hooks/clip.mov"):
        data = os.urandom(size)
        init = self.init_ok(srv, name, data, webhook_url=url)
        self.upload_all(srv, init, data)
        t0 = time.time()
        c = self.complete_ok(srv, init["file_id"], data)
        return c, time.time() - t0

    def assertPayload(self, hit, c, secret=SECRET, version=None):
        self.assertEqual(set(json.loads(hit["body"]).keys()), PAYLOAD_KEYS, hit["body"])
        p = json.loads(hit["body"])
        self.assertEqual(p["event"], "upload.complete")
        for k in ("file_id", "filename", "total_size", "final_path", "storage_backend", "completed_at"):
            self.assertEqual(p[k], c[k], "payload %s differs from the complete reply" % k)
        self.assertIs(type(p["total_size"]), int)
        h = hit["headers"]
        self.assertTrue(h.get("content-type", "").startswith("application/json"), h)
        self.assertEqual(h.get("x-webhook-event"), "upload.complete")
        self.assertTrue(h.get("x-webhook-delivery"), "X-Webhook-Delivery missing")
        if version is not None:
            self.assertEqual(h.get("user-agent"), "chunked-uploader/" + version)
        if secret:
            want = "sha256=" + hmac.new(secret.encode(), hit["body"], hashlib.sha256).hexdigest()
            self.assertEqual(h.get("x-webhook-signature"), want)
        else:
            self.assertNotIn("x-webhook-signature", h)

    def test_payload_headers_signature(self):
        rec = self.receiver()
        srv = self.start_server(env={"WEBHOOK_SECRET": SECRET})
        version = self.assertOk(srv.request("GET", "/health"))["version"]
        c, _ = self.complete_upload(srv, rec.url("/hook/path?src=it&fmt=%s%n%x"))
        self.assertTrue(rec.wait_hits(1, 10), "no webhook within 10 s")
        hit = rec.hits[0]
        self.assertEqual(hit["path"], "/hook/path?src=it&fmt=%s%n%x")
        self.assertPayload(hit, c, version=version)
        self.assertEqual(c["filename"], "clip.mov")
        time.sleep(2)
        self.assertEqual(len(rec.hits), 1, "a delivered webhook was sent again")

    def test_no_signature_without_secret_and_zero_byte_upload(self):
        rec = self.receiver()
        srv = self.start_server()
        init = self.assertOk(srv.init("empty.dat", 0, webhook_url=rec.url()))
        c = self.assertOk(srv.complete(init["file_id"]))
        self.assertTrue(rec.wait_hits(1, 10), "no webhook within 10 s")
        self.assertPayload(rec.hits[0], c, secret=None)
        self.assertEqual(json.loads(rec.hits[0]["body"])["total_size"], 0)

    def test_no_webhook_on_cancel_or_without_url(self):
        rec = self.receiver()
        srv = self.start_server(env={"WEBHOOK_SECRET": SECRET})
        init = self.assertOk(srv.init("c.bin", 10, webhook_url=rec.url()))
        self.assertOk(srv.cancel(init["file_id"]))
        data = os.urandom(100)
        init = self.init_ok(srv, "n.bin", data)
        self.upload_all(srv, init, data)
        self.complete_ok(srv, init["file_id"], data)
        time.sleep(2)
        self.assertEqual(rec.hits, [])

    def test_slow_receiver_does_not_delay_complete(self):
        rec = self.receiver(default=(200, 3.0))
        srv = self.start_server(env={"WEBHOOK_SECRET": SECRET})
        c, took = self.complete_upload(srv, rec.url())
        self.assertLess(took, 1.0, "complete took %.2f s with a slow webhook receiver" % took)
        # the server keeps answering while the delivery hangs
        self.assertTrue(rec.wait_hits(1, 10))
        t0 = time.time()
        self.assertOk(srv.request("GET", "/health"))
        self.assertLess(time.time() - t0, 1.0)
        self.assertPayload(rec.hits[0], c)
        self.assertTrue(rec.wait_hits(1, 10, done=True))

    def test_retry_with_backoff(self):
        rec = self.receiver([(500, 0), (500, 0)])
        srv = self.start_server(env={"WEBHOOK_SECRET": SECRET, "WEBHOOK_RETRY_BASE_SECONDS": "1"})
        c, took = self.complete_upload(srv, rec.url())
        self.assertLess(took, 1.0)
        self.assertTrue(rec.wait_hits(3, 20), "expected 3 tries within 20 s, got %d" % len(rec.hits))
        times = [h["t"] for h in rec.hits]
        g1, g2 = times[1] - times[0], times[2] - times[1]
        self.assertGreaterEqual(g1, 0.8, "first retry after %.2f s, expected ~1 s" % g1)
        self.assertLess(g1, 4.0, "first retry after %.2f s, expected ~1 s" % g1)
        self.assertGreaterEqual(g2, 1.7, "second retry after %.2f s, expected ~2 s" % g2)
        self.assertLess(g2, 6.0, "second retry after %.2f s, expected ~2 s" % g2)
        for h in rec.hits:
            self.assertEqual(h["body"], rec.hits[0]["body"], "retries must send the same body")
            self.assertEqual(h["headers"].get("x-webhook-delivery"), rec.hits[0]["headers"].get("x-webhook-delivery"),
                             "retries of one delivery must carry the same delivery id")
            self.assertPayload(h, c)
        time.sleep(3)
        self.assertEqual(len(rec.hits), 3, "tries continued after a 200")

    def test_max_attempts(self):
        rec = self.receiver(default=(500, 0))
        srv = self.start_server(env={"WEBHOOK_MAX_ATTEMPTS": "2", "WEBHOOK_RETRY_BASE_SECONDS": "0.5"})
        self.complete_upload(srv, rec.url())
        self.assertTrue(rec.wait_hits(2, 15))
        time.sleep(3)
        self.assertEqual(len(rec.hits), 2, "WEBHOOK_MAX_ATTEMPTS=2 but %d tries" % len(rec.hits))

    def test_unreachable_receiver(self):
        from harness import free_port
        srv = self.start_server(env={"WEBHOOK_MAX_ATTEMPTS": "2", "WEBHOOK_RETRY_BASE_SECONDS": "0.5"})
        c, took = self.complete_upload(srv, "http://127.0.0.1:%d/hook" % free_port())
        self.assertLess(took, 1.0)
        time.sleep(2)
        self.assertOk(srv.request("GET", "/health"))

    def test_delivery_survives_restart(self):
        self._restart_case(kill=False)

    def test_delivery_survives_kill9(self):
        self._restart_case(kill=True)

    def _restart_case(self, kill):
        rec = self.receiver([(500, 0)])
        srv = self.start_server(env={"WEBHOOK_SECRET": SECRET, "WEBHOOK_RETRY_BASE_SECONDS": "2"})
        c, _ = self.complete_upload(srv, rec.url())
        self.assertTrue(rec.wait_hits(1, 10, done=True), "no first try within 10 s")
        time.sleep(0.1)
        if kill:
            srv.kill9()
        else:
            srv.stop()  # SIGTERM right after the failed first try (asserts exit status 0)
        self.assertEqual(len(rec.hits), 1)
        srv.restart()
        deadline = time.time() + 20
        while time.time() < deadline and not any(200 <= h["status"] < 300 for h in rec.hits):
            time.sleep(0.1)
        ok = [h for h in rec.hits if 200 <= h["status"] < 300]
        self.assertEqual(len(ok), 1, "the delivery did not arrive after the restart (%d tries)" % len(rec.hits))
        time.sleep(5)
        ok = [h for h in rec.hits if 200 <= h["status"] < 300]
        self.assertEqual(len(ok), 1, "delivered more than once: %d successful tries" % len(ok))
        self.assertLessEqual(len(rec.hits), 3)
        for h in rec.hits:
            self.assertEqual(h["body"], rec.hits[0]["body"])
            self.assertPayload(h, c)


if __name__ == "__main__":
    import unittest
    unittest.main()
