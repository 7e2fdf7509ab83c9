"""tus 1.0.0 at /files/ over raw HTTP, on local storage: every status the specification (and
this server's limits) give, and every header, checked on the wire; the bytes checked in the
stored file. tus-js-client itself is driven in test_tus_client.py.

Errors are this server's JSON {"error", "status"} (tusd answers text; tus clients read only
the status)."""

import base64
import calendar
import email.utils
import hashlib
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (API_KEY, UUID_RE, RawConn, ServerTestCase, file_sha256, raw_request,  # noqa: E402
                     request_head, sha256_hex)
from test_webhook import Receiver  # noqa: E402

TUS = {"Tus-Resumable": "1.0.0"}
CHUNK_CT = {"Content-Type": "application/offset+octet-stream"}
EXTENSIONS = {"creation", "creation-with-upload", "creation-defer-length", "termination",
              "checksum", "expiration", "concatenation"}


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def metadata(**pairs):
    return ",".join("%s %s" % (k, b64(v)) if v is not None else k for k, v in pairs.items())


def digest_header(alg, data):
    return "%s %s" % (alg, base64.b64encode(hashlib.new(alg, data).digest()).decode())


def data_of(n, seed=1):
    return bytes((i * 31 + seed * 7 + (i >> 9)) & 0xFF for i in range(n))


class TusCase(ServerTestCase):
    """Helpers: requests with the tus and API key headers, and the upload's state."""

    env = {}

    def setUp(self):
        self.srv = self.start_server(env=self.env)

    def h(self, extra=None, key=True):
        h = dict(TUS)
        if key:
            h["X-API-Key"] = API_KEY
        h.update(extra or {})
        return h

    def create(self, length=None, meta=None, extra=None, body=None, expect=201):
        hdrs = {}
        if length is not None:
            hdrs["Upload-Length"] = str(length)
        if meta is not None:
            hdrs["Upload-Metadata"] = meta
        if body is not None:
            hdrs.update(CHUNK_CT)
        hdrs.update(extra or {})
        r = self.srv.request("POST", "/files/", body if body is not None else b"", self.h(hdrs))
        self.assertEqual(r.status, expect, r)
        if expect == 201:
            loc = r.headers.get("location", "")
            m = re.match(r"^http://127\.0\.0\.1:%d/files/([0-9a-f-]{36})$" % self.srv.port, loc)
            self.assertTrue(m, "Location %r" % loc)
            self.assertRegex(m.group(1), UUID_RE)
            self.assertEqual(r.headers.get("tus-resumable"), "1.0.0")
            return m.group(1), r
        return None, r

    def path(self, fid):
        return "/files/" + fid

    def patch(self, fid, offset, data, extra=None, key=True):
        hdrs = dict(CHUNK_CT)
        hdrs["Upload-Offset"] = str(offset)
        hdrs.update(extra or {})
        return self.srv.request("PATCH", self.path(fid), bytes(data), self.h(hdrs, key))

    def head(self, fid, extra=None):
        return self.srv.request("HEAD", self.path(fid), None, self.h(extra))

    def offset(self, fid):
        r = self.head(fid)
        self.assertEqual(r.status, 200, r)
        return int(r.headers["upload-offset"])

    def status(self, fid):
        return self.assertOk(self.srv.status(fid))

    def final_bytes(self, fid):
        j = self.status(fid)
        self.assertEqual(j["status"], "complete", j)
        with open(self.srv.resolve(j["final_path"]), "rb") as f:
            return f.read(), j

    def assertTusError(self, r, status, contains=None):
        if r.status != status:
            self.fail("expected %d, got %r" % (status, r))
        self.assertEqual(r.headers.get("tus-resumable"), "1.0.0", r.headers)
        return self.assertError(r, status, contains)

    def assertExpires(self, r, present=True):
        v = r.headers.get("upload-expires")
        if not present:
            self.assertIsNone(v, r.headers)
            return None
        self.assertIsNotNone(v, r.headers)
        self.assertRegex(v, r"^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$")
        t = calendar.timegm(email.utils.parsedate(v))
        self.assertGreater(t, time.time())
        return t


