"""The seed API's whole flow: init, parts, status, complete, cancel, checksums, health."""

import base64
import hashlib
import hmac
import http.client
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (API_KEY, CHUNK, HEX64_RE, JWT_SECRET, UUID_RE, ServerTestCase,  # noqa: E402
                     b64url, file_sha256, jwt_parts, rfc3339_to_epoch, sha256_hex, split_parts)


class FlowTest(ServerTestCase):

    def setUp(self):
        self.srv = self.start_server()

    # ------------------------------------------------------------------ health
    def test_health(self):
        r = self.srv.request("GET", "/health")
        j = self.assertOk(r)
        self.assertEqual(j.get("status"), "ok")
        self.assertEqual(j.get("storage_backend"), "local")
        self.assertIsInstance(j.get("version"), str)
        self.assertRegex(j["version"], r"^\d+\.\d+\.\d+")

    # ------------------------------------------------------------------ full flow
    def test_full_flow_parallel_shuffled(self):
        srv = self.srv
        data = os.urandom(5 * CHUNK + 123457)
        parts = split_parts(data)
        self.assertEqual(len(parts), 6)
        t0 = time.time()
        init = self.assertOk(srv.init("videos/2024/movie.mp4", len(data)))

        # init reply
        for key in ("file_id", "filename", "total_size", "total_parts", "chunk_size", "parts", "expires_at"):
            self.assertIn(key, init, "init reply lacks %s: %r" % (key, init))
        fid = init["file_id"]
        self.assertIsInstance(fid, str)
        self.assertRegex(fid, UUID_RE)
        self.assertEqual(init["filename"], "movie.mp4")
        self.assertIntField(init, "total_size", len(data))
        self.assertIntField(init, "total_parts", 6)
        self.assertIntField(init, "chunk_size", 1048576)
        self.assertRfc3339(init["expires_at"])
        exp = rfc3339_to_epoch(init["expires_at"])
        self.assertAlmostEqual(exp, t0 + 24 * 3600, delta=120, msg="expires_at is not now + 24 h")
        self.assertIsInstance(init["parts"], list)
        self.assertEqual([p.get("part") for p in init["parts"]], list(range(6)))
        for p in init["parts"]:
            self.assertEqual(set(p.keys()), {"part", "token", "status"}, repr(p))
            self.assertIs(type(p["part"]), int)
            self.assertEqual(p["status"], "pending")
            self.assertIsInstance(p["token"], str)
            # an HS256 JWT signed with JWT_SECRET, claims as documented
            hdr, claims, sig = jwt_parts(p["token"])
            self.assertEqual(hdr.get("alg"), "HS256")
            h64, p64, _ = p["token"].split(".")
            want = b64url(hmac.new(JWT_SECRET.encode(), (h64 + "." + p64).encode(), hashlib.sha256).digest())
            self.assertEqual(sig, want, "part token is not HS256-signed with JWT_SECRET")
            self.assertEqual(claims.get("upload_id"), fid)
            self.assertEqual(claims.get("part_number"), p["part"])
            self.assertEqual(claims.get("expected_size"), len(parts[p["part"]]))
            self.assertEqual(claims.get("exp"), exp)
        self.assertEqual(len(set(p["token"] for p in init["parts"])), 6, "tokens must differ")

        # status before any part
        st = self.assertOk(srv.status(fid))
        self.assertEqual(st["uploaded_parts"], 0)
        self.assertEqual(st["progress_percent"], 0)
        self.assertEqual(st["status"], "pending")
        self.assertTrue(all(p["status"] == "pending" and p["checksum_sha256"] is None for p in st["parts"]))

        # parts, 4 at a time, shuffled
        results = self.upload_all(srv, init, data, threads=4, shuffle=True)
        counts = []
        for n, r in results.items():
            j = r.json
            self.assertEqual(set(j.keys()), {"upload_id", "part_number", "status", "checksum_sha256",
                                             "uploaded_parts", "total_parts"}, repr(j))
            self.assertEqual(j["upload_id"], fid)
            self.assertIntField(j, "part_number", n)
            self.assertEqual(j["status"], "uploaded")
            self.assertRegex(j["checksum_sha256"], HEX64_RE)
            self.assertIntField(j, "uploaded_parts")
            self.assertIntField(j, "total_parts", 6)
            self.assertTrue(1 <= j["uploaded_parts"] <= 6)
            counts.append(j["uploaded_parts"])
        self.assertEqual(sorted(counts)[-1], 6, "the last part acknowledged must report 6/6: %r" % counts)
        self.assertEqual(len(set(counts)), 6, "uploaded_parts counts must be distinct: %r" % counts)

        # status after all parts
        st = self.assertOk(srv.status(fid))
        for key in ("file_id", "filename", "total_size", "total_parts", "uploaded_parts", "progress_percent",
                    "status", "chunk_size", "created_at", "expires_at", "parts"):
            self.assertIn(key, st, "status lacks %s" % key)
        self.assertEqual(st["file_id"], fid)
        self.assertEqual(st["filename"], "movie.mp4")
        self.assertIntField(st, "total_size", len(data))
        self.assertIntField(st, "total_parts", 6)
        self.assertIntField(st, "uploaded_parts", 6)
        self.assertIntField(st, "chunk_size", CHUNK)
        self.assertEqual(st["progress_percent"], 100)
        self.assertEqual(st["status"], "pending")
        self.assertEqual(set(st.keys()), {"file_id", "filename", "total_size", "total_parts", "uploaded_parts",
                                          "progress_percent", "status", "chunk_size", "created_at", "expires_at",
                                          "parts"}, "fields of a pending upload's status")
        self.assertRfc3339(st["created_at"])
        self.assertAlmostEqual(rfc3339_to_epoch(st["created_at"]), t0, delta=60)
        self.assertEqual(st["expires_at"], init["expires_at"])
        self.assertEqual([p["part"] for p in st["parts"]], list(range(6)))
        for p in st["parts"]:
            self.assertEqual(set(p.keys()), {"part", "status", "checksum_sha256"}, repr(p))
            self.assertEqual(p["status"], "uploaded")
            self.assertEqual(p["checksum_sha256"], sha256_hex(parts[p["part"]]))

        # complete: a rename of the staging file (same inode), not a copy
        staged = [os.path.join(d, f) for d, _, fs in os.walk(srv.staging) for f in fs]
        self.assertEqual(len(staged), 1, "expected one staging file for one upload: %r" % staged)
        staged_ino = os.stat(staged[0]).st_ino
        c = self.assertOk(srv.complete(fid))
        self.assertEqual(set(c.keys()), {"file_id", "filename", "total_size", "status", "final_path",
                                         "storage_backend", "completed_at"}, repr(c))
        self.assertEqual(c["file_id"], fid)
        self.assertEqual(c["filename"], "movie.mp4")
        self.assertIntField(c, "total_size", len(data))
        self.assertEqual(c["status"], "complete")
        self.assertEqual(c["storage_backend"], "local")
        self.assertRfc3339(c["completed_at"])
        want = os.path.join(srv.storage, "files", "videos", "2024", fid + "_movie.mp4")
        self.assertEqual(os.path.normpath(srv.resolve(c["final_path"])), want,
                         "final_path %r is not <LOCAL_STORAGE_PATH>/files/videos/2024/<id>_movie.mp4"
                         % c["final_path"])
        self.assertEqual(c["final_path"], want, "final_path should be LOCAL_STORAGE_PATH + /files/...")
        self.assertEqual(file_sha256(want), sha256_hex(data))
        self.assertEqual(os.stat(want).st_ino, staged_ino, "complete copied the data instead of renaming")
        self.assertFalse(os.path.exists(staged[0]), "staging file left over")

        # complete again: same reply
        c2 = self.assertOk(srv.complete(fid))
        self.assertEqual(c2, c)

        # status of a complete upload
        st = self.assertOk(srv.status(fid))
        self.assertEqual(st["status"], "complete")
        self.assertEqual(st["final_path"], c["final_path"])
        self.assertEqual(st["storage_backend"], "local")
        self.assertEqual(st["uploaded_parts"], 6)

        # a part for a complete upload: 409; the file is untouched
        r = srv.put_part_raw(fid, 0, init["parts"][0]["token"], parts[0])
        self.assertError(r, 409)
        self.assertEqual(file_sha256(want), sha256_hex(data))

    def test_relative_storage_path(self):
        srv = self.start_server(env={"LOCAL_STORAGE_PATH": "./uploads"})
        data = os.urandom(CHUNK + 99)
        init = self.init_ok(srv, "report.pdf", data)
        self.upload_all(srv, init, data)
        c = self.complete_ok(srv, init["file_id"], data)
        self.assertEqual(c["final_path"], "./uploads/files/%s_report.pdf" % init["file_id"])
        self.assertTrue(os.path.isfile(os.path.join(srv.tmp, "uploads", "files", init["file_id"] + "_report.pdf")))

    def test_zero_byte_file(self):
        srv = self.srv
        init = self.assertOk(srv.init("empty.txt", 0))
        self.assertIntField(init, "total_parts", 0)
        self.assertEqual(init["parts"], [])
        st = self.assertOk(srv.status(init["file_id"]))
        self.assertEqual(st["progress_percent"], 100)
        self.assertEqual(st["parts"], [])
        c = self.assertOk(srv.complete(init["file_id"]))
        self.assertEqual(c["total_size"], 0)
        path = srv.resolve(c["final_path"])
        self.assertEqual(os.path.normpath(path), os.path.join(srv.files_dir, init["file_id"] + "_empty.txt"))
        self.assertTrue(os.path.isfile(path))
        self.assertEqual(os.path.getsize(path), 0)

    def test_exact_multiple_of_chunk(self):
        srv = self.srv
        data = os.urandom(3 * CHUNK)
        init = self.init_ok(srv, "three.bin", data)
        self.assertEqual(init["total_parts"], 3)
        self.upload_all(srv, init, data)
        self.complete_ok(srv, init["file_id"], data)

    def test_single_short_part(self):
        srv = self.srv
        data = os.urandom(1000)
        init = self.init_ok(srv, "small.bin", data)
        self.assertEqual(init["total_parts"], 1)
        self.upload_all(srv, init, data)
        self.complete_ok(srv, init["file_id"], data)

    def test_utf8_filename(self):
        srv = self.srv
        data = os.urandom(2000)
        init = self.init_ok(srv, "d\u00e9p\u00f4t/vid\u00e9o \u00fc.bin", data)
        self.assertEqual(init["filename"], "vid\u00e9o \u00fc.bin")
        self.upload_all(srv, init, data)
        c = self.complete_ok(srv, init["file_id"], data)
        self.assertEqual(os.path.normpath(srv.resolve(c["final_path"])),
                         os.path.join(srv.files_dir, "d\u00e9p\u00f4t", init["file_id"] + "_vid\u00e9o \u00fc.bin"))

    def test_progress_percent_rounding(self):
        srv = self.srv
        data = os.urandom(2 * CHUNK + 10)
        init = self.init_ok(srv, "p.bin", data)
        parts = split_parts(data)
        self.assertOk(srv.put_part(init["file_id"], 1, init["parts"][1]["token"], parts[1]))
        st = self.assertOk(srv.status(init["file_id"]))
        self.assertEqual(st["uploaded_parts"], 1)
        self.assertIsInstance(st["progress_percent"], float)
        self.assertEqual(st["progress_percent"], 33.33)
        self.assertEqual(st["parts"][1], {"part": 1, "status": "uploaded", "checksum_sha256": sha256_hex(parts[1])})
        self.assertEqual(st["parts"][0], {"part": 0, "status": "pending", "checksum_sha256": None})
        self.assertOk(srv.put_part(init["file_id"], 0, init["parts"][0]["token"], parts[0]))
        st = self.assertOk(srv.status(init["file_id"]))
        self.assertEqual(st["progress_percent"], 66.67)

    def test_complete_with_parts_missing(self):
        srv = self.srv
        data = os.urandom(2 * CHUNK + 10)
        init = self.init_ok(srv, "m.bin", data)
        parts = split_parts(data)
        self.assertOk(srv.put_part(init["file_id"], 0, init["parts"][0]["token"], parts[0]))
        r = srv.complete(init["file_id"])
        self.assertError(r, 400, contains="Not all parts uploaded: 1/3 complete")
        st = self.assertOk(srv.status(init["file_id"]))
        self.assertEqual(st["status"], "pending")
        self.assertEqual(st["uploaded_parts"], 1)

    # ------------------------------------------------------------------ cancel
    def test_cancel(self):
        srv = self.srv
        data = os.urandom(2 * CHUNK + 500)
        parts = split_parts(data)
        init = self.init_ok(srv, "cancel/me.bin", data)
        fid = init["file_id"]
        self.assertOk(srv.put_part(fid, 0, init["parts"][0]["token"], parts[0]))
        staged = [os.path.join(d, f) for d, _, fs in os.walk(srv.staging) for f in fs]
        self.assertTrue(staged, "no staging data under %s after a part was uploaded" % srv.staging)

        r = srv.cancel(fid)
        j = self.assertOk(r)
        self.assertEqual(j, {"file_id": fid, "message": "Upload cancelled"})
        staged = [os.path.join(d, f) for d, _, fs in os.walk(srv.staging) for f in fs]
        self.assertEqual(staged, [], "staging data left after cancel")
        self.assertEqual([f for _, _, fs in os.walk(srv.files_dir) for f in fs], [])

        self.assertError(srv.status(fid), 410, contains="Upload was cancelled")
        self.assertError(srv.put_part_raw(fid, 1, init["parts"][1]["token"], parts[1]), 409)
        self.assertError(srv.complete(fid), 409)
        self.assertEqual([f for _, _, fs in os.walk(srv.staging) for f in fs], [])

    def test_cancel_complete_upload_keeps_file(self):
        srv = self.srv
        data = os.urandom(1500)
        init = self.init_ok(srv, "keep.bin", data)
        self.upload_all(srv, init, data)
        c = self.complete_ok(srv, init["file_id"], data)
        r = srv.cancel(init["file_id"])
        self.assertError(r, (400, 409))
        self.assertEqual(file_sha256(srv.resolve(c["final_path"])), sha256_hex(data))
        st = self.assertOk(srv.status(init["file_id"]))
        self.assertEqual(st["status"], "complete")

    # ------------------------------------------------------------------ whole-file checksum
    def test_whole_file_checksum_correct(self):
        srv = self.srv
        data = os.urandom(2 * CHUNK + 777)
        init = self.init_ok(srv, "sum.bin", data, checksum_sha256=sha256_hex(data))
        self.upload_all(srv, init, data)
        self.complete_ok(srv, init["file_id"], data)

    def test_whole_file_checksum_uppercase_accepted(self):
        srv = self.srv
        data = os.urandom(CHUNK + 1)
        r = srv.init("sumU.bin", len(data), checksum_sha256=sha256_hex(data).upper())
        # 64 hex digits: upper case is still hex
        init = self.assertOk(r)
        self.upload_all(srv, init, data)
        self.complete_ok(srv, init["file_id"], data)

    def test_whole_file_checksum_wrong(self):
        srv = self.srv
        data = os.urandom(2 * CHUNK + 777)
        wrong = sha256_hex(b"not the data")
        init = self.init_ok(srv, "sum.bin", data, checksum_sha256=wrong)
        fid = init["file_id"]
        self.upload_all(srv, init, data)
        before = self.assertOk(srv.status(fid))
        r = srv.complete(fid)
        self.assertError(r, 422, allow_extra=True)
        self.assertIn(wrong, r.body.decode(), "422 reply must carry the expected digest")
        self.assertIn(sha256_hex(data), r.body.decode(), "422 reply must carry the actual digest")
        after = self.assertOk(srv.status(fid))
        self.assertEqual(after["status"], "pending")
        self.assertEqual(after, before)
        self.assertEqual([f for _, _, fs in os.walk(srv.files_dir) for f in fs], [], "no final file may appear")
        # still 422 (and still intact) on a second try
        self.assertError(srv.complete(fid), 422, allow_extra=True)
        self.assertEqual(self.assertOk(srv.status(fid)), before)

    # ------------------------------------------------------------------ per-part digests
    def _digest_case(self, make_headers):
        srv = self.srv
        data = os.urandom(CHUNK + 4321)
        parts = split_parts(data)
        init = self.init_ok(srv, "digest.bin", data)
        fid = init["file_id"]
        tok = [p["token"] for p in init["parts"]]
        # wrong digest: 400, part stays pending
        bad = make_headers(hashlib.sha256(b"other").digest())
        self.assertError(srv.put_part_raw(fid, 0, tok[0], parts[0], headers=bad), 400)
        st = self.assertOk(srv.status(fid))
        self.assertEqual(st["parts"][0], {"part": 0, "status": "pending", "checksum_sha256": None})
        self.assertEqual(st["uploaded_parts"], 0)
        # re-sent with the right digest: 200
        for n in (0, 1):
            j = self.assertOk(srv.put_part(fid, n, tok[n], parts[n],
                                           headers=make_headers(hashlib.sha256(parts[n]).digest())))
            self.assertEqual(j["checksum_sha256"], sha256_hex(parts[n]))
        self.complete_ok(srv, fid, data)

    def test_both_digests_one_wrong(self):
        srv = self.srv
        data = os.urandom(1000)
        init = self.init_ok(srv, "two.bin", data)
        good, bad = hashlib.sha256(data).digest(), hashlib.sha256(b"x").digest()
        for h in ({"Content-Digest": "sha-256=:%s:" % base64.b64encode(good).decode(), "X-Checksum-SHA256": bad.hex()},
                  {"Content-Digest": "sha-256=:%s:" % base64.b64encode(bad).decode(), "X-Checksum-SHA256": good.hex()}):
            self.assertError(srv.put_part_raw(init["file_id"], 0, init["parts"][0]["token"], data, headers=h), 400)
        self.assertEqual(self.assertOk(srv.status(init["file_id"]))["uploaded_parts"], 0)
        self.upload_all(srv, init, data)
        self.complete_ok(srv, init["file_id"], data)

    def test_malformed_digest_headers(self):
        srv = self.srv
        data = os.urandom(1000)
        init = self.init_ok(srv, "mal.bin", data)
        fid, tok = init["file_id"], init["parts"][0]["token"]
        for h in ({"Content-Digest": "sha-256=:!!!not base64!!!:"}, {"Content-Digest": "sha-256=:YWJj:"},
                  {"X-Checksum-SHA256": "xyz"}, {"X-Checksum-SHA256": "0" * 63}, {"X-Checksum-SHA256": "g" * 64}):
            with self.subTest(headers=h):
                self.assertError(srv.put_part_raw(fid, 0, tok, data, headers=h), 400)
        st = self.assertOk(srv.status(fid))
        self.assertEqual(st["parts"][0], {"part": 0, "status": "pending", "checksum_sha256": None})
        self.upload_all(srv, init, data)
        self.complete_ok(srv, fid, data)

    def test_same_filename_twice(self):
        srv = self.srv
        d1, d2 = os.urandom(1500), os.urandom(1500)
        i1 = self.init_ok(srv, "same/name.bin", d1)
        i2 = self.init_ok(srv, "same/name.bin", d2)
        self.assertNotEqual(i1["file_id"], i2["file_id"])
        self.upload_all(srv, i2, d2)
        self.upload_all(srv, i1, d1)
        c2 = self.complete_ok(srv, i2["file_id"], d2)
        c1 = self.complete_ok(srv, i1["file_id"], d1)
        self.assertNotEqual(c1["final_path"], c2["final_path"])
        self.assertEqual(file_sha256(srv.resolve(c2["final_path"])), sha256_hex(d2))

    def test_x_checksum_sha256_uppercase(self):
        self._digest_case(lambda d: {"X-Checksum-SHA256": d.hex().upper()})

    def test_init_with_chunked_body(self):
        from harness import chunked_body, raw_request
        body = json.dumps({"filename": "chunked.json.bin", "total_size": 10}).encode()
        r, _ = raw_request(self.srv.port, "POST", "/upload/init",
                           {"X-API-Key": API_KEY, "Content-Type": "application/json", "Transfer-Encoding": "chunked"},
                           chunked_body(body, 7), content_length=False)
        j = self.assertOk(r)
        self.assertEqual(j["filename"], "chunked.json.bin")
        self.assertEqual(j["total_parts"], 1)

    def test_content_digest(self):
        self._digest_case(lambda d: {"Content-Digest": "sha-256=:%s:" % base64.b64encode(d).decode()})

    def test_x_checksum_sha256(self):
        self._digest_case(lambda d: {"X-Checksum-SHA256": d.hex()})

    # ------------------------------------------------------------------ auth variants
    def test_bearer_api_key_on_management_endpoints(self):
        srv = self.srv
        bearer = {"Authorization": "Bearer " + API_KEY}
        data = os.urandom(CHUNK + 5)
        r = srv.request("POST", "/upload/init", {"filename": "b.bin", "total_size": len(data)}, bearer)
        init = self.assertOk(r)
        fid = init["file_id"]
        self.upload_all(srv, init, data)
        st = self.assertOk(srv.status(fid, headers=bearer))
        self.assertEqual(st["uploaded_parts"], 2)
        c = self.assertOk(srv.complete(fid, headers=bearer))
        self.assertEqual(file_sha256(srv.resolve(c["final_path"])), sha256_hex(data))
        init2 = self.assertOk(srv.init("c.bin", 10))
        j = self.assertOk(srv.cancel(init2["file_id"], headers=bearer))
        self.assertEqual(j["message"], "Upload cancelled")

    # ------------------------------------------------------------------ HTTP details
    def test_keep_alive_connection(self):
        """Several requests on one persistent HTTP/1.1 connection (as requests.Session does)."""
        srv = self.srv
        data = os.urandom(2 * CHUNK + 3)
        parts = split_parts(data)
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        try:
            conn.request("POST", "/upload/init", json.dumps({"filename": "ka.bin", "total_size": len(data)}),
                         {"X-API-Key": API_KEY, "Content-Type": "application/json"})
            r = conn.getresponse()
            self.assertEqual(r.status, 200)
            init = json.loads(r.read())
            for n, p in enumerate(parts):
                conn.request("PUT", "/upload/%s/part/%d" % (init["file_id"], n), p,
                             {"Authorization": "Bearer " + init["parts"][n]["token"],
                              "Content-Type": "application/octet-stream"})
                r = conn.getresponse()
                body = r.read()
                self.assertEqual(r.status, 200, body)
            conn.request("GET", "/upload/%s/status" % init["file_id"], headers={"X-API-Key": API_KEY})
            r = conn.getresponse()
            self.assertEqual(json.loads(r.read())["uploaded_parts"], 3)
            conn.request("POST", "/upload/%s/complete" % init["file_id"], headers={"X-API-Key": API_KEY})
            r = conn.getresponse()
            c = json.loads(r.read())
            self.assertEqual(r.status, 200, c)
        finally:
            conn.close()
        self.assertEqual(file_sha256(srv.resolve(c["final_path"])), sha256_hex(data))


if __name__ == "__main__":
    import unittest
    unittest.main()
