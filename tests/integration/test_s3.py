"""The S3 backend against s3rver behind tests/s3/launcher.js (every request's SigV4 checked
with AWS's signer; ListMultipartUploads, ListParts and AbortMultipartUpload added to AWS's
API reference). Results are read back with an independent client (the AWS SDK for
JavaScript, tests/s3/check.js), byte for byte."""

import datetime
import hashlib
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (EMPTY_SHA256, REPO, S3_CHUNK, SANITIZER_MARKERS, S3Error, S3TestCase,  # noqa: E402
                     RawConn, base_env, free_port, http_request, request_head, s3_curl,
                     s3_error_code, sha256_hex, sigv4_sign, split_parts)

MAX_SIZE = 10000 * S3_CHUNK  # 10,000 parts of 5 MiB: 52428800000 bytes
TTL_ENV = {"UPLOAD_TTL_HOURS": "0.0005", "CLEANUP_INTERVAL_SECONDS": "0.5"}  # 1.8 s


def md5_etag(b):
    return '"%s"' % hashlib.md5(b).hexdigest()


# ================================================================== the fake S3 itself

class LauncherTest(S3TestCase):
    """The test backend is only worth something if it can fail: it must refuse what AWS refuses."""

    def setUp(self):
        self.s3 = self.start_s3()

    def curl(self, method, path, secret=None, key=None, **kw):
        s3 = self.s3
        return s3_curl(s3.endpoint, method, path, key or s3.access_key, secret or s3.secret, s3.region, **kw)

    def test_curl_signature_wrong_secret_refused_right_secret_accepted(self):
        b = self.s3.bucket
        st, body = self.curl("GET", "/%s?uploads=" % b, secret="not-the-secret")
        self.assertEqual((st, s3_error_code(body)), (403, "SignatureDoesNotMatch"), body)
        st, body = self.curl("GET", "/%s?uploads=" % b)
        self.assertEqual(st, 200, body)
        self.assertIn(b"<ListMultipartUploadsResult", body)
        st, body = self.curl("GET", "/%s?uploads=" % b, key="AKIAUNKNOWN0000000000")
        self.assertEqual((st, s3_error_code(body)), (403, "InvalidAccessKeyId"), body)

        data = os.urandom(100000)
        st, body = self.curl("PUT", "/%s/dir/obj.bin" % b, secret="not-the-secret", body=data)
        self.assertEqual((st, s3_error_code(body)), (403, "SignatureDoesNotMatch"), body)
        st, body = self.curl("GET", "/%s/dir/obj.bin" % b)
        self.assertEqual((st, s3_error_code(body)), (404, "NoSuchKey"), "a refused PUT stored the object")
        st, body = self.curl("PUT", "/%s/dir/obj.bin" % b, body=data)
        self.assertEqual(st, 200, body)
        st, body = self.curl("GET", "/%s/dir/obj.bin" % b)
        self.assertEqual(st, 200)
        self.assertTrue(body == data)
        # a signed payload hash that is not the body's
        st, body = self.curl("PUT", "/%s/dir/other.bin" % b, body=data, payload_hash=sha256_hex(b"x"))
        self.assertEqual((st, s3_error_code(body)), (400, "XAmzContentSHA256Mismatch"), body)
        st, body = self.curl("GET", "/%s/dir/other.bin" % b)
        self.assertEqual(st, 404)

    def test_tampered_requests_refused(self):
        """A third, hand-written signer (harness.sigv4_sign): accepted when right, refused
        as soon as anything signed differs from what is sent."""
        s3, b = self.s3, self.s3.bucket
        key = "d\u00e9p\u00f4t/a b(1)=+.bin"
        data = os.urandom(1000)
        s3.client().put_object(b, key, data)
        from urllib.parse import quote
        raw_path = "/%s/%s" % (b, quote(key, safe="/"))

        def get(path_signed, raw, query=(), raw_query="", extra_sent=None, region=None, secret=None):
            h = {"host": "127.0.0.1:%d" % s3.port, "range": "bytes=0-99"}
            auth = sigv4_sign("GET", path_signed, list(query), h, EMPTY_SHA256, s3.access_key,
                              secret or s3.secret, region or s3.region)
            h["Authorization"] = auth
            h.update(extra_sent or {})
            return http_request(s3.port, "GET", raw + (("?" + raw_query) if raw_query else ""), headers=h)

        r = get("/%s/%s" % (b, key), raw_path)
        self.assertEqual(r.status, 206, r)
        self.assertEqual(r.body, data[:100])
        r = get("/%s/%s" % (b, key), raw_path, [("x-id", "GetObject")], "x-id=GetObject")
        self.assertEqual(r.status, 206, r)
        for what, resp in (
                ("another key than signed", get("/%s/other" % b, raw_path)),
                ("a query parameter not signed", get("/%s/%s" % (b, key), raw_path, raw_query="versionId=1")),
                ("a signed header changed", get("/%s/%s" % (b, key), raw_path, extra_sent={"range": "bytes=0-9"})),
                ("a wrong secret", get("/%s/%s" % (b, key), raw_path, secret=s3.secret + "x"))):
            with self.subTest(what):
                self.assertEqual((resp.status, s3_error_code(resp.body)), (403, "SignatureDoesNotMatch"), resp)
        r = get("/%s/%s" % (b, key), raw_path, region="eu-west-1")
        self.assertEqual((r.status, s3_error_code(r.body)), (400, "AuthorizationHeaderMalformed"), r)
        r = http_request(s3.port, "GET", raw_path)
        self.assertEqual((r.status, s3_error_code(r.body)), (403, "AccessDenied"), r)
        r = get("/%s/%s" % (b, key), raw_path, extra_sent={"x-amz-meta-note": "not signed"})
        self.assertEqual((r.status, s3_error_code(r.body)), (403, "AccessDenied"), r)
        self.assertIn(b"<HeadersNotSigned>x-amz-meta-note</HeadersNotSigned>", r.body)

    def test_session_token(self):
        s3 = self.start_s3(session_token="it-session-token/ABC+def==")
        c = s3.client()
        self.assertEqual(c.list_multipart_uploads(s3.bucket), [])
        for client, code in ((s3.client(session_token="another-token"), "InvalidToken"),
                             (s3.client(session_token=None), "InvalidAccessKeyId")):
            with self.assertRaises(S3Error) as cm:
                client.list_multipart_uploads(s3.bucket)
            self.assertEqual(cm.exception.code, code)

    def test_sdk_multipart_calls(self):
        s3, b = self.s3, self.s3.bucket
        c = s3.client()
        key = "mp/x y/\u00fc.bin"
        p1, p2 = os.urandom(S3_CHUNK), os.urandom(12345)
        uid = c.create_multipart_upload(b, key)
        e1, e2 = c.upload_part(b, key, uid, 1, p1), c.upload_part(b, key, uid, 2, p2)
        self.assertEqual((e1, e2), (md5_etag(p1), md5_etag(p2)))
        self.assertEqual(c.list_parts(b, key, uid), [{"PartNumber": 1, "Size": len(p1), "ETag": e1},
                                                     {"PartNumber": 2, "Size": len(p2), "ETag": e2}])
        ups = c.list_multipart_uploads(b)
        self.assertEqual([(u["Key"], u["UploadId"]) for u in ups], [(key, uid)])
        self.assertEqual(c.list_multipart_uploads(b, "mp/x"), ups)
        self.assertEqual(c.list_multipart_uploads(b, "other/"), [])
        with self.assertRaises(S3Error) as cm:
            c.complete_multipart_upload(b, key, uid, [e2, e1])
        self.assertEqual(cm.exception.code, "InvalidPart")
        c.complete_multipart_upload(b, key, uid, [e1, e2])
        self.assertEqual(c.get_object(b, key), p1 + p2)
        self.assertEqual(c.list_multipart_uploads(b), [])

        uid = c.create_multipart_upload(b, "small.bin")
        es = [c.upload_part(b, "small.bin", uid, n, b"x" * 10) for n in (1, 2)]
        with self.assertRaises(S3Error) as cm:
            c.complete_multipart_upload(b, "small.bin", uid, es)
        self.assertEqual(cm.exception.code, "EntityTooSmall")
        with self.assertRaises(S3Error) as cm:
            c.upload_part(b, "small.bin", uid, 0, b"x")
        self.assertEqual(cm.exception.code, "InvalidArgument")
        self.assertEqual(len(c.list_multipart_uploads(b)), 1)
        c.abort_multipart_upload(b, "small.bin", uid)
        self.assertEqual(c.list_multipart_uploads(b), [])
        for call in (lambda: c.abort_multipart_upload(b, "small.bin", uid),
                     lambda: c.list_parts(b, "small.bin", uid),
                     lambda: c.upload_part(b, "small.bin", uid, 1, b"x"),
                     lambda: c.complete_multipart_upload(b, "small.bin", uid, es)):
            with self.assertRaises(S3Error) as cm:
                call()
            self.assertEqual((cm.exception.code, cm.exception.status), ("NoSuchUpload", 404))
        with self.assertRaises(S3Error) as cm:
            s3.client(secret="wrong").list_objects(b)
        self.assertEqual(cm.exception.code, "SignatureDoesNotMatch")

    def test_stats_count_connections_and_requests(self):
        before = self.s3.stats()
        c = self.s3.client()
        c.list_objects(self.s3.bucket)
        c.list_multipart_uploads(self.s3.bucket)
        after = self.s3.stats()
        # check.js runs once per call: a new connection each time
        self.assertEqual(after["requests"] - before["requests"], 2, (before, after))
        self.assertEqual(after["connections"] - before["connections"], 2, (before, after))
        self.assertGreaterEqual(after["accepted"] - before["accepted"], 2, (before, after))

    def test_long_etags_mapped_back_at_complete(self):
        s3 = self.start_s3(long_etags=1500)
        c, b = s3.client(), s3.bucket
        p1, p2 = os.urandom(S3_CHUNK), os.urandom(100)
        uid = c.create_multipart_upload(b, "long.bin")
        e1, e2 = c.upload_part(b, "long.bin", uid, 1, p1), c.upload_part(b, "long.bin", uid, 2, p2)
        self.assertEqual(len(e1), 1500)
        self.assertTrue(e1.startswith(md5_etag(p1)[:-1]) and "&" in e1 and "<" in e1, e1[:80])
        with self.assertRaises(S3Error) as cm:  # an ETag cut short is not the part's
            c.complete_multipart_upload(b, "long.bin", uid, [e1[:255] + '"', e2])
        self.assertEqual(cm.exception.code, "InvalidPart")
        c.complete_multipart_upload(b, "long.bin", uid, [e1, e2])
        self.assertEqual(c.get_object(b, "long.bin"), p1 + p2)

    def test_slow_ms_delays_upload_part(self):
        slow = self.start_s3(slow_ms=1500)
        c = slow.client()
        uid = c.create_multipart_upload(slow.bucket, "k")
        t = time.time()
        c.upload_part(slow.bucket, "k", uid, 1, b"abc")
        self.assertGreaterEqual(time.time() - t, 1.5)