class TusProtocolTest(TusCase):
    env = {"MAX_FILE_SIZE": "100000000"}

    def test_options_needs_no_credentials_and_says_what_is_there(self):
        for path in ("/files/", "/files/8d5f743c-647e-40f8-9333-ce3204b1c02d"):
            r = self.srv.request("OPTIONS", path)
            self.assertEqual(r.status, 204, r)
            self.assertEqual(r.headers.get("tus-version"), "1.0.0")
            self.assertEqual(r.headers.get("tus-resumable"), "1.0.0")
            self.assertEqual(set(r.headers.get("tus-extension", "").split(",")), EXTENSIONS)
            self.assertEqual(r.headers.get("tus-max-size"), "100000000")
            self.assertEqual(set(r.headers.get("tus-checksum-algorithm", "").split(",")),
                             {"sha1", "md5", "sha256"})
        self.assertEqual(self.srv.request("OPTIONS", "/nowhere").status, 404)

    def test_tus_resumable_other_than_1_0_0_is_412(self):
        for hdrs in ({}, {"Tus-Resumable": "0.2.2"}, {"Tus-Resumable": "1.0"}):
            h = {"X-API-Key": API_KEY, "Upload-Length": "5"}
            h.update(hdrs)
            r = self.srv.request("POST", "/files/", b"", h)
            self.assertTusError(r, 412, "1.0.0")
            self.assertEqual(r.headers.get("tus-version"), "1.0.0")
        fid, _ = self.create(5)
        # Before credentials and before the upload is looked up; PATCH and DELETE alike.
        r = self.srv.request("PATCH", self.path(fid), b"x", dict(CHUNK_CT, **{"Upload-Offset": "0"}))
        self.assertTusError(r, 412)
        r = self.srv.request("DELETE", self.path(fid), None, {"X-API-Key": API_KEY, "Tus-Resumable": "2"})
        self.assertTusError(r, 412)
        # A HEAD (a browser looking) may leave it out; a wrong one is still refused.
        r = self.srv.request("HEAD", self.path(fid), None, {"X-API-Key": API_KEY})
        self.assertEqual(r.status, 200, r)
        r = self.srv.request("HEAD", self.path(fid), None, {"X-API-Key": API_KEY, "Tus-Resumable": "9"})
        self.assertEqual(r.status, 412)
        self.assertEqual(self.offset(fid), 0)

    def test_credentials(self):
        r = self.srv.request("POST", "/files/", b"", dict(TUS, **{"Upload-Length": "5"}))
        self.assertTusError(r, 401)
        r = self.srv.request("POST", "/files/", b"", dict(TUS, **{"Upload-Length": "5", "X-API-Key": "nope"}))
        self.assertTusError(r, 401)
        r = self.srv.request("POST", "/files/", b"", dict(TUS, **{"Upload-Length": "5",
                                                                 "Authorization": "Bearer " + API_KEY}))
        self.assertEqual(r.status, 201, r)
        fid = r.headers["location"].rsplit("/", 1)[1]
        for method in ("HEAD", "PATCH", "DELETE"):
            r = self.srv.request(method, self.path(fid), b"" if method == "PATCH" else None,
                                 dict(TUS, **CHUNK_CT, **{"Upload-Offset": "0"}))
            self.assertEqual(r.status, 401, "%s %r" % (method, r))
        r = self.patch(fid, 0, b"hello", {"Authorization": "Bearer " + API_KEY}, key=False)
        self.assertEqual(r.status, 204, r)

    def test_create_head_patch_complete(self):
        data = data_of(300000)
        meta = metadata(filename="videos/2024/clip.bin", filetype="video/mp4", note="x y")
        fid, r = self.create(len(data), meta)
        self.assertExpires(r)
        h = self.head(fid)
        self.assertEqual(h.status, 200, h)
        self.assertEqual(h.headers.get("upload-offset"), "0")
        self.assertEqual(h.headers.get("upload-length"), str(len(data)))
        self.assertEqual(h.headers.get("upload-metadata"), meta)
        self.assertEqual(h.headers.get("cache-control"), "no-store")
        self.assertNotIn("upload-defer-length", h.headers)
        self.assertNotIn("upload-concat", h.headers)
        self.assertEqual(h.body, b"")
        self.assertExpires(h)
        # The same id is an upload of the seed's status too.
        j = self.status(fid)
        self.assertEqual((j["file_id"], j["status"], j["filename"], j["uploaded_bytes"]),
                         (fid, "pending", "clip.bin", 0))
        at = 0
        for piece in (1, 99999, 150000):
            r = self.patch(fid, at, data[at:at + piece])
            self.assertEqual(r.status, 204, r)
            at += piece
            self.assertEqual(r.headers.get("upload-offset"), str(at))
            self.assertEqual(r.headers.get("tus-resumable"), "1.0.0")
            self.assertExpires(r)
            self.assertEqual(self.offset(fid), at)
        self.assertEqual(self.status(fid)["progress_percent"], round(at * 100 / len(data), 2))
        r = self.patch(fid, at, data[at:])
        self.assertEqual(r.status, 204, r)
        self.assertEqual(r.headers.get("upload-offset"), str(len(data)))
        self.assertExpires(r, present=False)
        got, j = self.final_bytes(fid)
        self.assertTrue(got == data, "stored file differs")
        self.assertEqual(j["progress_percent"], 100.0)
        self.assertTrue(j["final_path"].endswith("/files/videos/2024/%s_clip.bin" % fid), j)
        h = self.head(fid)
        self.assertEqual((h.headers["upload-offset"], h.headers["upload-length"]), (str(len(data)),) * 2)
        self.assertExpires(h, present=False)
        # The lost answer of the last PATCH, asked again: it is all there.
        r = self.patch(fid, len(data), b"")
        self.assertEqual(r.status, 204, r)
        self.assertEqual(r.headers.get("upload-offset"), str(len(data)))
        self.assertTusError(self.patch(fid, len(data), b"x"), 409)

    def test_patch_refusals(self):
        fid, _ = self.create(100)
        self.assertEqual(self.patch(fid, 0, b"0123456789").status, 204)
        r = self.srv.request("PATCH", self.path(fid), b"abc",
                             self.h({"Upload-Offset": "10", "Content-Type": "application/octet-stream"}))
        self.assertTusError(r, 415, "application/offset+octet-stream")
        r = self.srv.request("PATCH", self.path(fid), b"abc", self.h({"Upload-Offset": "10"}))
        self.assertTusError(r, 415)
        for bad in (None, "", "-1", "+10", "1e1", "ten"):
            hdrs = dict(CHUNK_CT)
            if bad is not None:
                hdrs["Upload-Offset"] = bad
            r = self.srv.request("PATCH", self.path(fid), b"abc", self.h(hdrs))
            self.assertTusError(r, 400, "Upload-Offset")
        for wrong in (0, 9, 11, 1000):
            self.assertTusError(self.patch(fid, wrong, b"abc"), 409, "offset 10")
        r, _ = raw_request(self.srv.port, "PATCH", self.path(fid),
                           self.h(dict(CHUNK_CT, **{"Upload-Offset": "10"})), b"x" * 91)
        self.assertTusError(r, 413)
        self.assertTusError(self.patch("8d5f743c-647e-40f8-9333-ce3204b1c02d", 0, b"x"), 404)
        self.assertTusError(self.patch("not-a-uuid", 0, b"x"), 404)
        self.assertEqual(self.head("8d5f743c-647e-40f8-9333-ce3204b1c02d").status, 404)
        self.assertEqual(self.offset(fid), 10)
        r = self.srv.request("GET", self.path(fid), None, self.h())
        self.assertTusError(r, 405)
        self.assertEqual(self.srv.request("PUT", "/files/", b"", self.h()).status, 405)

    def test_checksums(self):
        data = data_of(3000, 2)
        fid, _ = self.create(len(data))
        at = 0
        for alg in ("sha1", "md5", "sha256"):
            piece = data[at:at + 1000]
            r = self.patch(fid, at, piece, {"Upload-Checksum": digest_header(alg, piece)})
            self.assertEqual(r.status, 204, "%s %r" % (alg, r))
            at += 1000
            if at == 2000:
                break
        piece = data[at:]
        r = self.patch(fid, at, piece, {"Upload-Checksum": digest_header("sha1", b"other")})
        self.assertTusError(r, 460, "checksum mismatch")
        self.assertEqual(self.offset(fid), at, "a chunk that failed its checksum was kept")
        r = self.patch(fid, at, piece, {"Upload-Checksum": "crc32 AAAAAA=="})
        self.assertTusError(r, 400, "unsupported")
        r = self.patch(fid, at, piece, {"Upload-Checksum": "sha256 qvTGHdzF6KLavt4PO0gs2a6pQ00="})
        self.assertTusError(r, 400)
        self.assertEqual(self.offset(fid), at)
        r = self.patch(fid, at, piece, {"Upload-Checksum": digest_header("SHA256".lower(), piece)})
        self.assertEqual(r.status, 204, r)
        self.assertTrue(self.final_bytes(fid)[0] == data)

    def test_creation_with_upload(self):
        data = data_of(5000, 3)
        fid, r = self.create(len(data), body=data[:2000])
        self.assertEqual(r.headers.get("upload-offset"), "2000")
        self.assertExpires(r)
        self.assertEqual(self.offset(fid), 2000)
        self.assertEqual(self.patch(fid, 2000, data[2000:]).status, 204)
        self.assertTrue(self.final_bytes(fid)[0] == data)
        # The whole file in the POST: complete at once.
        fid, r = self.create(len(data), body=data, extra={"Upload-Checksum": digest_header("md5", data)})
        self.assertEqual(r.headers.get("upload-offset"), str(len(data)))
        self.assertTrue(self.final_bytes(fid)[0] == data)
        # A bad checksum: the upload exists (its Location says where), without those bytes.
        r = self.srv.request("POST", "/files/", data, self.h(dict(CHUNK_CT, **{
            "Upload-Length": str(len(data)), "Upload-Checksum": digest_header("md5", b"x")})))
        self.assertTusError(r, 460)
        fid = r.headers["location"].rsplit("/", 1)[1]
        self.assertEqual(self.offset(fid), 0)
        # A body of another type is not a chunk: the upload is created empty.
        r = self.srv.request("POST", "/files/", b"hello", self.h({"Upload-Length": "5",
                                                                  "Content-Type": "text/plain"}))
        self.assertEqual(r.status, 201, r)
        self.assertEqual(self.offset(r.headers["location"].rsplit("/", 1)[1]), 0)

    def test_empty_upload_completes_at_creation(self):
        fid, _ = self.create(0, metadata(filename="empty.txt"))
        got, j = self.final_bytes(fid)
        self.assertEqual(got, b"")
        self.assertEqual(self.head(fid).headers.get("upload-offset"), "0")

    def test_deferred_length(self):
        data = data_of(4000, 4)
        fid, r = self.create(extra={"Upload-Defer-Length": "1"})
        h = self.head(fid)
        self.assertEqual(h.headers.get("upload-defer-length"), "1")
        self.assertNotIn("upload-length", h.headers)
        self.assertEqual(self.patch(fid, 0, data[:1500]).status, 204)
        self.assertTusError(self.patch(fid, 1500, data[1500:2000], {"Upload-Length": "1000"}), 400)
        self.assertTusError(self.patch(fid, 1500, b"", {"Upload-Length": "x"}), 400)
        r = self.patch(fid, 1500, data[1500:2500], {"Upload-Length": str(len(data))})
        self.assertEqual(r.status, 204, r)
        h = self.head(fid)
        self.assertEqual(h.headers.get("upload-length"), str(len(data)))
        self.assertNotIn("upload-defer-length", h.headers)
        self.assertTusError(self.patch(fid, 2500, data[2500:], {"Upload-Length": "5000"}), 400)
        self.assertEqual(self.patch(fid, 2500, data[2500:], {"Upload-Length": str(len(data))}).status, 204)
        self.assertTrue(self.final_bytes(fid)[0] == data)
        # A length declared by an empty PATCH that matches what is there completes it.
        fid, _ = self.create(extra={"Upload-Defer-Length": "1"})
        self.assertEqual(self.patch(fid, 0, b"abc").status, 204)
        self.assertEqual(self.patch(fid, 3, b"", {"Upload-Length": "3"}).status, 204)
        self.assertEqual(self.final_bytes(fid)[0], b"abc")
        for hdrs in ({}, {"Upload-Defer-Length": "2"}, {"Upload-Length": "5", "Upload-Defer-Length": "1"},
                     {"Upload-Length": "-5"}, {"Upload-Length": "5 "}, {"Upload-Length": "0x5"}):
            r = self.srv.request("POST", "/files/", b"", self.h(hdrs))
            self.assertTusError(r, 400)

    def test_metadata_rules(self):
        fid, _ = self.create(1)
        self.assertEqual(self.patch(fid, 0, b"z").status, 204)
        self.assertTrue(self.final_bytes(fid)[1]["final_path"].endswith("%s_upload" % fid))
        fid, _ = self.create(1, metadata(name="a/b.txt", type="text/plain"))
        self.assertEqual(self.status(fid)["filename"], "b.txt")
        for meta in ("filename !!!", "filename YQ,filename Yg", "filename a b", metadata(filename="../x"),
                     metadata(filename="a/../../x"), metadata(filename="x\x00y"), metadata(filename="/abs"),
                     metadata(filename="ok", filetype="text/plain\r\nX: y"), metadata(filename="ok", filetype="nonsense"),
                     metadata(filename="ok", webhook_url="ftp://example.com/"), "k" * 20000):
            r = self.srv.request("POST", "/files/", b"", self.h({"Upload-Length": "1", "Upload-Metadata": meta}))
            self.assertTusError(r, 400)

    def test_size_limit(self):
        srv = self.start_server(env={"MAX_FILE_SIZE": "1000"})
        r = srv.request("POST", "/files/", b"", self.h({"Upload-Length": "1001"}))
        self.assertTusError(r, 413)
        r = srv.request("POST", "/files/", b"", self.h({"Upload-Length": "1000"}))
        self.assertEqual(r.status, 201)
        r = srv.request("POST", "/files/", b"", self.h({"Upload-Defer-Length": "1"}))
        fid = r.headers["location"].rsplit("/", 1)[1]
        r, _ = raw_request(srv.port, "PATCH", self.path(fid), self.h(dict(CHUNK_CT, **{"Upload-Offset": "0"})),
                           b"x" * 1001)
        self.assertTusError(r, 413)
        r = srv.request("PATCH", self.path(fid), b"", self.h(dict(CHUNK_CT, **{"Upload-Offset": "0",
                                                                            "Upload-Length": "1001"})))
        self.assertTusError(r, 413)
        r = srv.request("OPTIONS", "/files/")
        self.assertEqual(r.headers.get("tus-max-size"), "1000")

    def test_termination(self):
        fid, _ = self.create(100)
        self.assertEqual(self.patch(fid, 0, b"x" * 10).status, 204)
        staging = os.path.join(self.srv.staging, fid + ".data")
        self.assertTrue(os.path.exists(staging))
        r = self.srv.request("DELETE", self.path(fid), None, self.h())
        self.assertEqual(r.status, 204, r)
        self.assertEqual(r.headers.get("tus-resumable"), "1.0.0")
        self.assertFalse(os.path.exists(staging))
        self.assertEqual(self.head(fid).status, 410)
        self.assertTusError(self.patch(fid, 10, b"x"), 410, "terminated")
        self.assertTusError(self.srv.request("DELETE", self.path(fid), None, self.h()), 410)
        self.assertTusError(self.srv.request("DELETE", self.path("8d5f743c-647e-40f8-9333-ce3204b1c02d"),
                                             None, self.h()), 404)
        # A finished upload is a file: terminating it deletes the file.
        fid, _ = self.create(3)
        self.patch(fid, 0, b"abc")
        _, j = self.final_bytes(fid)
        path = self.srv.resolve(j["final_path"])
        self.assertEqual(self.srv.request("DELETE", self.path(fid), None, self.h()).status, 204)
        self.assertFalse(os.path.exists(path))
        self.assertEqual(self.head(fid).status, 410)

    def test_method_override(self):
        fid, _ = self.create(6)
        post = dict(CHUNK_CT, **{"Upload-Offset": "0", "X-HTTP-Method-Override": "PATCH"})
        r = self.srv.request("POST", self.path(fid), b"abc", self.h(post))
        self.assertEqual(r.status, 204, r)
        self.assertEqual(r.headers.get("upload-offset"), "3")
        r = self.srv.request("POST", self.path(fid), None, self.h({"X-HTTP-Method-Override": "HEAD"}))
        self.assertEqual((r.status, r.headers.get("upload-offset")), (200, "3"))
        r = self.srv.request("POST", self.path(fid), None, self.h({"X-HTTP-Method-Override": "DELETE"}))
        self.assertEqual(r.status, 204, r)
        self.assertEqual(self.head(fid).status, 410)
        r = self.srv.request("POST", self.path(fid), None, self.h({"X-HTTP-Method-Override": "BREW"}))
        self.assertTusError(r, 400)

    def test_concatenation(self):
        a, b, c = data_of(70000, 5), data_of(1, 6), data_of(33333, 7)
        ids = []
        for piece in (a, b, c):
            fid, _ = self.create(len(piece), extra={"Upload-Concat": "partial"})
            self.assertEqual(self.head(fid).headers.get("upload-concat"), "partial")
            self.assertEqual(self.patch(fid, 0, piece).status, 204)
            ids.append(fid)
        h = self.head(ids[0])
        self.assertEqual((h.status, h.headers.get("upload-offset")), (200, str(len(a))))
        self.assertExpires(h)  # a piece waits for its final only until its expiry
        base = "http://127.0.0.1:%d" % self.srv.port
        urls = [base + self.path(ids[0]), self.path(ids[1]), base + self.path(ids[2])]
        # Refusals first: nothing is joined or removed by them.
        for concat, status in (("final;" + base + self.path("8d5f743c-647e-40f8-9333-ce3204b1c02d"), 400),
                               ("final;", 400), ("final;/elsewhere/" + ids[0], 400),
                               ("final;%s %s" % (urls[0], urls[0]), 400), ("half", 400)):
            _, r = self.create(meta=metadata(filename="j.bin"), extra={"Upload-Concat": concat}, expect=status)
            self.assertTusError(r, status)
        pending, _ = self.create(10, extra={"Upload-Concat": "partial"})
        _, r = self.create(extra={"Upload-Concat": "final;" + self.path(pending)}, expect=400)
        self.assertIn("not complete", r.json["error"])
        whole, _ = self.create(1)
        self.patch(whole, 0, b"w")
        _, r = self.create(extra={"Upload-Concat": "final;" + self.path(whole)}, expect=400)
        _, r = self.create(extra={"Upload-Concat": "final;" + " ".join(urls)}, body=b"x", expect=403)
        self.assertEqual(self.offset(ids[1]), 1)

        fid, r = self.create(meta=metadata(filename="joined/all.bin"), extra={"Upload-Concat": "final;" + " ".join(urls)})
        h = self.head(fid)
        self.assertEqual(h.headers.get("upload-concat"),
                         "final;" + " ".join(base + self.path(i) for i in ids))
        self.assertEqual(h.headers.get("upload-length"), str(len(a + b + c)))
        self.assertEqual(h.headers.get("upload-offset"), str(len(a + b + c)))
        got, j = self.final_bytes(fid)
        self.assertTrue(got == a + b + c, "joined file differs")
        self.assertTrue(j["final_path"].endswith("joined/%s_all.bin" % fid))
        self.assertTusError(self.patch(fid, len(got), b"x"), 403, "final upload")
        # The pieces were only ever pieces: gone from storage and from the protocol.
        for i in ids:
            self.assertTusError(self.patch(i, 0, b"x"), 410)
            self.assertEqual(self.head(i).status, 410)
            self.assertFalse(os.path.exists(os.path.join(self.srv.staging, i + ".data")))
        _, r = self.create(extra={"Upload-Concat": "final;" + " ".join(urls)}, expect=400)
        files = [f for _, _, fs in os.walk(self.srv.files_dir) for f in fs]
        self.assertEqual(sorted(files), sorted(["%s_all.bin" % fid, "%s_upload" % whole]))

    def test_partial_upload_terminated(self):
        fid, _ = self.create(3, extra={"Upload-Concat": "partial"})
        self.patch(fid, 0, b"abc")
        self.assertEqual(self.srv.request("DELETE", self.path(fid), None, self.h()).status, 204)
        self.assertEqual(self.head(fid).status, 410)
        self.assertFalse(os.path.exists(os.path.join(self.srv.staging, fid + ".data")))

    def test_seed_upload_has_a_tus_url(self):
        init = self.init_ok(self.srv, "seed.bin", 10)
        h = self.head(init["file_id"])
        self.assertEqual((h.status, h.headers.get("upload-length"), h.headers.get("upload-offset")),
                         (200, "10", "0"))
        self.assertNotIn("upload-metadata", h.headers)
        self.assertTusError(self.patch(init["file_id"], 0, b"x"), 403, "seed")

    def test_location_without_a_usable_host(self):
        c = RawConn(self.srv.port)
        c.send(("POST /files/ HTTP/1.1\r\nHost: evil.example/x?\r\nTus-Resumable: 1.0.0\r\n"
                "X-API-Key: %s\r\nUpload-Length: 1\r\nConnection: close\r\n\r\n" % API_KEY).encode())
        r = c.read_response()
        c.close()
        self.assertEqual(r.status, 201, r)
        self.assertRegex(r.headers["location"], r"^/files/[0-9a-f-]{36}$")
        r = self.srv.request("POST", "/files", b"", self.h({"Upload-Length": "1"}))
        self.assertEqual(r.status, 201, r)
        self.assertIn("/files/", r.headers["location"])

    def test_webhook_on_completion(self):
        rec = Receiver()
        self.addCleanup(rec.close)
        srv = self.start_server(env={"WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"})
        r = srv.request("POST", "/files/", b"", self.h({"Upload-Length": "4", "Upload-Metadata":
                                                         metadata(filename="w.bin", webhook_url=rec.url())}))
        fid = r.headers["location"].rsplit("/", 1)[1]
        r = srv.request("PATCH", self.path(fid), b"abcd", self.h(dict(CHUNK_CT, **{"Upload-Offset": "0"})))
        self.assertEqual(r.status, 204, r)
        self.assertTrue(rec.wait_hits(1, 10), "no webhook within 10 s")
        import json
        body = json.loads(rec.hits[0]["body"])
        self.assertEqual((body["event"], body["file_id"], body["filename"], body["total_size"]),
                         ("upload.complete", fid, "w.bin", 4))

    def test_expired_upload_is_gone(self):
        srv = self.start_server(env={"UPLOAD_TTL_HOURS": "0.0005", "CLEANUP_INTERVAL_SECONDS": "0.5"})
        r = srv.request("POST", "/files/", b"", self.h({"Upload-Length": "4"}))
        fid = r.headers["location"].rsplit("/", 1)[1]
        exp = self.assertExpires(r)
        self.assertLessEqual(exp, time.time() + 3)
        time.sleep(2.5)
        self.assertEqual(srv.request("HEAD", self.path(fid), None, self.h()).status, 410)
        r = srv.request("PATCH", self.path(fid), b"ab", self.h(dict(CHUNK_CT, **{"Upload-Offset": "0"})))
        self.assertTusError(r, 410, "expired")

    def test_other_base_path(self):
        srv = self.start_server(env={"TUS_BASE_PATH": "/api/tus/"})
        r = srv.request("POST", "/api/tus/", b"", self.h({"Upload-Length": "2"}))
        self.assertEqual(r.status, 201, r)
        self.assertRegex(r.headers["location"], r"^http://127\.0\.0\.1:\d+/api/tus/[0-9a-f-]{36}$")
        fid = r.headers["location"].rsplit("/", 1)[1]
        r = srv.request("PATCH", "/api/tus/" + fid, b"ab", self.h(dict(CHUNK_CT, **{"Upload-Offset": "0"})))
        self.assertEqual(r.status, 204, r)
        self.assertEqual(srv.request("POST", "/files/", b"", self.h({"Upload-Length": "2"})).status, 404)
        self.assertEqual(srv.request("OPTIONS", "/api/tus/").headers.get("tus-version"), "1.0.0")


