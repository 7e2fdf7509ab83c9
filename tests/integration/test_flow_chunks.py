"""flow.js / resumable.js chunks at /api/files/upload/chunked over raw HTTP: the chunk test,
forms in any chunk order, both libraries' cuts (the default, whose last chunk absorbs the
remainder, and forceChunkSize), octet bodies, first-chunk rules, refusals and their statuses
(flow.js stops on 404, 413, 415, 500, 501; anything else it may retry), concurrency, expiry,
and a storage failure that passes. The browser side is test_browser_chunked.py."""

import concurrent.futures
import hashlib
import json
import os
import sys
import time
import urllib.parse
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (API_KEY, CHUNK, RawConn, ServerTestCase, SmbServer, file_sha256,  # noqa: E402
                     raw_request, request_head, sha256_hex)

PATH = "/api/files/upload/chunked"
FLOW_PERMANENT = {404, 413, 415, 500, 501}  # flow.js 2.14's permanentErrors
RESUMABLE_PERMANENT = {400, 404, 415, 500, 501}
FIELDS = ("ChunkNumber", "ChunkSize", "CurrentChunkSize", "TotalSize", "Identifier", "Filename",
          "RelativePath", "TotalChunks")


def cut(size, chunk, force=False):
    """The chunks (start, end) flow.js and resumable.js cut size bytes into."""
    n = max(-(-size // chunk) if force else size // chunk, 1)
    out = []
    for i in range(n):
        start, end = i * chunk, min(size, (i + 1) * chunk)
        if not force and size - end < chunk:
            end = size
        out.append((start, end))
    return out


def chunk_fields(data, n, chunk, ident, name="f.bin", rel=None, force=False, prefix="flow",
                 **override):
    """The fields the libraries send for chunk n (1-based) of data."""
    chunks = cut(len(data), chunk, force)
    start, end = chunks[n - 1]
    values = {"ChunkNumber": n, "ChunkSize": chunk, "CurrentChunkSize": end - start,
              "TotalSize": len(data), "Identifier": ident, "Filename": name,
              "RelativePath": rel if rel is not None else name, "TotalChunks": len(chunks)}
    values.update(override)
    return [(prefix + k, str(v)) for k, v in values.items() if v is not None]


def form(fields, file_bytes=None, file_first=False, file_name="blob"):
    """A multipart/form-data body: fields in order, and the chunk in `file`."""
    boundary = "----cu" + uuid.uuid4().hex
    parts = []
    for k, v in fields:
        parts.append(b'--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
                     % (boundary.encode(), k.encode(), v.encode()))
    if file_bytes is not None:
        f = (b'--%s\r\nContent-Disposition: form-data; name="file"; filename="%s"\r\n'
             b'Content-Type: application/octet-stream\r\n\r\n' % (boundary.encode(), file_name.encode())
             + bytes(file_bytes) + b"\r\n")
        parts.insert(0, f) if file_first else parts.append(f)
    return b"".join(parts) + b"--%s--\r\n" % boundary.encode(), "multipart/form-data; boundary=" + boundary


class FlowChunksTest(ServerTestCase):

    def setUp(self):
        self.srv = self.start_server()

    # -- helpers
    def post(self, fields, data, file_first=False, headers=None, query=None):
        body, ctype = form(fields, data, file_first)
        h = {"X-API-Key": API_KEY, "Content-Type": ctype}
        h.update(headers or {})
        h = {k: v for k, v in h.items() if v is not None}
        path = PATH + ("?" + urllib.parse.urlencode(query) if query else "")
        r, _ = raw_request(self.srv.port, "POST", path, h, body)
        return r

    def chunk_test(self, fields, headers=None):
        h = {"X-API-Key": API_KEY} if headers is None else headers
        return self.srv.request("GET", PATH + "?" + urllib.parse.urlencode(fields), None, h)

    def post_chunk(self, data, n, chunk, ident, **kw):
        start, end = cut(len(data), chunk, kw.get("force", False))[n - 1]
        return self.post(chunk_fields(data, n, chunk, ident, **kw), data[start:end])

    def assertStoredFile(self, reply, data):
        path = self.srv.resolve(reply["final_path"])
        self.assertEqual(os.path.getsize(path), len(data))
        self.assertEqual(file_sha256(path), sha256_hex(data))

    # -- the whole exchange
    def test_any_order_test_then_complete(self):
        data = os.urandom(3 * CHUNK + CHUNK // 2)  # the default cut: 3 chunks, the last 1.5 MiB
        ident = "%d-videosclipbin" % len(data)
        kw = {"name": "clip.bin", "rel": "videos/clip.bin"}
        self.assertEqual(self.chunk_test(chunk_fields(data, 1, CHUNK, ident, **kw)).status, 204)
        j = self.assertOk(self.post_chunk(data, 3, CHUNK, ident, **kw))
        self.assertEqual(j["status"], "uploaded")
        self.assertEqual(j["chunk_number"], 3)
        self.assertEqual((j["uploaded_chunks"], j["total_chunks"]), (1, 3))
        self.assertEqual(j["checksum_sha256"], sha256_hex(data[2 * CHUNK:]))
        self.assertEqual(j["identifier"], ident)
        fid = j["file_id"]
        self.assertOk(self.post_chunk(data, 1, CHUNK, ident, **kw))
        # The chunk test: 200 with the chunk when it is stored, 204 when not.
        r = self.chunk_test(chunk_fields(data, 1, CHUNK, ident, **kw))
        self.assertEqual(self.assertOk(r)["checksum_sha256"], sha256_hex(data[:CHUNK]))
        r = self.chunk_test(chunk_fields(data, 2, CHUNK, ident, **kw))
        self.assertEqual((r.status, r.body), (204, b""))
        # The last missing chunk completes the file and answers with it.
        j = self.assertOk(self.post_chunk(data, 2, CHUNK, ident, **kw))
        self.assertEqual(j["file_id"], fid)
        self.assertEqual(j["status"], "complete")
        self.assertEqual(j["filename"], "clip.bin")
        self.assertEqual(j["total_size"], len(data))
        self.assertEqual(j["storage_backend"], "local")
        self.assertRfc3339(j["completed_at"])
        self.assertEqual((j["uploaded_chunks"], j["total_chunks"]), (3, 3))
        self.assertIn("/videos/", j["final_path"])
        self.assertStoredFile(j, data)
        st = self.assertOk(self.srv.status(fid))
        self.assertEqual((st["status"], st["final_path"]), ("complete", j["final_path"]))
        # A completed identifier is free again: the same fields now start a new upload.
        self.assertEqual(self.chunk_test(chunk_fields(data, 1, CHUNK, ident, **kw)).status, 204)

    def test_resumable_force_chunk_size_fields_in_query_too(self):
        data = os.urandom(3 * CHUNK + 1000)  # forceChunkSize: 4 chunks, the last 1000 bytes
        ident = "r-%s" % uuid.uuid4().hex
        replies = []
        for n in (4, 2, 3, 1):
            fields = chunk_fields(data, n, CHUNK, ident, force=True, prefix="resumable",
                                  Type="application/x-test")
            start, end = cut(len(data), CHUNK, True)[n - 1]
            # resumable.js sends every field in the form and in the query string.
            replies.append(self.assertOk(self.post(fields, data[start:end], query=fields)))
        self.assertEqual([j["status"] for j in replies], ["uploaded"] * 3 + ["complete"])
        self.assertEqual(replies[-1]["total_chunks"], 4)
        self.assertStoredFile(replies[-1], data)

    def test_octet_body_with_fields_in_query(self):
        data = os.urandom(2 * CHUNK + 5)
        ident = "octet-1"
        replies = []
        for n in (1, 2):
            fields = chunk_fields(data, n, CHUNK, ident)
            start, end = cut(len(data), CHUNK)[n - 1]
            q = PATH + "?" + urllib.parse.urlencode(fields)
            h = {"X-API-Key": API_KEY, "Content-Type": "application/octet-stream"}
            if n == 2:  # a Content-Length that is not the chunk's: refused before the body
                r, _ = raw_request(self.srv.port, "POST", q, h, data[start:end - 1])
                self.assertError(r, 400, "content-length")
                r, _ = raw_request(self.srv.port, "POST", q, h, data[start:end] + b"x")
                self.assertError(r, 413, "content-length")
            r, _ = raw_request(self.srv.port, "POST", q, h, data[start:end])
            replies.append(self.assertOk(r))
        self.assertEqual(replies[-1]["status"], "complete")
        self.assertStoredFile(replies[-1], data)
        # No chunk fields anywhere and not a form: 415.
        r, _ = raw_request(self.srv.port, "POST", PATH, {"X-API-Key": API_KEY, "Content-Type": "text/plain"}, b"hello")
        self.assertError(r, 415, "multipart/form-data")

    def test_empty_file(self):
        j = self.assertOk(self.post(chunk_fields(b"", 1, CHUNK, "0-empty", name="empty.txt"), b""))
        self.assertEqual((j["status"], j["total_size"], j["total_chunks"]), ("complete", 0, 1))
        self.assertStoredFile(j, b"")

    # -- first chunk rules
    def test_first_chunk_fixes_the_file(self):
        data = os.urandom(3 * CHUNK)
        ident = "fixed-%s" % uuid.uuid4().hex
        self.assertOk(self.post_chunk(data, 2, CHUNK, ident))
        other = data + b"more"
        for fields, what in ((chunk_fields(other, 1, CHUNK, ident), "totalsize"),
                             (chunk_fields(data, 1, CHUNK // 2, ident), "chunksize"),
                             (chunk_fields(data + os.urandom(CHUNK // 2), 1, CHUNK, ident, force=True),
                              "totalsize")):
            self.assertError(self.chunk_test(fields), 400, what)
            r = self.post(fields, data[:int(dict(fields)["flowCurrentChunkSize"])])
            j = self.assertError(r, 400, what)
            self.assertIn("first chunk", j["error"])
        # The upload is intact: the right chunks still complete it.
        self.assertOk(self.post_chunk(data, 1, CHUNK, ident))
        j = self.assertOk(self.post_chunk(data, 3, CHUNK, ident))
        self.assertEqual(j["status"], "complete")
        self.assertStoredFile(j, data)

    def test_stored_chunk_is_not_rewritten(self):
        data = os.urandom(2 * CHUNK)
        ident = "once-%s" % uuid.uuid4().hex
        first = self.assertOk(self.post_chunk(data, 1, CHUNK, ident))
        # The same chunk again with other bytes (a retry after a lost reply): 200, untouched.
        r = self.post(chunk_fields(data, 1, CHUNK, ident), os.urandom(CHUNK))
        again = self.assertOk(r)
        self.assertEqual(again["checksum_sha256"], first["checksum_sha256"])
        self.assertEqual(again["uploaded_chunks"], 1)
        j = self.assertOk(self.post_chunk(data, 2, CHUNK, ident))
        self.assertStoredFile(j, data)
        self.assertEqual(self.srv.log_text().count("stored %d bytes at 0" % CHUNK), 1)

    def test_simultaneous_first_chunks_make_one_upload(self):
        data = os.urandom(8 * CHUNK + 777)
        ident = "together-%s" % uuid.uuid4().hex
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as ex:
            replies = list(ex.map(lambda n: self.post_chunk(data, n, CHUNK, ident), range(1, 9)))
        js = [self.assertOk(r) for r in replies]
        self.assertEqual(len({j["file_id"] for j in js}), 1, js)
        done = [j for j in js if j["status"] == "complete"]
        self.assertGreaterEqual(len(done), 1)
        self.assertStoredFile(done[0], data)
        self.assertEqual(self.srv.log_text().count("created (flow)"), 1)

    # -- refusals
    def test_fields_must_come_before_the_file(self):
        data = os.urandom(1000)
        ident = "late-fields"
        j = self.assertError(self.post(chunk_fields(data, 1, CHUNK, ident), data, file_first=True), 400)
        self.assertIn("before", j["error"])
        self.assertEqual(self.chunk_test(chunk_fields(data, 1, CHUNK, ident)).status, 204)
        self.assertError(self.post(chunk_fields(data, 1, CHUNK, ident), None), 400, "part named")

    def test_bad_parameters(self):
        data = os.urandom(3 * CHUNK)
        good = dict(chunk_fields(data, 1, CHUNK, "p-1"))
        cases = [
            ({"flowChunkNumber": None}, "flowchunknumber"),
            ({"flowChunkNumber": "x1"}, "flowchunknumber"),
            ({"flowChunkNumber": "-1"}, "flowchunknumber"),
            ({"flowChunkNumber": "0"}, "flowchunknumber"),
            ({"flowChunkNumber": "4"}, "flowchunknumber"),
            ({"flowChunkNumber": "1" * 19}, "flowchunknumber"),
            ({"flowChunkSize": str(CHUNK + 1)}, "flowchunksize"),  # above CHUNK_SIZE_MB
            ({"flowChunkSize": "0"}, "flowchunksize"),
            ({"flowTotalSize": None}, "flowtotalsize"),
            ({"flowTotalChunks": "5"}, "flowtotalchunks"),
            ({"flowCurrentChunkSize": str(CHUNK - 1)}, "flowcurrentchunksize"),
            ({"flowIdentifier": ""}, "flowidentifier"),
            ({"flowIdentifier": "has space"}, "flowidentifier"),
            ({"flowIdentifier": "quote\"d"}, "flowidentifier"),
            ({"flowIdentifier": "caf\u00e9"}, "flowidentifier"),
            ({"flowIdentifier": "x" * 1057}, "flowidentifier"),
            ({"flowFilename": None, "flowRelativePath": None}, "flowfilename"),
            ({"resumableChunkNumber": "1"}, "not both"),
        ]
        for change, word in cases:
            fields = dict(good)
            for k, v in change.items():
                if v is None:
                    fields.pop(k, None)
                else:
                    fields[k] = v
            self.assertError(self.chunk_test(fields), 400, word)
            if word in ("flowidentifier", "flowchunksize"):
                self.assertError(self.post(list(fields.items()), data[:CHUNK]), 400, word)
        # The longest identifier the libraries can make is taken.
        self.assertEqual(self.chunk_test(dict(good, flowIdentifier="x" * 1056)).status, 204)

    def test_names_follow_the_filename_policy(self):
        data = os.urandom(100)
        for rel in ("../escape.bin", "/etc/escape.bin", "a/../../escape.bin", "a//b.bin"):
            r = self.post(chunk_fields(data, 1, CHUNK, "n-%s" % uuid.uuid4().hex, rel=rel), data)
            self.assertError(r, 400)
        self.assertFalse(os.path.exists(os.path.join(self.srv.tmp, "escape.bin")))
        self.assertFalse(os.path.exists(os.path.join(self.srv.storage, "escape.bin")))

    def test_chunk_body_must_be_its_size(self):
        data = os.urandom(2 * CHUNK)
        ident = "size-%s" % uuid.uuid4().hex
        fields = chunk_fields(data, 1, CHUNK, ident)
        self.assertError(self.post(fields, data[:CHUNK] + b"x"), 413, "chunk 1")
        self.assertError(self.post(fields, data[:CHUNK - 1]), 400, "chunk 1")
        self.assertEqual(self.chunk_test(fields).status, 204)
        self.assertOk(self.post(fields, data[:CHUNK]))
        j = self.assertOk(self.post_chunk(data, 2, CHUNK, ident))
        self.assertStoredFile(j, data)

    def test_storage_error_is_retryable(self):
        data = os.urandom(2 * CHUNK)
        ident = "disk-%s" % uuid.uuid4().hex
        fid = self.assertOk(self.post_chunk(data, 1, CHUNK, ident))["file_id"]
        staged = os.path.join(self.srv.staging, fid + ".data")
        self.assertTrue(os.path.isfile(staged))
        os.rename(staged, staged + ".aside")
        os.mkdir(staged)  # the staging file cannot be opened for a while
        r = self.post_chunk(data, 2, CHUNK, ident)
        self.assertError(r, 503, "storage error")
        self.assertNotIn(r.status, FLOW_PERMANENT | RESUMABLE_PERMANENT)
        os.rmdir(staged)
        os.rename(staged + ".aside", staged)
        j = self.assertOk(self.post_chunk(data, 2, CHUNK, ident))
        self.assertEqual(j["status"], "complete")
        self.assertStoredFile(j, data)

    def start_slow_chunk(self, fields, data):
        """A POST of the chunk whose body stops halfway (the slot's claim stays held); returns
        the connection and the rest of its body."""
        body, ctype = form(fields, data)
        c = RawConn(self.srv.port, timeout=30)
        c.send(request_head("POST", PATH, {"X-API-Key": API_KEY, "Content-Type": ctype,
                                           "Content-Length": str(len(body))}))
        half = len(body) // 2
        c.send(body[:half])
        time.sleep(0.3)  # the server has claimed the slot and is writing
        return c, body[half:]

    def test_chunk_being_written_is_waited_for(self):
        data = os.urandom(2 * CHUNK)
        ident = "busy-%s" % uuid.uuid4().hex
        fields = chunk_fields(data, 1, CHUNK, ident)
        slow, rest = self.start_slow_chunk(fields, data[:CHUNK])
        try:
            # The writer finishes within the wait: the second request finds the chunk stored.
            with concurrent.futures.ThreadPoolExecutor(max_workers=1) as ex:
                second = ex.submit(self.post, fields, os.urandom(CHUNK))
                time.sleep(0.5)
                slow.send(rest)
                first = self.assertOk(slow.read_response(30))
                again = self.assertOk(second.result(30))
        finally:
            slow.close()
        self.assertEqual(again["checksum_sha256"], first["checksum_sha256"])
        self.assertEqual(first["checksum_sha256"], sha256_hex(data[:CHUNK]))
        # The writer stays stalled: after the wait, 409, which flow.js may retry.
        fields = chunk_fields(data, 2, CHUNK, ident)
        slow, rest = self.start_slow_chunk(fields, data[CHUNK:])
        try:
            t0 = time.time()
            r = self.post(fields, data[CHUNK:])
            self.assertGreaterEqual(time.time() - t0, 1.9)
            self.assertError(r, 409, "another request")
            self.assertNotIn(r.status, FLOW_PERMANENT | RESUMABLE_PERMANENT)
            slow.send(rest)
            j = self.assertOk(slow.read_response(30))
        finally:
            slow.close()
        self.assertEqual(j["status"], "complete")
        self.assertStoredFile(j, data)

    def test_api_key_required(self):
        fields = chunk_fields(b"abc", 1, CHUNK, "auth-1")
        self.assertError(self.chunk_test(fields, headers={}), 401)
        self.assertError(self.chunk_test(fields, headers={"X-API-Key": "wrong"}), 401)
        self.assertError(self.post(fields, b"abc", headers={"X-API-Key": "wrong"}), 401)
        j = self.assertOk(self.post(fields, b"abc", headers={"X-API-Key": None, "Authorization": "Bearer " + API_KEY}))
        self.assertEqual(j["status"], "complete")


class FlowChunksLimitsTest(ServerTestCase):

    def test_over_max_file_size_is_permanent(self):
        srv = self.start_server(env={"MAX_FILE_SIZE": "1000000"})
        data = os.urandom(1000001)
        body, ctype = form(chunk_fields(data, 1, CHUNK, "big-1"), data)
        r, _ = raw_request(srv.port, "POST", PATH, {"X-API-Key": API_KEY, "Content-Type": ctype}, body)
        self.assertError(r, 413)
        self.assertIn(r.status, FLOW_PERMANENT)

    def test_expired_upload(self):
        srv = self.start_server(env={"UPLOAD_TTL_HOURS": "0.0004", "CLEANUP_INTERVAL_SECONDS": "3600"})
        data = os.urandom(2 * CHUNK)

        def post(n):
            start, end = cut(len(data), CHUNK)[n - 1]
            body, ctype = form(chunk_fields(data, n, CHUNK, "exp-1"), data[start:end])
            return raw_request(srv.port, "POST", PATH, {"X-API-Key": API_KEY, "Content-Type": ctype}, body)[0]

        self.assertOk(post(1))
        time.sleep(1.8)
        # Expired: permanent for both libraries, and the chunk test has nothing to offer.
        r = post(2)
        self.assertError(r, 404, "expired")
        self.assertTrue(r.status in FLOW_PERMANENT and r.status in RESUMABLE_PERMANENT)
        q = urllib.parse.urlencode(chunk_fields(data, 1, CHUNK, "exp-1"))
        self.assertEqual(srv.request("GET", PATH + "?" + q, None, {"X-API-Key": API_KEY}).status, 204)


class FlowChunksSmbTest(ServerTestCase):

    def test_storage_failure_is_retryable_then_completes(self):
        smb = SmbServer()
        self.addCleanup(smb.destroy)
        smb.start()
        srv = self.start_server(env=smb.server_env(SMB_WORKERS="0"))
        data = os.urandom(2 * CHUNK)

        def post(n):
            start, end = cut(len(data), CHUNK)[n - 1]
            body, ctype = form(chunk_fields(data, n, CHUNK, "nas-1"), data[start:end])
            return raw_request(srv.port, "POST", PATH, {"X-API-Key": API_KEY, "Content-Type": ctype},
                               body, timeout=60)[0]

        self.assertOk(post(1))
        smb.kill()
        r = post(2)
        # The share is gone for now: an error the libraries retry, never one they give up on.
        j = self.assertError(r, (502, 503))
        self.assertNotIn(r.status, FLOW_PERMANENT | RESUMABLE_PERMANENT, j)
        smb.start()
        for _ in range(20):
            r = post(2)
            if r.status == 200:
                break
            self.assertNotIn(r.status, FLOW_PERMANENT | RESUMABLE_PERMANENT, r)
            time.sleep(0.25)
        j = self.assertOk(r)
        self.assertEqual(j["status"], "complete")
        with open(smb.url_to_path(j["final_path"]), "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), sha256_hex(data))


if __name__ == "__main__":
    import unittest
    unittest.main()
