"""Rules for every route, on the real binary: CORS (preflights allowed and refused, headers on
every reply, errors included), rate limits (429 with Retry-After, the failed-authentication
limit), and TRUST_PROXY (forwarded client addresses from trusted peers only). Distinct
clients are distinct loopback source addresses (127.0.0.2, 127.0.0.3, ...)."""

import concurrent.futures
import http.client
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import API_KEY, CHUNK, ServerTestCase, http_request, split_parts  # noqa: E402

ORIGIN = "https://app.example.com"


def request_from(port, source, method, path, body=None, headers=None):
    return http_request(port, method, path, body=body, headers=headers, source=source)


def wait_log(srv, pattern, timeout=5):
    """The server's log once it matches pattern (the access line follows the reply)."""
    deadline = time.time() + timeout
    while True:
        log = srv.log_text()
        if re.search(pattern, log) or time.time() > deadline:
            return log
        time.sleep(0.05)


class CorsTest(ServerTestCase):

    def setUp(self):
        self.srv = self.start_server(env={"CORS_ALLOWED_ORIGINS": ORIGIN + ", http://localhost:5173"})

    def preflight(self, path, method, origin=ORIGIN, headers="authorization,content-type"):
        return self.srv.request("OPTIONS", path, headers={
            "Origin": origin, "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": headers})

    def assertCors(self, r, exposed=True):
        self.assertEqual(r.headers.get("access-control-allow-origin"), ORIGIN, repr(r.headers))
        self.assertIn("Origin", r.headers.get("vary", ""))
        self.assertNotIn("access-control-allow-credentials", r.headers)
        if exposed:
            expose = [h.strip() for h in r.headers.get("access-control-expose-headers", "").split(",")]
            for h in ("Location", "Upload-Offset", "Upload-Length", "Upload-Metadata", "Tus-Version",
                      "Tus-Resumable", "ETag", "Content-Range", "Content-Disposition", "Retry-After",
                      "X-Request-Id"):
                self.assertIn(h, expose)

    def test_preflight_on_every_route(self):
        for path, method, methods in (("/upload/init", "POST", "POST, DELETE, OPTIONS"),
                                      ("/upload/abc/part/0", "PUT", "PUT, OPTIONS"),
                                      ("/upload/abc/status", "GET", "GET, HEAD, OPTIONS"),
                                      ("/upload/abc", "DELETE", "DELETE, OPTIONS"),
                                      ("/health", "GET", "GET, HEAD, OPTIONS")):
            r = self.preflight(path, method)
            self.assertEqual(r.status, 204, "%s %s: %r" % (method, path, r))
            self.assertEqual(r.body, b"")
            self.assertCors(r, exposed=False)
            self.assertEqual(r.headers.get("access-control-allow-methods"), methods)
            allow = [h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")]
            for h in ("authorization", "content-type", "x-api-key", "content-digest",
                      "x-checksum-sha256", "x-request-id", "tus-resumable", "upload-length",
                      "upload-offset", "upload-metadata", "upload-defer-length", "upload-concat",
                      "upload-checksum", "x-http-method-override", "range", "if-none-match",
                      "if-range"):
                self.assertIn(h, allow)
            self.assertEqual(r.headers.get("access-control-max-age"), "86400")
        # The second listed origin too.
        r = self.preflight("/upload/init", "POST", origin="http://localhost:5173")
        self.assertEqual(r.status, 204)
        self.assertEqual(r.headers.get("access-control-allow-origin"), "http://localhost:5173")

    def test_preflight_refused(self):
        for origin in ("https://evil.example", "http://app.example.com", "null"):
            r = self.preflight("/upload/init", "POST", origin=origin)
            self.assertError(r, 403, contains="not allowed")
            for h in ("access-control-allow-origin", "access-control-allow-methods",
                      "access-control-allow-headers"):
                self.assertNotIn(h, r.headers)

    def test_headers_on_errors_and_answers(self):
        srv = self.srv
        o = {"Origin": ORIGIN}
        cases = [
            (srv.request("GET", "/nope", headers=o), 404),
            (srv.request("PATCH", "/upload/init", headers=o), 405),
            (srv.request("POST", "/upload/init", body={"filename": "a", "total_size": 1}, headers=o), 401),
            (srv.request("POST", "/upload/init", body={"filename": "a", "total_size": 1},
                         headers=dict(o, **{"X-API-Key": "wrong"})), 401),
            (srv.request("GET", "/upload/00000000-0000-0000-0000-000000000000/status",
                         headers=dict(o, **{"X-API-Key": API_KEY})), 404),
            (srv.request("POST", "/upload/init", body=b"x" * 70000,
                         headers=dict(o, **{"X-API-Key": API_KEY, "Content-Type": "application/json"})), 413),
        ]
        for r, status in cases:
            self.assertError(r, status)
            self.assertCors(r)
        r = srv.request("GET", "/health", headers=o)
        self.assertOk(r)
        self.assertCors(r)
        init = self.assertOk(srv.init("a.bin", 10, headers=o))
        # A part refused from its headers (wrong token) carries them too.
        r = srv.put_part(init["file_id"], 0, "not-a-token", b"0123456789", headers=o)
        self.assertError(r, 401)
        self.assertCors(r)
        # Without an Origin, or with another: no CORS headers.
        r = srv.request("GET", "/health")
        self.assertNotIn("access-control-allow-origin", r.headers)
        r = srv.request("GET", "/health", headers={"Origin": "https://evil.example"})
        self.assertNotIn("access-control-allow-origin", r.headers)
        self.assertNotIn("access-control-expose-headers", r.headers)

    def test_not_configured_no_headers(self):
        srv = self.start_server()
        r = srv.request("OPTIONS", "/upload/init", headers={
            "Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
        self.assertEqual(r.status, 204)
        self.assertEqual(r.headers.get("allow"), "POST, DELETE, OPTIONS")
        for h in r.headers:
            self.assertFalse(h.startswith("access-control-"), repr(r.headers))
        self.assertNotIn("vary", r.headers)
        r = srv.request("GET", "/nope", headers={"Origin": ORIGIN})
        self.assertError(r, 404)
        self.assertNotIn("access-control-allow-origin", r.headers)

    def test_bad_configuration(self):
        for bad in ("app.example.com", "https://app.example.com/path", "ftp://x.example"):
            rc, out, err, _ = self.run_binary(env={"CORS_ALLOWED_ORIGINS": bad})
            self.assertEqual(rc, 2, err)
            self.assertIn("CORS_ALLOWED_ORIGINS", err)
            self.assertEqual(len(err.strip().splitlines()), 1, err)


class RateLimitTest(ServerTestCase):

    def test_requests_limited_with_retry_after(self):
        srv = self.start_server(env={"RATE_LIMIT_PER_MINUTE": "60", "RATE_LIMIT_BURST": "5",
                                     "CORS_ALLOWED_ORIGINS": ORIGIN})
        # A scanner's 404s use up the burst...
        for i in range(5):
            r = request_from(srv.port, "127.0.0.2", "GET", "/scan/%d" % i)
            self.assertError(r, 404)
        # ...and then everything is 429, with Retry-After and CORS headers, until a token is back.
        r = request_from(srv.port, "127.0.0.2", "GET", "/health", headers={"Origin": ORIGIN})
        self.assertError(r, 429, contains="too many requests")
        self.assertEqual(r.headers.get("retry-after"), "1")
        self.assertEqual(r.headers.get("access-control-allow-origin"), ORIGIN)
        self.assertIn("Retry-After", r.headers.get("access-control-expose-headers", ""))
        r = request_from(srv.port, "127.0.0.2", "POST", "/upload/init", body={"filename": "a", "total_size": 1},
                         headers={"X-API-Key": API_KEY})
        self.assertError(r, 429)
        # Another client is untouched.
        self.assertOk(request_from(srv.port, "127.0.0.3", "GET", "/health"))
        time.sleep(1.2)
        self.assertOk(request_from(srv.port, "127.0.0.2", "GET", "/health"))
        self.assertError(request_from(srv.port, "127.0.0.2", "GET", "/health"), 429)
        # A refusal is logged once, naming the client.
        pattern = r"127\.0\.0\.2 GET /health 429 \"Too many requests"
        self.assertRegex(wait_log(srv, pattern), pattern)

    def test_refused_part_body_gets_its_answer(self):
        # A 429 decided from the headers of a 1 MiB part reaches a client that sends the whole
        # body before reading (the lingering close).
        # Three tokens: the harness's readiness check, init and status.
        srv = self.start_server(env={"RATE_LIMIT_PER_MINUTE": "60", "RATE_LIMIT_BURST": "3"})
        init = self.assertOk(srv.init("big.bin", CHUNK))
        token = init["parts"][0]["token"]
        self.assertOk(srv.status(init["file_id"]))
        r = srv.put_part(init["file_id"], 0, token, os.urandom(CHUNK))
        self.assertError(r, 429)
        self.assertIn("retry-after", r.headers)

    def test_auth_failures_limited(self):
        srv = self.start_server(env={"RATE_LIMIT_AUTH_FAILURES_PER_MINUTE": "3"})
        body = {"filename": "a.bin", "total_size": 10}
        for _ in range(3):
            r = request_from(srv.port, "127.0.0.4", "POST", "/upload/init", body=body,
                             headers={"X-API-Key": "guess"})
            self.assertError(r, 401, contains="invalid api key")
        # Now even the right key from that address waits (20 s: 3 a minute).
        for headers in ({"X-API-Key": API_KEY}, {"Authorization": "Bearer " + API_KEY}):
            r = request_from(srv.port, "127.0.0.4", "POST", "/upload/init", body=body, headers=headers)
            self.assertError(r, 429, contains="failed authentications")
            self.assertIn(int(r.headers["retry-after"]), (19, 20))
        # Routes without credentials still answer it, and other clients are not affected.
        self.assertOk(request_from(srv.port, "127.0.0.4", "GET", "/health"))
        self.assertOk(request_from(srv.port, "127.0.0.5", "POST", "/upload/init", body=body,
                                   headers={"X-API-Key": API_KEY}))

    def test_defaults_let_an_honest_client_through(self):
        srv = self.start_server()  # the default limits
        # A browser-like client: 12 parts, 4 at a time, a status poll after each, a health check.
        data = os.urandom(12 * CHUNK)
        init = self.assertOk(srv.init("honest.bin", len(data)))
        fid = init["file_id"]

        def one(p):
            r = srv.put_part(fid, p["part"], p["token"], split_parts(data)[p["part"]])
            s = srv.status(fid)
            h = srv.request("GET", "/health")
            return r.status, s.status, h.status

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(one, init["parts"]))
        self.assertTrue(all(r == (200, 200, 200) for r in results), results)
        self.assertOk(srv.complete(fid))
        # ...and a few hundred quick requests (a page of status checks) pass too.
        statuses = [srv.request("GET", "/upload/%s/status" % fid, headers=srv.api_headers()).status
                    for _ in range(300)]
        self.assertEqual(set(statuses), {200})

    def test_defaults_stop_a_flood(self):
        srv = self.start_server()
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10,
                                          source_address=("127.0.0.6", 0))
        statuses = []
        t0 = time.monotonic()
        for _ in range(1200):
            conn.request("GET", "/flood")
            r = conn.getresponse()
            r.read()
            statuses.append(r.status)
        elapsed = time.monotonic() - t0
        conn.close()
        self.assertEqual(statuses[:600], [404] * 600)  # the burst
        self.assertIn(429, statuses, "1200 requests at once went through the default limit")
        self.assertLessEqual(statuses.count(404), 600 + 50 * elapsed + 1)  # burst + 50/s

    def test_limits_off(self):
        srv = self.start_server(env={"RATE_LIMIT_PER_MINUTE": "0",
                                     "RATE_LIMIT_AUTH_FAILURES_PER_MINUTE": "0"})
        for _ in range(40):
            r = request_from(srv.port, "127.0.0.7", "GET", "/upload/x/status",
                             headers={"X-API-Key": "guess"})
            self.assertError(r, 401)
        self.assertError(request_from(srv.port, "127.0.0.7", "GET", "/upload/x/status",
                                      headers={"X-API-Key": API_KEY}), 404)


class TrustProxyTest(ServerTestCase):

    def test_forwarded_for_from_untrusted_peer_ignored(self):
        srv = self.start_server(env={"TRUST_PROXY": "127.0.0.2", "RATE_LIMIT_PER_MINUTE": "60",
                                     "RATE_LIMIT_BURST": "3"})
        # A client that forges X-Forwarded-For (a new address each time) is still itself:
        # limited after its burst, and logged under its own address.
        for i in range(3):
            self.assertOk(request_from(srv.port, "127.0.0.3", "GET", "/health",
                                       headers={"X-Forwarded-For": "198.51.100.%d" % i,
                                                "CF-Connecting-IP": "198.51.100.99"}))
        r = request_from(srv.port, "127.0.0.3", "GET", "/health",
                         headers={"X-Forwarded-For": "198.51.100.50"})
        self.assertError(r, 429, contains="127.0.0.3")
        log = wait_log(srv, r"127\.0\.0\.3 GET /health 429")
        self.assertRegex(log, r"127\.0\.0\.3 GET /health 200")
        self.assertNotIn("198.51.100.", log)

    def test_forwarded_for_from_trusted_peer_honoured(self):
        srv = self.start_server(env={"TRUST_PROXY": "127.0.0.2, 10.0.0.0/8",
                                     "RATE_LIMIT_PER_MINUTE": "60", "RATE_LIMIT_BURST": "3"})
        # Through the proxy, each client has its own bucket: the rightmost untrusted hop.
        for i in range(3):
            self.assertOk(request_from(srv.port, "127.0.0.2", "GET", "/health",
                                       headers={"X-Forwarded-For": "6.6.6.%d, 198.51.100.1, 10.0.0.7" % i}))
        r = request_from(srv.port, "127.0.0.2", "GET", "/health",
                         headers={"X-Forwarded-For": "198.51.100.1"})
        self.assertError(r, 429, contains="198.51.100.1")
        self.assertOk(request_from(srv.port, "127.0.0.2", "GET", "/health",
                                   headers={"X-Forwarded-For": "198.51.100.2"}))
        self.assertOk(request_from(srv.port, "127.0.0.2", "GET", "/health",
                                   headers={"X-Forwarded-For": "2001:db8::1"}))
        # The access log names the client and the proxy it came through.
        log = wait_log(srv, r"2001:db8::1 via")
        self.assertRegex(log, r"198\.51\.100\.1 via 127\.0\.0\.2 GET /health 200")
        self.assertRegex(log, r"198\.51\.100\.1 via 127\.0\.0\.2 GET /health 429")
        self.assertRegex(log, r"2001:db8::1 via 127\.0\.0\.2 GET /health 200")
        self.assertNotIn("6.6.6.", log)
        # The proxy itself, with no header, is its own client.
        self.assertOk(request_from(srv.port, "127.0.0.2", "GET", "/health"))

    def test_cloudflare_word_and_bad_entries(self):
        srv = self.start_server(env={"TRUST_PROXY": "cloudflare"})
        # Loopback is not Cloudflare's: its CF-Connecting-IP is ignored.
        self.assertOk(request_from(srv.port, "127.0.0.3", "GET", "/health",
                                   headers={"CF-Connecting-IP": "198.51.100.9"}))
        log = wait_log(srv, r"127\.0\.0\.3 GET /health 200")
        self.assertRegex(log, r"127\.0\.0\.3 GET /health 200")
        self.assertNotIn("198.51.100.9", log)
        for bad in ("proxy.internal", "10.0.0.1/8", "10.0.0.0/33", "cloudflar"):
            rc, out, err, _ = self.run_binary(env={"TRUST_PROXY": bad})
            self.assertEqual(rc, 2, err)
            self.assertIn("TRUST_PROXY", err)
            self.assertEqual(len(err.strip().splitlines()), 1, err)


if __name__ == "__main__":
    import unittest
    unittest.main()
