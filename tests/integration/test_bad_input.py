"""Every rejection of docs/API.md's error table: exact status, the {error, status} body, and
that the data already stored is untouched by the bad request."""

import json
import os
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (API_KEY, CHUNK, JWT_SECRET, LOG_NAME, RawConn, ServerTestCase,  # noqa: E402
                     chunked_body, jwt_parts, make_jwt, raw_request, request_head, sha256_hex,
                     split_parts)


class BadInputTest(ServerTestCase):
    """Fixture: one upload of 4 parts (3 full + a short last one) with parts 0 and 2 uploaded."""

    server_env = None

    def setUp(self):
        self.srv = self.start_server(env=self.server_env)
        self.data = os.urandom(3 * CHUNK + 1000)
        self.parts = split_parts(self.data)
        self.init = self.init_ok(self.srv, "fixture/dir/file.bin", self.data)
        self.fid = self.init["file_id"]
        self.tok = [p["token"] for p in self.init["parts"]]
        for n in (0, 2):
            self.assertOk(self.srv.put_part(self.fid, n, self.tok[n], self.parts[n]))
        self.snapshot = self.assertOk(self.srv.status(self.fid))
        self.assertEqual(self.snapshot["uploaded_parts"], 2)

    def assertIntact(self):
        st = self.assertOk(self.srv.status(self.fid))
        self.assertEqual(st, self.snapshot, "upload state changed after a rejected request")
        got = {p["part"]: (p["status"], p["checksum_sha256"]) for p in st["parts"]}
        self.assertEqual(got, {0: ("uploaded", sha256_hex(self.parts[0])), 1: ("pending", None),
                               2: ("uploaded", sha256_hex(self.parts[2])), 3: ("pending", None)})

    def finish_fixture(self):
        """The upload still completes byte-exact after the abuse."""
        for n in (1, 3):
            self.assertOk(self.srv.put_part(self.fid, n, self.tok[n], self.parts[n]))
        self.complete_ok(self.srv, self.fid, self.data)

    def put1(self, token, body=None, headers=None, part=1, fid=None):
        """PUT of part `part` (default 1, pending, full size) tolerating early refusal."""
        return self.srv.put_part_raw(fid or self.fid, part, token,
                                     self.parts[part] if body is None else body, headers)

    # ------------------------------------------------------------------ API key
    def test_api_key_missing_or_wrong(self):
        srv = self.srv
        variants = [
            {},
            {"X-API-Key": ""},
            {"X-API-Key": "wrong-key"},
            {"X-API-Key": API_KEY + "x"},
            {"X-API-Key": API_KEY[:-1]},
            {"Authorization": "Bearer wrong-key"},
            {"Authorization": "Basic " + API_KEY},
            {"Authorization": "Bearer " + self.tok[1]},
            {"Authorization": API_KEY},
            {"X-API-Key": "k" * 100000},
        ]
        for h in variants:
            with self.subTest(headers=h):
                r = srv.request("POST", "/upload/init", {"filename": "x.bin", "total_size": 10}, h)
                self.assertError(r, 401)
                self.assertError(srv.status(self.fid, headers=h), 401)
                self.assertError(srv.complete(self.fid, headers=h), 401)
                self.assertError(srv.cancel(self.fid, headers=h), 401)
        self.assertIntact()
        self.finish_fixture()

    # ------------------------------------------------------------------ part tokens
    def test_part_token_missing_or_malformed(self):
        for h in ({}, {"Authorization": ""}, {"Authorization": "Bearer"}, {"Authorization": "Bearer "},
                  {"Authorization": "Bearer abc"}, {"Authorization": "Bearer a.b.c"},
                  {"Authorization": "Bearer ..."}, {"Authorization": "Bearer " + "A" * 5000},
                  {"Authorization": "Basic " + self.tok[1]}, {"Authorization": self.tok[1]},
                  {"X-API-Key": API_KEY}, {"Authorization": "Bearer " + API_KEY},
                  {"Authorization": "Bearer " + self.tok[1] + "x"},
                  {"Authorization": "Bearer " + self.tok[1][:-2]}):
            with self.subTest(headers=h):
                self.assertError(self.put1(None, headers=h), 401)
        self.assertIntact()
        self.finish_fixture()

    def _claims(self, part=1, **over):
        _, claims, _ = jwt_parts(self.tok[part])
        claims = dict(claims)
        claims.update(over)
        return claims

    def test_part_token_forged(self):
        now = int(time.time())
        claims = self._claims()
        cases = {
            "other secret": make_jwt(claims, "not-the-secret"),
            "expired, real secret": make_jwt(self._claims(exp=now - 3600), JWT_SECRET),
            "not issued, real secret": make_jwt(dict(claims, jti="forged"), JWT_SECRET),
            "not issued, real secret, other header": make_jwt(claims, JWT_SECRET, header={"typ": "JWT", "alg": "HS256"}),
            "alg none": make_jwt(claims, JWT_SECRET, alg="none"),
            "alg none, real signature kept": (make_jwt(claims, JWT_SECRET, header={"alg": "none", "typ": "JWT"})
                                              .rsplit(".", 1)[0] + "." + self.tok[1].rsplit(".", 1)[1]),
            "HS512": make_jwt(claims, JWT_SECRET, alg="HS512"),
            "HS384": make_jwt(claims, JWT_SECRET, alg="HS384"),
            "payload swapped, signature kept": (self.tok[1].split(".")[0] + "." +
                                                self.tok[3].split(".")[1] + "." + self.tok[1].split(".")[2]),
            "bigger expected_size": make_jwt(self._claims(expected_size=CHUNK * 2), JWT_SECRET),
        }
        for name, token in cases.items():
            with self.subTest(case=name):
                self.assertNotEqual(token, self.tok[1], "forged token equals the issued one")
                self.assertError(self.put1(token), 401)
        self.assertIntact()
        self.finish_fixture()

    def test_part_token_of_other_upload_or_part(self):
        srv = self.srv
        other = self.init_ok(srv, "other.bin", self.data)
        # token of the same part number of another upload
        self.assertError(self.put1(other["parts"][1]["token"]), 401)
        # token of another part of this upload (same size: part 0 is uploaded; part 3 is short)
        self.assertError(self.put1(self.tok[3]), 401)
        self.assertError(self.put1(self.tok[3], body=self.parts[3]), 401)
        self.assertError(self.put1(self.tok[0]), 401)
        # token of this upload used on the other upload
        self.assertError(self.put1(self.tok[1], fid=other["file_id"]), 401)
        st = self.assertOk(srv.status(other["file_id"]))
        self.assertEqual(st["uploaded_parts"], 0)
        self.assertIntact()
        self.finish_fixture()

    # ------------------------------------------------------------------ ids and part numbers
    def test_unknown_upload_id(self):
        srv = self.srv
        for fid in (str(uuid.uuid4()), "not-a-uuid", self.fid + "0", self.fid[:-1], "x" * 300):
            with self.subTest(fid=fid):
                self.assertError(srv.status(fid), 404)
                self.assertError(srv.complete(fid), 404)
                self.assertError(srv.cancel(fid), 404)
                self.assertError(self.put1(self.tok[1], fid=fid), (401, 404))
        self.assertIntact()
        self.finish_fixture()

    def test_part_number_out_of_range_or_not_numeric(self):
        for n in ("4", "5", "1000000", "99999999999999999999999", "-1"):
            with self.subTest(part=n):
                r = self.srv.put_part_raw(self.fid, n, self.tok[1], self.parts[1])
                self.assertError(r, (400, 404))
        for n in ("abc", "1a", "0x1", "1.0", "1e0"):
            with self.subTest(part=n):
                r = self.srv.put_part_raw(self.fid, n, self.tok[1], self.parts[1])
                self.assertError(r, (400, 404))
        self.assertIntact()
        self.finish_fixture()

    # ------------------------------------------------------------------ body sizes
    def _head(self, n=1, extra=None):
        h = {"Authorization": "Bearer " + self.tok[n], "Content-Type": "application/octet-stream"}
        h.update(extra or {})
        return request_head("PUT", "/upload/%s/part/%d" % (self.fid, n), h)

    def test_content_length_too_large_refused_before_body(self):
        for cl in (CHUNK + 1, 50 * CHUNK, 10 ** 15):
            with self.subTest(content_length=cl):
                c = RawConn(self.srv.port)
                try:
                    c.send(self._head(1, {"Content-Length": str(cl)}))
                    self.assertTrue(c.readable(5), "no answer within 5 s to a too large Content-Length "
                                                   "(the server must refuse from the headers alone)")
                    r = c.read_response(5)
                finally:
                    c.close()
                self.assertError(r, 413)
        self.assertIntact()
        self.finish_fixture()

    def test_content_length_too_small_refused_before_body(self):
        for cl in (CHUNK - 1, 1, 0):
            with self.subTest(content_length=cl):
                c = RawConn(self.srv.port)
                try:
                    c.send(self._head(1, {"Content-Length": str(cl)}))
                    self.assertTrue(c.readable(5), "no answer within 5 s to a too small Content-Length")
                    r = c.read_response(5)
                finally:
                    c.close()
                self.assertError(r, 400)
        self.assertIntact()
        self.finish_fixture()

    def test_expect_100_continue_with_wrong_length(self):
        for cl, status in ((CHUNK + 1, 413), (CHUNK - 1, 400)):
            with self.subTest(content_length=cl):
                c = RawConn(self.srv.port)
                try:
                    c.send(self._head(1, {"Content-Length": str(cl), "Expect": "100-continue"}))
                    self.assertTrue(c.readable(5), "no answer within 5 s")
                    r = c.read_response(5)
                finally:
                    c.close()
                self.assertNotEqual(r.status, 100, "server sent 100 Continue for a part it must refuse")
                self.assertError(r, status)
        self.assertIntact()
        # a 401 is also answered without 100 Continue
        c = RawConn(self.srv.port)
        try:
            c.send(request_head("PUT", "/upload/%s/part/1" % self.fid,
                                {"Authorization": "Bearer " + self.tok[3], "Content-Length": str(CHUNK),
                                 "Expect": "100-continue"}))
            self.assertTrue(c.readable(5), "no answer within 5 s")
            r = c.read_response(5)
        finally:
            c.close()
        self.assertNotEqual(r.status, 100)
        self.assertError(r, 401)
        self.assertIntact()
        self.finish_fixture()

    def test_expect_100_continue_right_length(self):
        c = RawConn(self.srv.port)
        try:
            c.send(self._head(1, {"Content-Length": str(CHUNK), "Expect": "100-continue"}))
            if c.readable(3):
                r = c.read_response(5)
                self.assertEqual(r.status, 100, "expected 100 Continue, got %r" % (r,))
            c.send(self.parts[1])
            r = c.read_response(30)
        finally:
            c.close()
        j = self.assertOk(r)
        self.assertEqual(j["checksum_sha256"], sha256_hex(self.parts[1]))

    def _chunked_put(self, body):
        h = {"Authorization": "Bearer " + self.tok[1], "Content-Type": "application/octet-stream",
             "Transfer-Encoding": "chunked"}
        r, _ = raw_request(self.srv.port, "PUT", "/upload/%s/part/1" % self.fid, h, chunked_body(body),
                           early_wait=0.0, content_length=False)
        return r

    def test_chunked_body_shorter(self):
        self.assertError(self._chunked_put(self.parts[1][:-1]), 400)
        self.assertError(self._chunked_put(self.parts[1][:1000]), 400)
        self.assertError(self._chunked_put(b""), 400)
        self.assertIntact()
        self.finish_fixture()

    def test_chunked_body_longer(self):
        self.assertError(self._chunked_put(self.parts[1] + b"x"), (400, 413))
        self.assertError(self._chunked_put(self.parts[1] + os.urandom(CHUNK)), (400, 413))
        self.assertIntact()
        self.finish_fixture()

    def test_chunked_body_exact_is_accepted(self):
        j = self.assertOk(self._chunked_put(self.parts[1]))
        self.assertEqual(j["checksum_sha256"], sha256_hex(self.parts[1]))
        self.assertOk(self.srv.put_part(self.fid, 3, self.tok[3], self.parts[3]))
        self.complete_ok(self.srv, self.fid, self.data)

    def test_no_length_at_all(self):
        c = RawConn(self.srv.port)
        try:
            c.send(request_head("PUT", "/upload/%s/part/1" % self.fid,
                                {"Authorization": "Bearer " + self.tok[1], "Content-Type": "application/octet-stream"}))
            self.assertTrue(c.readable(5), "no answer within 5 s to a part without Content-Length")
            r = c.read_response(5)
        finally:
            c.close()
        self.assertError(r, (400, 411))
        self.assertIntact()
        self.finish_fixture()

    def test_part_already_uploaded(self):
        r = self.srv.put_part_raw(self.fid, 0, self.tok[0], self.parts[0])
        self.assertError(r, 409)
        r = self.srv.put_part_raw(self.fid, 2, self.tok[2], os.urandom(len(self.parts[2])))
        self.assertError(r, 409)
        self.assertIntact()
        self.finish_fixture()

    # ------------------------------------------------------------------ init JSON
    def _init_raw(self, raw_body, ctype="application/json"):
        return self.srv.request("POST", "/upload/init", raw_body,
                                {"X-API-Key": API_KEY, "Content-Type": ctype})

    def test_init_malformed_json(self):
        for body in (b"", b"{", b"not json", b"[]", b"null", b"42", b'"str"',
                     b'{"filename": "a.bin", "total_size": 10',
                     b'{"filename": "a.bin", "total_size": 10}}',
                     b'{"filename": "a.bin" "total_size": 10}',
                     b"{'filename': 'a.bin', 'total_size': 10}",
                     b'{"filename": "a.bin", "total_size": 10,}',
                     b'{"filename": "a\xff.bin", "total_size": 10}'):
            with self.subTest(body=body):
                self.assertError(self._init_raw(body), 400)
        self.assertIntact()

    def test_init_missing_or_wrong_fields(self):
        bodies = [
            {},
            {"total_size": 10},
            {"filename": "a.bin"},
            {"filename": None, "total_size": 10},
            {"filename": 12, "total_size": 10},
            {"filename": ["a.bin"], "total_size": 10},
            {"filename": "a.bin", "total_size": None},
            {"filename": "a.bin", "total_size": -1},
            {"filename": "a.bin", "total_size": -9223372036854775808},
            {"filename": "a.bin", "total_size": 1.5},
            {"filename": "a.bin", "total_size": "10"},
            {"filename": "a.bin", "total_size": True},
            {"filename": "a.bin", "total_size": [10]},
            {"filename": "a.bin", "total_size": 10, "webhook_url": "ftp://x"},
            {"filename": "a.bin", "total_size": 10, "webhook_url": "x"},
            {"filename": "a.bin", "total_size": 10, "webhook_url": ""},
            {"filename": "a.bin", "total_size": 10, "webhook_url": 5},
            {"filename": "a.bin", "total_size": 10, "webhook_url": "file:///etc/passwd"},
            {"filename": "a.bin", "total_size": 10, "checksum_sha256": "xyz"},
            {"filename": "a.bin", "total_size": 10, "checksum_sha256": "0" * 63},
            {"filename": "a.bin", "total_size": 10, "checksum_sha256": "0" * 65},
            {"filename": "a.bin", "total_size": 10, "checksum_sha256": "g" * 64},
            {"filename": "a.bin", "total_size": 10, "checksum_sha256": 12},
        ]
        for body in bodies:
            with self.subTest(body=body):
                self.assertError(self._init_raw(json.dumps(body).encode()), 400)
        # sizes no 64-bit integer holds
        for raw in (b'{"filename": "a.bin", "total_size": 18446744073709551616}',
                    b'{"filename": "a.bin", "total_size": 1e300}'):
            with self.subTest(body=raw):
                self.assertError(self._init_raw(raw), (400, 413))
        self.assertIntact()

    def test_init_json_over_64k(self):
        body = json.dumps({"filename": "a.bin", "total_size": 10, "pad": "x" * (70 * 1024)}).encode()
        r, _ = raw_request(self.srv.port, "POST", "/upload/init",
                           {"X-API-Key": API_KEY, "Content-Type": "application/json"}, body)
        self.assertError(r, 413)
        # also when sent chunked (no Content-Length)
        r, _ = raw_request(self.srv.port, "POST", "/upload/init",
                           {"X-API-Key": API_KEY, "Content-Type": "application/json",
                            "Transfer-Encoding": "chunked"}, chunked_body(body, 4096),
                           early_wait=0.0, content_length=False)
        self.assertError(r, 413)
        # just under 64 KiB is fine
        small = {"filename": "a.bin", "total_size": 10, "pad": ""}
        small["pad"] = "x" * (64 * 1024 - len(json.dumps(small)) - 10)
        self.assertOk(self._init_raw(json.dumps(small).encode()))
        self.assertIntact()

    def test_garbage_requests_do_not_hurt(self):
        """Oversized, malformed and truncated requests get a 4xx (or a closed connection),
        never a crash; the server keeps serving and the upload is intact."""
        port = self.srv.port
        cases = [
            b"GARBAGE\r\n\r\n",
            b"GET /health HTTP/9.9\r\n\r\n",
            b"GET " + b"/x" * 60000 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /health HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 200000 + b"\r\n\r\n",
            b"GET /health HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(5000)) + b"\r\n",
            b"PUT /upload/" + self.fid.encode() + b"/part/1 HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n"
            b"Authorization: Bearer " + self.tok[1].encode() + b"\r\n\r\n",
            b"PUT /upload/" + self.fid.encode() + b"/part/1 HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n"
            b"Authorization: Bearer " + self.tok[1].encode() + b"\r\n\r\n",
            b"PUT /upload/" + self.fid.encode() + b"/part/1 HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n"
            b"Authorization: Bearer " + self.tok[1].encode() + b"\r\n\r\n",
            b"PUT /upload/" + self.fid.encode() + b"/part/1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
            b"Authorization: Bearer " + self.tok[1].encode() + b"\r\n\r\nzz\r\nabc\r\n",
            b"POST /upload/init HTTP/1.1\r\nHost: a\r\nX-API-Key: " + API_KEY.encode() +
            b"\r\nContent-Length: 100\r\n\r\n{\"filename\"",
            b"GET /upload/%00/status HTTP/1.1\r\nHost: a\r\nX-API-Key: " + API_KEY.encode() + b"\r\n\r\n",
            b"PUT /upload/" + self.fid.encode() + b"/part/1 HTTP/1.1\r\nHost: a\r\nContent-Length: 1048576\r\n"
            b"Content-Length: 5\r\nAuthorization: Bearer " + self.tok[1].encode() + b"\r\n\r\nhello",
            b"PUT /upload/" + self.fid.encode() + b"/part/1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
            b"Content-Length: 1048576\r\nAuthorization: Bearer " + self.tok[1].encode() + b"\r\n\r\nhello",
            b"GET /upload/..%2f..%2fetc/status HTTP/1.1\r\nHost: a\r\nX-API-Key: " + API_KEY.encode() + b"\r\n\r\n",
        ]
        for raw in cases:
            with self.subTest(request=raw[:60]):
                c = RawConn(port)
                try:
                    c.try_send(raw)
                    try:
                        c.sock.shutdown(1)
                    except OSError:
                        pass
                    try:
                        r = c.read_response(10)
                        if b"/health" not in raw.split(b"\r\n", 1)[0]:
                            self.assertGreaterEqual(r.status, 400, raw[:60])
                        self.assertTrue(r.status < 500 or r.status == 505, "%s for %r" % (r.status, raw[:60]))
                    except (EOFError, ConnectionError):
                        pass
                finally:
                    c.close()
                self.assertOk(self.srv.request("GET", "/health", timeout=5))
        self.assertIntact()
        self.finish_fixture()

    def test_unknown_path(self):
        for method, path in (("GET", "/"), ("GET", "/nope"), ("GET", "/upload"), ("GET", "/upload/"),
                             ("GET", "/upload/%s/nope" % self.fid), ("POST", "/upload/init/extra"),
                             ("GET", "/upload/%s/status/x" % self.fid), ("GET", "/health/x"),
                             ("PUT", "/upload/%s/part/1/x" % self.fid)):
            with self.subTest(method=method, path=path):
                r = self.srv.request(method, path, None, {"X-API-Key": API_KEY})
                self.assertError(r, 404)
        self.assertIntact()

    def test_wrong_method(self):
        for method, path in (("GET", "/upload/init"), ("PUT", "/upload/init"),
                             ("POST", "/health"), ("DELETE", "/health"),
                             ("POST", "/upload/%s/status" % self.fid), ("DELETE", "/upload/%s/status" % self.fid),
                             ("GET", "/upload/%s/complete" % self.fid), ("PUT", "/upload/%s/complete" % self.fid),
                             ("GET", "/upload/%s/part/1" % self.fid), ("POST", "/upload/%s/part/1" % self.fid),
                             ("DELETE", "/upload/%s/part/1" % self.fid),
                             ("POST", "/upload/%s" % self.fid), ("PATCH", "/upload/%s" % self.fid)):
            with self.subTest(method=method, path=path):
                r = self.srv.request(method, path, None, {"X-API-Key": API_KEY})
                self.assertError(r, 405)
        self.assertIntact()
        self.finish_fixture()

    # ------------------------------------------------------------------ filenames
    def test_bad_filenames(self):
        srv = self.srv
        bad = ["", "/etc/passwd", "/abs.bin", "../x", "..", ".", "a/../../x", "a/..", "../../../../tmp/evil",
               "a/./b", "./a", "a//b", "a/", "/", "a\\b", "..\\x", "a\u0000b", "a\nb", "a\rb", "a\tb", "a\x1fb",
               "a\x7fb", "dir\x01/b", "x" * 256, "d" * 256 + "/b.bin", "n" * 219, "dir/" + "n" * 219]
        long_name = "/".join(["p" * 100] * 10) + "/" + "f" * 15  # 1025 bytes, every piece legal
        self.assertEqual(len(long_name.encode()), 1025)
        bad.append(long_name)
        for name in bad:
            with self.subTest(filename=name[:80]):
                r = srv.init(name, 10)
                self.assertError(r, 400)
        # the limits themselves are allowed
        ok_1024 = "/".join(["p" * 100] * 10) + "/" + "f" * 14
        self.assertEqual(len(ok_1024.encode()), 1024)
        good = [ok_1024, "n" * 218, "d" * 255 + "/b.bin", "a..b", "..a", ".hidden", "a b/c d.txt",
                'qu"ote.bin', "it's.bin", "<b>&amp;.bin", "%2e%2e.bin", "emoji-\U0001F600.bin", "x:y;z=1.bin",
                "%s%s%n%x%p/%n%n%n.bin"]
        for name in good:
            with self.subTest(good=name[:80]):
                j = self.assertOk(srv.init(name, 10))
                self.assertEqual(j["filename"], name.rsplit("/", 1)[-1])
                data = os.urandom(10)
                self.upload_all(srv, j, data)
                c = self.complete_ok(srv, j["file_id"], data)
                final = os.path.normpath(srv.resolve(c["final_path"]))
                self.assertEqual(final, os.path.join(srv.files_dir, os.path.dirname(name),
                                                     j["file_id"] + "_" + os.path.basename(name)))
        # nothing appeared outside the server's own files
        allowed = {"uploads", "uploads.db", "uploads.db-wal", "uploads.db-shm", "uploads.db-journal",
                   LOG_NAME, ".env"}
        self.assertEqual(set(os.listdir(srv.tmp)) - allowed, set(),
                         "unexpected entries in the server's working directory")
        self.assertEqual(set(os.listdir(srv.storage)) - {".staging", "files"}, set(),
                         "unexpected entries in LOCAL_STORAGE_PATH")
        self.assertFalse(os.path.exists("/tmp/evil"))
        for d, dirs, files in os.walk(srv.storage):
            for f in files + dirs:
                self.assertNotIn(f, ("passwd", "x", "b", "evil"), "stray file %s in %s" % (f, d))
        self.assertIntact()
        self.finish_fixture()