class TusConcurrencyTest(TusCase):
    """One writer per upload; what a cut PATCH made durable stays, across kill -9 too."""

    env = {"DURABILITY": "fsync"}

    def open_patch(self, srv, fid, offset, length):
        c = RawConn(srv.port, timeout=30)
        c.send(request_head("PATCH", self.path(fid), self.h(dict(CHUNK_CT, **{
            "Upload-Offset": str(offset), "Content-Length": str(length), "Connection": "close"}))))
        return c

    def wait_offset(self, srv, fid, want, timeout=10):
        deadline = time.time() + timeout
        while True:
            got = int(srv.request("HEAD", self.path(fid), None, self.h()).headers["upload-offset"])
            if got == want or time.time() > deadline:
                return got
            time.sleep(0.05)

    def test_two_patches_at_once(self):
        data = data_of(400000, 8)
        fid, _ = self.create(len(data))
        first = self.open_patch(self.srv, fid, 0, len(data))
        first.send(data[:100000])
        time.sleep(0.3)
        # Meanwhile: the same offset is locked (423); another offset conflicts (409).
        self.assertTusError(self.patch(fid, 0, b"X" * 1000), 423)
        self.assertTusError(self.patch(fid, 5, b"X" * 1000), 409)
        first.send(data[100000:])
        r = first.read_response(30)
        first.close()
        self.assertEqual((r.status, r.headers.get("upload-offset")), (204, str(len(data))))
        self.assertTrue(self.final_bytes(fid)[0] == data, "bytes of the refused PATCH got in")

    def test_cut_patch_keeps_bytes_and_kill9_never_goes_back(self):
        data = data_of(3 * 1024 * 1024, 9)
        fid, _ = self.create(len(data))
        c = self.open_patch(self.srv, fid, 0, len(data))
        c.send(data[:1000000])
        time.sleep(0.3)
        c.close()  # cut mid-body
        self.assertEqual(self.wait_offset(self.srv, fid, 1000000), 1000000, "a cut PATCH lost durable bytes")
        # A kill -9 (DURABILITY=fsync) keeps all of it ...
        self.srv.kill9()
        self.srv.start()
        self.assertEqual(self.offset(fid), 1000000)
        # ... and so does one that lands while a PATCH is in flight: the offset never goes back.
        c = self.open_patch(self.srv, fid, 1000000, len(data) - 1000000)
        c.send(data[1000000:1500000])
        time.sleep(0.3)
        before = self.offset(fid)
        self.assertGreaterEqual(before, 1000000)
        self.srv.kill9()
        c.close()
        self.srv.start()
        after = self.offset(fid)
        self.assertGreaterEqual(after, before, "HEAD went back after kill -9")
        self.assertLessEqual(after, 1500000)
        # The client resumes from what HEAD says and the file is whole.
        r = self.patch(fid, after, data[after:])
        self.assertEqual(r.status, 204, r)
        self.assertTrue(self.final_bytes(fid)[0] == data, "resumed file differs")
        self.assertEqual(file_sha256(self.srv.resolve(self.status(fid)["final_path"])), sha256_hex(data))

    def test_stalled_patch_is_taken_over(self):
        srv = self.start_server(env={"PART_STALL_SECONDS": "1"})
        r = srv.request("POST", "/files/", b"", self.h({"Upload-Length": "1000"}))
        fid = r.headers["location"].rsplit("/", 1)[1]
        stalled = self.open_patch(srv, fid, 0, 1000)
        stalled.send(b"s" * 100)
        time.sleep(1.5)
        r = srv.request("PATCH", self.path(fid), b"n" * 1000, self.h(dict(CHUNK_CT, **{"Upload-Offset": "0"})))
        self.assertEqual(r.status, 204, r)
        stalled.try_send(b"s" * 900)  # nothing more of it is written
        stalled.close()
        j = self.assertOk(srv.status(fid))
        with open(srv.resolve(j["final_path"]), "rb") as f:
            self.assertEqual(f.read(), b"n" * 1000)