# ================================================================== the server on S3

class S3BackendTest(S3TestCase):

    def setUp(self):
        self.s3 = self.start_s3()
        self.srv = self.start_s3_server(self.s3)
        self.c = self.s3.client()

    def the_multipart_upload(self, key):
        """The one multipart upload in progress for key."""
        ups = [u for u in self.c.list_multipart_uploads(self.s3.bucket) if u["Key"] == key]
        self.assertEqual(len(ups), 1, "expected exactly one multipart upload for %r, S3 has %r"
                         % (key, self.c.list_multipart_uploads(self.s3.bucket)))
        return ups[0]["UploadId"]

    def test_health(self):
        j = self.assertOk(self.srv.request("GET", "/health"))
        self.assertEqual(j.get("status"), "ok")
        self.assertEqual(j.get("storage_backend"), "s3")

    def test_full_flow_parallel_shuffled(self):
        srv, s3 = self.srv, self.s3
        name = "videos/2024/movie.mp4"
        data = os.urandom(5 * S3_CHUNK + 123457)
        init = self.s3_init_ok(srv, name, data)
        self.assertEqual(init["filename"], "movie.mp4")
        self.assertEqual(init["total_parts"], 6)
        self.s3_upload_all(srv, init, data, threads=4, shuffle=True)
        self.assertSpoolEmpty(srv, "after all parts")
        key = self.s3_key(init, name)
        uid = self.the_multipart_upload(key)
        parts = split_parts(data, S3_CHUNK)
        self.assertEqual(self.c.list_parts(s3.bucket, key, uid),
                         [{"PartNumber": n + 1, "Size": len(p), "ETag": md5_etag(p)} for n, p in enumerate(parts)])
        st = self.assertOk(srv.status(init["file_id"]))
        self.assertEqual((st["uploaded_parts"], st["status"]), (6, "pending"))
        c = self.s3_complete_ok(srv, s3, init, name, data)
        self.assertNoMultipartUploads(s3, msg="after complete")
        self.assertEqual([o["Key"] for o in self.c.list_objects(s3.bucket)], [key])
        st = self.assertOk(srv.status(init["file_id"]))
        self.assertEqual(st["status"], "complete")
        self.assertEqual((st["final_path"], st["storage_backend"]), (c["final_path"], "s3"))
        self.assertEqual(self.assertOk(srv.complete(init["file_id"])), c)
        self.assertSpoolEmpty(srv, "after complete")

    def test_each_part_in_s3_before_its_reply_and_spool_empty(self):
        """A part's 200 comes after S3 stored it as part n+1; the spool is empty after each."""
        srv, s3 = self.srv, self.s3
        name = "seq/file.bin"
        data = os.urandom(3 * S3_CHUNK + 999)
        parts = split_parts(data, S3_CHUNK)
        init = self.s3_init_ok(srv, name, data)
        key = self.s3_key(init, name)
        uid = None
        for n in (2, 0, 3, 1):
            j = self.assertOk(srv.put_part(init["file_id"], n, init["parts"][n]["token"], parts[n]))
            self.assertEqual(j["checksum_sha256"], sha256_hex(parts[n]))
            self.assertSpoolEmpty(srv, "after part %d answered" % n)
            uid = uid or self.the_multipart_upload(key)
            stored = {p["PartNumber"]: p for p in self.c.list_parts(s3.bucket, key, uid)}
            self.assertIn(n + 1, stored, "part %d answered 200 but S3 has no part %d" % (n, n + 1))
            self.assertEqual((stored[n + 1]["Size"], stored[n + 1]["ETag"]), (len(parts[n]), md5_etag(parts[n])))
        self.assertEqual(self.the_multipart_upload(key), uid, "one S3 multipart upload per upload")
        self.s3_complete_ok(srv, s3, init, name, data)
        self.assertNoMultipartUploads(s3, msg="after complete")

    def test_resume_after_dropped_connection(self):
        srv, s3 = self.srv, self.s3
        name = "resume/me.bin"
        data = os.urandom(2 * S3_CHUNK + 4321)
        parts = split_parts(data, S3_CHUNK)
        init = self.s3_init_ok(srv, name, data)
        fid = init["file_id"]
        self.assertOk(srv.put_part(fid, 0, init["parts"][0]["token"], parts[0]))
        for n, cut in ((1, len(parts[1]) // 2), (2, 1000)):
            c = RawConn(srv.port)
            c.send(request_head("PUT", "/upload/%s/part/%d" % (fid, n),
                                {"Authorization": "Bearer " + init["parts"][n]["token"],
                                 "Content-Type": "application/octet-stream",
                                 "Content-Length": str(len(parts[n]))}))
            c.send(parts[n][:cut])
            time.sleep(0.2)
            c.close()
        deadline = time.time() + 10
        while time.time() < deadline:
            st = self.status_parts(srv, fid)
            if st[1][0] == "pending" and st[2][0] == "pending" and not self.spool_files(srv):
                break
            time.sleep(0.1)
        self.assertEqual(self.status_parts(srv, fid),
                         {0: ("uploaded", sha256_hex(parts[0])), 1: ("pending", None), 2: ("pending", None)})
        self.assertSpoolEmpty(srv, "after dropped connections")
        self.s3_upload_all(srv, init, data, skip=(0,))
        self.s3_complete_ok(srv, s3, init, name, data)
        self.assertNoMultipartUploads(s3, msg="after complete")

    def test_cancel(self):
        srv, s3 = self.srv, self.s3
        name = "cancel/me.bin"
        data = os.urandom(S3_CHUNK + 500)
        parts = split_parts(data, S3_CHUNK)
        init = self.s3_init_ok(srv, name, data)
        fid = init["file_id"]
        self.assertOk(srv.put_part(fid, 0, init["parts"][0]["token"], parts[0]))
        key = self.s3_key(init, name)
        self.the_multipart_upload(key)
        self.assertEqual(self.assertOk(srv.cancel(fid)), {"file_id": fid, "message": "Upload cancelled"})
        self.assertNoMultipartUploads(s3, msg="after cancel")
        self.assertEqual(self.c.list_objects(s3.bucket), [])
        self.assertError(srv.status(fid), 410, contains="Upload was cancelled")
        self.assertError(srv.put_part_raw(fid, 1, init["parts"][1]["token"], parts[1]), 409)
        self.assertError(srv.complete(fid), 409)
        self.assertNoMultipartUploads(s3, msg="after a part for a cancelled upload")
        self.assertSpoolEmpty(srv, "after cancel")
        # cancel before any part
        init2 = self.s3_init_ok(srv, "cancel/early.bin", 10)
        self.assertOk(srv.cancel(init2["file_id"]))
        self.assertNoMultipartUploads(s3, msg="after cancelling an upload without parts")

    def test_zero_byte_file(self):
        srv, s3 = self.srv, self.s3
        init = self.s3_init_ok(srv, "empty/nothing.txt", 0)
        self.assertEqual((init["total_parts"], init["parts"]), (0, []))
        c = self.s3_complete_ok(srv, s3, init, "empty/nothing.txt", b"")
        self.assertEqual(c["total_size"], 0)
        self.assertNoMultipartUploads(s3, msg="after completing a 0-byte upload")

    def test_path_and_unicode_in_filename(self):
        srv, s3 = self.srv, self.s3
        name = "d\u00e9p\u00f4t/2024 q1/my file (1)+x=y.bin"
        data = os.urandom(S3_CHUNK + 77)
        init = self.s3_init_ok(srv, name, data)
        self.assertEqual(init["filename"], "my file (1)+x=y.bin")
        self.s3_upload_all(srv, init, data)
        c = self.s3_complete_ok(srv, s3, init, name, data)
        self.assertEqual(c["final_path"], "s3://%s/d\u00e9p\u00f4t/2024 q1/%s_my file (1)+x=y.bin"
                         % (s3.bucket, init["file_id"]))
        self.assertNoMultipartUploads(s3)

    def test_too_many_parts(self):
        srv, s3 = self.srv, self.s3
        j = self.assertError(srv.init("huge.bin", 10001 * S3_CHUNK), 400)
        self.assertIn(str(MAX_SIZE), j["error"], "the 400 must name the largest size (%d)" % MAX_SIZE)
        self.assertError(srv.init("huge.bin", MAX_SIZE + 1), 400)
        init = self.assertOk(srv.init("largest.bin", MAX_SIZE))
        self.assertEqual(init["total_parts"], 10000)
        self.assertOk(srv.cancel(init["file_id"]))
        self.assertNoMultipartUploads(s3)

    def test_whole_file_checksum_refused_at_init(self):
        """S3 cannot read a multipart upload back before it completes, so a whole-file
        checksum_sha256 is refused up front (before any data is sent), creating nothing."""
        j = self.assertError(self.srv.init("sum.bin", 6 * 1024 * 1024,
                                           checksum_sha256="ab" * 32), 400)
        self.assertIn("checksum_sha256", j["error"])
        self.assertIn("s3", j["error"])
        self.assertNoMultipartUploads(self.s3)
        # Without it the same upload starts, and per-part digests still work.
        init = self.assertOk(self.srv.init("sum.bin", 6 * 1024 * 1024))
        self.assertOk(self.srv.cancel(init["file_id"]))

    def test_s3_error_during_part_is_502_and_part_stays_pending(self):
        """The multipart upload vanishes behind the server's back: S3 answers NoSuchUpload."""
        srv, s3 = self.srv, self.s3
        name = "gone/file.bin"
        data = os.urandom(S3_CHUNK + 10)
        parts = split_parts(data, S3_CHUNK)
        init = self.s3_init_ok(srv, name, data)
        fid = init["file_id"]
        self.assertOk(srv.put_part(fid, 0, init["parts"][0]["token"], parts[0]))
        key = self.s3_key(init, name)
        self.c.abort_multipart_upload(s3.bucket, key, self.the_multipart_upload(key))
        r = srv.put_part(fid, 1, init["parts"][1]["token"], parts[1])
        self.assertError(r, 502, contains="NoSuchUpload")
        self.assertEqual(self.status_parts(srv, fid)[1], ("pending", None))
        self.assertSpoolEmpty(srv, "after a part S3 refused")

    def test_expiry(self):
        s3 = self.s3
        srv = self.start_s3_server(s3, env=TTL_ENV)
        name = "exp/soon.bin"
        data = os.urandom(S3_CHUNK + 10)
        parts = split_parts(data, S3_CHUNK)
        init = self.s3_init_ok(srv, name, data)
        fid = init["file_id"]
        self.assertOk(srv.put_part(fid, 0, init["parts"][0]["token"], parts[0]))
        self.the_multipart_upload(self.s3_key(init, name))
        time.sleep(4)
        j = self.assertError(srv.status(fid), (404, 410))
        if j["status"] == 410:
            self.assertIn("expired", j["error"].lower())
        self.assertNoMultipartUploads(s3, msg="after expiry")
        self.assertEqual(self.c.list_objects(s3.bucket), [])
        self.assertError(srv.put_part_raw(fid, 1, init["parts"][1]["token"], parts[1]), (404, 410))
        self.assertNoMultipartUploads(s3, msg="after a part for an expired upload")
        self.assertSpoolEmpty(srv, "after expiry")


class S3ConnectionTest(S3TestCase):

    def test_connections_reused_across_requests_and_threads(self):
        """16 parts sent by 4 client threads, each part on its own HTTP connection to the server
        (so its own server thread): S3 sees far fewer TCP connections than requests."""
        s3 = self.start_s3()
        srv = self.start_s3_server(s3)
        name = "conn/many.bin"
        data = os.urandom(15 * S3_CHUNK + 1000)
        before = s3.stats()
        init = self.s3_init_ok(srv, name, data)
        self.s3_upload_all(srv, init, data, threads=4)
        self.assertOk(srv.complete(init["file_id"], timeout=120))
        after = s3.stats()
        requests = after["requests"] - before["requests"]
        connections = after["connections"] - before["connections"]
        print("\nS3: %d requests over %d connections" % (requests, connections), file=sys.stderr)
        self.assertEqual(requests, 18)  # CreateMultipartUpload, 16 parts, Complete
        self.assertLessEqual(connections, 5, "%d connections for %d requests: not reused"
                             % (connections, requests))
        self.assertS3Object(s3, self.s3_key(init, name), data)

    def test_long_etags_echoed_exactly(self):
        """An S3-compatible store whose ETags are 1,500 characters long (with characters XML
        escapes): CompleteMultipartUpload names every part by its whole ETag."""
        s3 = self.start_s3(long_etags=1500)
        srv = self.start_s3_server(s3)
        name = "long/etags.bin"
        data = os.urandom(3 * S3_CHUNK + 4321)
        init = self.s3_init_ok(srv, name, data)
        self.s3_upload_all(srv, init, data)
        self.s3_complete_ok(srv, s3, init, name, data)
        self.assertNoMultipartUploads(s3, msg="after complete")


class S3StorageUnitTest(S3TestCase):
    """tests/unit/test_storage_s3.c against the test S3 server: the append spool across a
    crash (kill -9) and a restart, reads in small pieces, concatenation of sources below the
    part minimum, finishing again after a crash, an empty deferred upload. Afterwards nothing
    may be left half done in S3 or in the spool."""

    BINARY = os.path.join(os.path.dirname(os.environ.get("CU_CONTRACT_BINARY")
                                          or os.path.join(REPO, "build", "storage_contract")),
                          "test_storage_s3")

    def run_unit(self, s3):
        spool = os.path.join(s3.tmp, "spool")
        env = base_env()
        env.update({k: v for k, v in s3.server_env(TEMP_STORAGE_PATH=spool).items() if v is not None})
        env["CONTRACT_LOG_LEVEL"] = "warn"
        p = subprocess.run([self.BINARY], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=600)
        out = p.stdout.decode("utf-8", "replace")
        for marker in SANITIZER_MARKERS:
            self.assertNotIn(marker, out, out[-8000:])
        self.assertEqual(p.returncode, 0, out[-8000:])
        self.assertIn("[  PASSED  ] 8 test(s)", out, out[-4000:])
        c = s3.client()
        self.assertEqual(c.list_multipart_uploads(s3.bucket), [], "multipart uploads left behind")
        self.assertEqual(sorted(os.path.join(d, f) for d, _, fs in os.walk(spool) for f in fs), [],
                         "spool files left behind")
        keys = [o["Key"] for o in c.list_objects(s3.bucket)]
        self.assertEqual([k for k in keys if k.endswith("_partial")], [], "sources left behind")
        return out

    def test_backend(self):
        self.run_unit(self.start_s3())

    def test_backend_on_a_store_with_long_etags_and_broken_downloads(self):
        """ETags of 1,500 characters, and every GetObject cut off after 1 MiB: readers resume
        (If-Match), and every ETag (UploadPart's header, UploadPartCopy's body) goes back
        whole."""
        s3 = self.start_s3(long_etags=1500, cut_gets=100000)
        out = self.run_unit(s3)
        self.assertIn("resuming", out)
        with open(s3.log_path, "rb") as f:
            self.assertIn(b" cut\n", f.read())


class S3PrefixTest(S3TestCase):

    def test_prefix(self):
        s3 = self.start_s3()
        srv = self.start_s3_server(s3, env={"S3_PREFIX": "tenant-a/in"})
        c = s3.client()
        for name in ("docs/report.pdf", "top.bin"):
            data = os.urandom(S3_CHUNK + 5)
            init = self.s3_init_ok(srv, name, data)
            self.s3_upload_all(srv, init, data)
            self.assertEqual([u["Key"] for u in c.list_multipart_uploads(s3.bucket)],
                             [self.s3_key(init, name, "tenant-a/in")], "multipart upload not under S3_PREFIX")
            j = self.s3_complete_ok(srv, s3, init, name, data, prefix="tenant-a/in")
            self.assertTrue(j["final_path"].startswith("s3://%s/tenant-a/in/" % s3.bucket), j)
        self.assertEqual(len(c.list_objects(s3.bucket)), 2)
        self.assertEqual(c.list_objects(s3.bucket), c.list_objects(s3.bucket, "tenant-a/in/"))
        self.assertNoMultipartUploads(s3)


class S3SweepTest(S3TestCase):

    def test_multipart_uploads_no_record_owns_are_aborted(self):
        s3 = self.start_s3()
        c = s3.client()
        orphan_key = "tenant-a/in/dir/%s_lost.bin" % uuid.uuid4()
        orphan = c.create_multipart_upload(s3.bucket, orphan_key)
        c.upload_part(s3.bucket, orphan_key, orphan, 1, os.urandom(1000))
        foreign = c.create_multipart_upload(s3.bucket, "tenant-a/in/someone-else.bin")
        outside = c.create_multipart_upload(s3.bucket, "elsewhere/%s_x.bin" % uuid.uuid4())
        time.sleep(1.1)  # older than the grace time below
        srv = self.start_s3_server(s3, env={"S3_PREFIX": "tenant-a/in",
                                            "ORPHAN_GRACE_SECONDS": "1",
                                            "CLEANUP_INTERVAL_SECONDS": "0.5"})
        live = self.s3_init_ok(srv, "live.bin", S3_CHUNK + 1)  # staged just now: never swept
        deadline = time.time() + 15
        keys = lambda: sorted(u["Key"] for u in c.list_multipart_uploads(s3.bucket))  # noqa: E731
        while time.time() < deadline and orphan_key in keys():
            time.sleep(0.3)
        left = keys()
        self.assertNotIn(orphan_key, left, "the orphan multipart upload was not aborted")
        self.assertIn("tenant-a/in/someone-else.bin", left)  # not named like ours
        self.assertTrue(any(k.startswith("elsewhere/") for k in left))  # outside the prefix
        self.assertIn(self.s3_key(live, "live.bin", "tenant-a/in"), left)
        self.assertIn("staging data no upload owns", srv.log_text())
        del foreign, outside

    def test_append_spools_no_record_owns_are_removed_at_start(self):
        """TEMP_STORAGE_PATH/appends/<id> of an upload the database does not know (a crash,
        a restored backup) goes at start, with the default cleanup interval."""
        s3 = self.start_s3()
        tmp = tempfile.mkdtemp(prefix="cu-it-s3-")
        self.addCleanup(shutil.rmtree, tmp, True)
        appends = os.path.join(tmp, "spool", "appends")
        old = time.time() - 2 * 3600  # older than ORPHAN_GRACE_SECONDS (1 hour)
        made = {}
        for name in ("orphan", "young", "not-an-id"):
            d = os.path.join(appends, str(uuid.uuid4()) if name != "not-an-id" else name)
            os.makedirs(d)
            with open(os.path.join(d, "0"), "wb") as f:
                f.write(os.urandom(1000))
            if name != "young":
                for p in (os.path.join(d, "0"), d):
                    os.utime(p, (old, old))
            made[name] = d
        srv = self.start_s3_server(s3, tmpdir=tmp)
        deadline = time.time() + 10
        while time.time() < deadline and os.path.exists(made["orphan"]):
            time.sleep(0.1)
        self.assertFalse(os.path.exists(made["orphan"]), "an orphan append spool was left")
        self.assertTrue(os.path.exists(os.path.join(made["young"], "0")), "a young spool was removed")
        self.assertTrue(os.path.exists(os.path.join(made["not-an-id"], "0")), "a stranger was removed")
        self.assertIn("staging data no upload owns", srv.log_text())
        self.assertEqual(s3.client().list_objects(s3.bucket), [], "the sweep deleted an object")


# ================================================================== start-up refusals

class S3StartupTest(S3TestCase):

    def refuse(self, env, *needles):
        rc, out, err, _ = self.run_binary(env=env, timeout=30)
        self.assertEqual(rc, 2, "exit status %s, expected 2\nstdout: %s\nstderr: %s" % (rc, out, err))
        for n in needles:
            self.assertIn(n, err, "stderr does not name %r:\n%s" % (n, err))
        return err

    def test_chunk_size_below_5_refused(self):
        s3 = self.start_s3()
        self.refuse(s3.server_env(CHUNK_SIZE_MB="4"), "CHUNK_SIZE_MB")

    def test_wrong_secret(self):
        s3 = self.start_s3()
        self.refuse(s3.server_env(AWS_SECRET_ACCESS_KEY="wrong-secret"), s3.endpoint, s3.bucket,
                    "SignatureDoesNotMatch")

    def test_unknown_access_key(self):
        s3 = self.start_s3()
        self.refuse(s3.server_env(AWS_ACCESS_KEY_ID="AKIAUNKNOWN000000000"), s3.endpoint, s3.bucket,
                    "InvalidAccessKeyId")

    def test_unknown_bucket(self):
        s3 = self.start_s3()
        self.refuse(s3.server_env(S3_BUCKET="no-such-bucket"), s3.endpoint, "no-such-bucket", "NoSuchBucket")

    def test_nothing_listening(self):
        s3 = self.start_s3()
        endpoint = "http://127.0.0.1:%d" % free_port()
        self.refuse(s3.server_env(S3_ENDPOINT=endpoint), endpoint)

    def test_session_token(self):
        s3 = self.start_s3(session_token="it-session-token/ABC+def==")
        self.refuse(s3.server_env(AWS_SESSION_TOKEN="wrong-token"), s3.endpoint, s3.bucket, "InvalidToken")
        self.refuse(s3.server_env(AWS_SESSION_TOKEN=None), s3.endpoint, s3.bucket, "InvalidAccessKeyId")
        srv = self.start_s3_server(s3)
        data = os.urandom(S3_CHUNK + 3)
        init = self.s3_init_ok(srv, "tok/en.bin", data)
        self.s3_upload_all(srv, init, data)
        self.s3_complete_ok(srv, s3, init, "tok/en.bin", data)
        self.assertNoMultipartUploads(s3)

    def test_right_credentials_start(self):
        s3 = self.start_s3()
        srv = self.start_s3_server(s3)
        self.assertEqual(self.assertOk(srv.request("GET", "/health"))["storage_backend"], "s3")


# ================================================================== S3 errors during a part

class S3RetryTest(S3TestCase):

    def upload_log(self, s3):
        with open(s3.log_path, "rb") as f:
            return [l for l in f.read().decode("utf-8", "replace").splitlines() if "partNumber=" in l and " PUT " in l]

    def test_transient_errors_retried(self):
        s3 = self.start_s3(fail_parts=2)
        srv = self.start_s3_server(s3)
        data = os.urandom(1000)
        init = self.s3_init_ok(srv, "retry/me.bin", data)
        self.assertOk(srv.put_part(init["file_id"], 0, init["parts"][0]["token"], data, timeout=60))
        log = self.upload_log(s3)
        self.assertEqual([l.endswith("503 SlowDown") for l in log], [True, True, False], "\n".join(log))
        # The launcher logs each answer when sent: the gaps are at least the backoff (0.25 s,
        # then 0.5 s).
        when = [datetime.datetime.strptime(l.split(" ", 1)[0], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()
                for l in log]
        self.assertGreaterEqual(when[1] - when[0], 0.24, "\n".join(log))
        self.assertGreaterEqual(when[2] - when[1], 0.49, "\n".join(log))
        self.assertSpoolEmpty(srv, "after a retried part")
        self.s3_complete_ok(srv, s3, init, "retry/me.bin", data)
        self.assertNoMultipartUploads(s3)

    def test_persistent_errors_502(self):
        s3 = self.start_s3(fail_parts=1000)
        srv = self.start_s3_server(s3)
        data = os.urandom(S3_CHUNK + 1)
        parts = split_parts(data, S3_CHUNK)
        init = self.s3_init_ok(srv, "retry/never.bin", data)
        fid = init["file_id"]
        t = time.time()
        r = srv.put_part(fid, 0, init["parts"][0]["token"], parts[0], timeout=120)
        self.assertError(r, 502, contains="SlowDown")
        self.assertGreater(len(self.upload_log(s3)), 1, "a transient error (503 SlowDown) was not retried")
        self.assertLess(time.time() - t, 60, "retries took too long")
        self.assertEqual(self.status_parts(srv, fid)[0], ("pending", None))
        self.assertSpoolEmpty(srv, "after a part S3 kept refusing")
        self.assertOk(srv.cancel(fid))
        self.assertNoMultipartUploads(s3, msg="after cancel")


# ================================================================== crash and isolation

class S3CrashTest(S3TestCase):

    def test_kill9_mid_upload_then_finish(self):
        s3 = self.start_s3(slow_ms=1500)  # parts stay in flight long enough to be killed there
        srv = self.start_s3_server(s3)
        name = "crash/big.bin"
        data = os.urandom(3 * S3_CHUNK + 777)
        parts = split_parts(data, S3_CHUNK)
        init = self.s3_init_ok(srv, name, data)
        fid = init["file_id"]
        self.s3_upload_all(srv, init, data[:2 * S3_CHUNK], threads=2)  # parts 0 and 1: acknowledged

        def put(n):
            try:
                srv.put_part(fid, n, init["parts"][n]["token"], parts[n], timeout=30)
            except (OSError, http.client.HTTPException):
                pass
        threads = [threading.Thread(target=put, args=(n,)) for n in (2, 3)]
        for t in threads:
            t.start()
        time.sleep(0.8)
        srv.kill9()
        for t in threads:
            t.join(30)
        srv.start()
        st = self.status_parts(srv, fid)
        self.assertIn("pending", (st[2][0], st[3][0]),
                      "parts 2 and 3 were recorded although S3 had not answered yet when the server was killed")
        self.assertEqual(st[0], ("uploaded", sha256_hex(parts[0])), "acknowledged part 0 lost by kill -9")
        self.assertEqual(st[1], ("uploaded", sha256_hex(parts[1])), "acknowledged part 1 lost by kill -9")
        for n in (2, 3):
            self.assertIn(st[n], (("pending", None), ("uploaded", sha256_hex(parts[n]))), "part %d" % n)
            if st[n][0] == "pending":
                self.assertOk(srv.put_part(fid, n, init["parts"][n]["token"], parts[n], timeout=60))
        self.s3_complete_ok(srv, s3, init, name, data)
        self.assertNoMultipartUploads(s3, msg="after kill -9, restart and complete")
        self.assertSpoolEmpty(srv, "after kill -9, restart and finishing every part")


class S3IsolationTest(S3TestCase):

    def test_slow_backend_does_not_starve_other_clients(self):
        s3 = self.start_s3(slow_ms=3000)
        srv = self.start_s3_server(s3)
        name = "slow/sixteen.bin"
        data = os.urandom(16 * S3_CHUNK)
        parts = split_parts(data, S3_CHUNK)
        init = self.s3_init_ok(srv, name, data)
        fid = init["file_id"]
        other = self.s3_init_ok(srv, "slow/other.bin", 10)
        sent, results = threading.Semaphore(0), {}

        def put(n):
            c = RawConn(srv.port, timeout=120)
            try:
                c.send(request_head("PUT", "/upload/%s/part/%d" % (fid, n),
                                    {"Authorization": "Bearer " + init["parts"][n]["token"],
                                     "Content-Type": "application/octet-stream",
                                     "Content-Length": str(len(parts[n]))}) + parts[n])
                sent.release()
                results[n] = c.read_response(timeout=120)
            except Exception as e:  # reported below
                sent.release()
                results[n] = e
            finally:
                c.close()
        threads = [threading.Thread(target=put, args=(n,)) for n in range(16)]
        t0 = time.time()
        for t in threads:
            t.start()
        for _ in range(16):
            self.assertTrue(sent.acquire(timeout=30), "could not send 16 parts")
        worst = {}
        while time.time() - t0 < 2.5:
            for label, call in (("GET /health", lambda: srv.request("GET", "/health", timeout=5)),
                                ("status", lambda: srv.status(fid)),
                                ("status (other upload)", lambda: srv.status(other["file_id"]))):
                t = time.time()
                r = call()
                dt = time.time() - t
                self.assertEqual(r.status, 200, "%s: %r" % (label, r))
                worst[label] = max(worst.get(label, 0), dt)
            time.sleep(0.05)
        in_flight = 16 - self.assertOk(srv.status(fid))["uploaded_parts"]
        self.assertGreater(in_flight, 0, "no part was in flight while measuring: the backend was not slow")
        for label, dt in worst.items():
            self.assertLess(dt, 1.0, "%s took %.2f s while %d parts were in flight to a slow S3"
                            % (label, dt, in_flight))
        for t in threads:
            t.join(150)
        for n in range(16):
            r = results.get(n)
            self.assertFalse(isinstance(r, Exception), "part %d: %r" % (n, r))
            self.assertEqual(r.status, 200, "part %d: %r" % (n, r))
        self.s3_complete_ok(srv, s3, init, name, data)
        self.assertOk(srv.cancel(other["file_id"]))
        self.assertNoMultipartUploads(s3)


if __name__ == "__main__":
    import unittest
    unittest.main()