class LimitsTest(ServerTestCase):

    def fixture(self, srv, size):
        """An upload with its first part stored, to show a refused init leaves it intact."""
        data = os.urandom(size)
        init = self.init_ok(srv, "fixture.bin", data)
        part0 = split_parts(data)[0]
        self.assertOk(srv.put_part(init["file_id"], 0, init["parts"][0]["token"], part0))
        return init, data, self.assertOk(srv.status(init["file_id"]))

    def test_max_file_size(self):
        srv = self.start_server(env={"MAX_FILE_SIZE": "1000"})
        init, data, before = self.fixture(srv, 900)
        self.assertError(srv.init("big.bin", 1001), 413)
        self.assertError(srv.init("big.bin", 10 ** 12), 413)
        self.assertEqual(self.assertOk(srv.status(init["file_id"])), before)
        self.complete_ok(srv, init["file_id"], data)
        j = self.assertOk(srv.init("ok.bin", 1000))
        data = os.urandom(1000)
        self.upload_all(srv, j, data)
        self.complete_ok(srv, j["file_id"], data)

    def test_max_parts(self):
        srv = self.start_server(env={"MAX_PARTS": "3"})
        init, data, before = self.fixture(srv, CHUNK + 10)
        r = srv.init("big.bin", 3 * CHUNK + 1)
        j = self.assertError(r, 400)
        self.assertIn(str(3 * CHUNK), j["error"], "error must name the largest size allowed (3145728)")
        self.assertError(srv.init("big.bin", 100 * CHUNK), 400)
        self.assertEqual(self.assertOk(srv.status(init["file_id"])), before)
        init3 = self.assertOk(srv.init("ok.bin", 3 * CHUNK))
        self.assertEqual(init3["total_parts"], 3)
        self.upload_all(srv, init, data, skip=(0,))
        self.complete_ok(srv, init["file_id"], data)


if __name__ == "__main__":
    import unittest
    unittest.main()
