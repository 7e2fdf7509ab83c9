"""The HTTP front as a client meets it, on the real binary: refusals that arrive however the
body is sent, keep-alive, and the limits on what a client controls (connections per address,
header time, body rate), each configured the way an operator would."""

import http.client
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import API_KEY, CHUNK, RawConn, ServerTestCase, request_head  # noqa: E402


def plain_client_put(port, path, headers, body):
    """What most HTTP libraries do: send the whole body, then read the reply (no Expect).
    Returns the Response, or raises when the connection broke while sending."""
    c = RawConn(port, timeout=30)
    try:
        hdrs = dict(headers)
        hdrs["Content-Length"] = str(len(body))
        c.send(request_head("PUT", path, hdrs))
        c.send(body)
        return c.read_response(30)
    finally:
        c.close()


class HttpFrontTest(ServerTestCase):

    def assertJsonError(self, r, status):
        self.assertEqual(r.status, status, r)
        self.assertEqual(r.headers.get("content-type"), "application/json")
        j = json.loads(r.body)
        self.assertEqual(j["status"], status)
        self.assertTrue(j["error"])

    def test_refusal_from_the_headers_reaches_a_client_sending_its_body(self):
        srv = self.start_server()
        init = self.init_ok(srv, "r.bin", 3 * CHUNK)
        body = os.urandom(8 * CHUNK)
        for i in range(10):
            with self.subTest(round=i):
                r = plain_client_put(srv.port, "/upload/%s/part/0" % init["file_id"],
                                     {"Authorization": "Bearer not-a-token"}, body)
                self.assertJsonError(r, 401)
        # And nothing was written: the part is still pending.
        st = self.assertOk(srv.status(init["file_id"]))
        self.assertEqual(st["uploaded_parts"], 0)

    def test_json_route_refuses_a_large_body_before_100_continue(self):
        srv = self.start_server()
        c = RawConn(srv.port)
        c.send(request_head("POST", "/upload/init", {
            "X-API-Key": API_KEY, "Content-Type": "application/json",
            "Content-Length": str(10 * 1024 * 1024), "Expect": "100-continue"}))
        r = c.read_response(5)  # the first answer is the refusal, not "100 Continue"
        c.close()
        self.assertJsonError(r, 413)

    def test_keep_alive_for_requests_without_a_body(self):
        srv = self.start_server()
        init = self.init_ok(srv, "k.bin", 10)
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        conn.connect()
        sock = conn.sock
        for path in ("/health", "/upload/%s/status" % init["file_id"], "/health"):
            conn.request("GET", path, headers={"X-API-Key": API_KEY})
            r = conn.getresponse()
            r.read()
            self.assertEqual(r.status, 200)
            self.assertIsNone(r.getheader("Connection"))
            self.assertIs(conn.sock, sock, "the server closed the connection after %s" % path)
        conn.close()

    def test_connections_per_address(self):
        srv = self.start_server(env={"MAX_CONNECTIONS_PER_IP": "4"})
        held = []
        for _ in range(4):  # each served once, so each is surely accepted, then kept idle
            c = RawConn(srv.port)
            c.send(request_head("GET", "/health", {}))
            self.assertEqual(c.read_response(5).status, 200)
            held.append(c)
        extra = socket.create_connection(("127.0.0.1", srv.port))
        extra.settimeout(5)
        try:
            self.assertIn(extra.recv(1), (b"",), "a fifth connection from one address was kept")
        except ConnectionResetError:
            pass
        extra.close()
        other = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5,
                                           source_address=("127.0.0.2", 0))
        other.request("GET", "/health")
        self.assertEqual(other.getresponse().status, 200)
        other.close()
        for c in held:
            c.close()

    def test_header_block_deadline(self):
        srv = self.start_server(env={"HEADER_TIMEOUT_SECONDS": "1"})
        c = RawConn(srv.port)
        t0 = time.time()
        c.send(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        r = c.read_response(5)
        self.assertJsonError(r, 408)
        self.assertLess(time.time() - t0, 4)
        c.close()
        self.assertIn("did not arrive within", srv.log_text())

    def test_slow_body_is_cut_and_the_part_can_be_retried(self):
        srv = self.start_server(env={"BODY_MIN_RATE": "10000", "BODY_RATE_WINDOW_SECONDS": "1"})
        init = self.init_ok(srv, "slow.bin", CHUNK)
        token = init["parts"][0]["token"]
        path = "/upload/%s/part/0" % init["file_id"]
        c = RawConn(srv.port)
        c.send(request_head("PUT", path, {"Authorization": "Bearer " + token,
                                          "Content-Length": str(CHUNK)}))
        r = None
        deadline = time.time() + 10
        while r is None and time.time() < deadline:
            if not c.try_send(b"x" * 100):  # 100 bytes every 0.2 s: 500 B/s
                break
            if c.readable(0.2):
                r = c.read_response(5)
        if r is None:
            r = c.read_response(5)
        c.close()
        self.assertJsonError(r, 408)
        # The claim goes with the connection (as soon as its thread has seen it end): the real
        # client's retry goes through.
        data = os.urandom(CHUNK)
        for _ in range(50):
            r = srv.put_part(init["file_id"], 0, token, data)
            if r.status != 409:
                break
            time.sleep(0.1)
        self.assertOk(r)
        self.complete_ok(srv, init["file_id"], data)


if __name__ == "__main__":
    import unittest
    unittest.main()
