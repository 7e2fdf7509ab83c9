"""The files API (/api/files) against the real binary on local disk, S3 (s3rver behind the
SigV4-checking launcher) and SMB (smbd): single-request uploads in both forms, downloads with
curl (ranges, suffixes, open ends, 304, 412, 416, If-Range, HEAD, `curl -C -` resuming a
download that was cut), Content-Disposition for a non-ASCII name, list pagination over
several pages within a directory while files keep arriving, deletion (the bytes leave
storage, then 404 everywhere), signed links (valid, tampered, expired), S3's redirect to a
presigned URL followed by curl, and, on local disk, a 1 GiB upload and a 1 GiB download
with the server's peak RSS under 64 MiB."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (API_KEY, S3Error, S3TestCase, ServerTestCase, chunked_body, raw_request,  # noqa: E402
                     rfc3339_to_epoch, sha256_hex)
from test_smb import SmbTestCase  # noqa: E402
from test_webhook import Receiver  # noqa: E402

COMPLETE_KEYS = {"file_id", "filename", "total_size", "status", "final_path", "storage_backend",
                 "completed_at", "sha256"}
ENTRY_KEYS = {"file_id", "filename", "directory", "size", "content_type", "sha256", "created_at",
              "completed_at", "storage_backend", "final_path"}
BOUNDARY = "cu-test-boundary-7d1f"


def multipart(fields, boundary=BOUNDARY):
    """A multipart/form-data body from [(name, value)] or [(name, (filename, type, bytes))]."""
    out = []
    for name, value in fields:
        out.append(("--%s\r\n" % boundary).encode())
        if isinstance(value, tuple):
            filename, ctype, data = value
            out.append(('Content-Disposition: form-data; name="%s"; filename="%s"\r\n' % (name, filename)).encode())
            out.append(("Content-Type: %s\r\n\r\n" % ctype).encode())
            out.append(data)
        else:
            out.append(('Content-Disposition: form-data; name="%s"\r\n\r\n' % name).encode())
            out.append(value.encode())
        out.append(b"\r\n")
    out.append(("--%s--\r\n" % boundary).encode())
    return b"".join(out)


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def curl(args, timeout=120):
    """Runs curl; returns (exit status, [header blocks as dicts, one per response], status codes)."""
    with tempfile.NamedTemporaryFile(prefix="cu-curl-hdr-") as hdr:
        p = subprocess.run(["curl", "-sS", "-D", hdr.name] + args, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout)
        with open(hdr.name, "rb") as f:
            text = f.read().decode("latin-1")
    blocks, statuses = [], []
    for block in re.split(r"\r\n\r\n", text):
        lines = [l for l in block.split("\r\n") if l]
        if not lines or not lines[0].startswith("HTTP/"):
            continue
        statuses.append(int(lines[0].split()[1]))
        blocks.append({k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])})
    return p.returncode, blocks, statuses


class FilesApiCases(object):
    """The tests every backend runs. A backend's class provides start(**env), stored(reply)
    (whether the file a complete reply names is in storage) and staging_left(srv)."""

    backend = None

    # -- helpers
    def key(self):
        return {"X-API-Key": API_KEY}

    def upload(self, srv, name, data, path=None, ctype="application/octet-stream", extra=(), query=""):
        fields = ([("path", path)] if path is not None else []) + list(extra) + [("file", (name, ctype, data))]
        body = multipart(fields)
        h = dict(self.key(), **{"Content-Type": "multipart/form-data; boundary=%s" % BOUNDARY})
        return srv.request("POST", "/api/files/upload" + query, body, h, timeout=120)

    def upload_ok(self, srv, name, data, path=None, **kw):
        r = self.upload(srv, name, data, path, **kw)
        j = self.assertOk(r, "(upload %r)" % name)
        self.assertEqual(set(j), COMPLETE_KEYS, j)
        self.assertEqual(j["filename"], name.rsplit("/", 1)[-1])
        self.assertEqual(j["total_size"], len(data))
        self.assertEqual(j["status"], "complete")
        self.assertEqual(j["storage_backend"], self.backend)
        self.assertEqual(j["sha256"], sha256_hex(data))
        self.assertRfc3339(j["completed_at"])
        return j

    def download(self, srv, fid, headers=None):
        return srv.request("GET", "/api/files/%s" % fid, None, dict(self.key(), **(headers or {})), timeout=120)

    def list_files(self, srv, **q):
        r = srv.request("GET", "/api/files?" + urllib.parse.urlencode(q), None, self.key())
        j = self.assertOk(r)
        self.assertEqual(set(j), {"files", "next_cursor"})
        for e in j["files"]:
            self.assertEqual(set(e), ENTRY_KEYS, e)
        return j

    def url(self, srv, path):
        return "http://127.0.0.1:%d%s" % (srv.port, path)

    # -- single-request upload
    def test_single_upload_forms(self):
        srv = self.start()
        a = os.urandom(300 * 1024 + 7)
        j = self.upload_ok(srv, "a.bin", a, path="/forms/dir/", ctype="image/png")
        self.assertTrue(self.stored(srv, j))
        self.assertEqual(self.download(srv, j["file_id"]).body, a)
        # The directory as a query parameter, no path field.
        j2 = self.upload_ok(srv, "q.bin", b"query", query="?path=forms/q")
        # A raw body named by ?filename= (which carries its directory), then chunked.
        r = srv.request("POST", "/api/files/upload?filename=forms/raw/r%C3%A9sum%C3%A9.txt", b"raw bytes",
                        dict(self.key(), **{"Content-Type": "text/plain; charset=utf-8"}))
        raw = self.assertOk(r)
        self.assertEqual(raw["filename"], "résumé.txt")
        self.assertEqual(raw["sha256"], sha256_hex(b"raw bytes"))
        big = os.urandom(2 * 1024 * 1024 + 5)
        r, _ = raw_request(srv.port, "POST", "/api/files/upload?filename=forms/raw/chunked.bin",
                           dict(self.key(), **{"Transfer-Encoding": "chunked"}), chunked_body(big),
                           content_length=False, timeout=60)
        chunked = self.assertOk(r)
        self.assertEqual(chunked["total_size"], len(big))
        self.assertEqual(chunked["sha256"], sha256_hex(big))
        self.assertEqual(self.download(srv, chunked["file_id"]).body, big)
        # Empty files, both forms.
        e1 = self.upload_ok(srv, "empty.bin", b"", path="forms/empty")
        r = srv.request("POST", "/api/files/upload?filename=forms/empty/raw.bin", b"", self.key())
        e2 = self.assertOk(r)
        self.assertEqual(e2["total_size"], 0)
        for e in (e1, e2):
            d = self.download(srv, e["file_id"])
            self.assertEqual((d.status, d.body), (200, b""))
        listed = {e["file_id"]: e for e in self.list_files(srv, prefix="forms")["files"]}
        self.assertEqual(set(listed), {j["file_id"], j2["file_id"], raw["file_id"], chunked["file_id"],
                                       e1["file_id"], e2["file_id"]})
        self.assertEqual(listed[j["file_id"]]["directory"], "forms/dir")
        self.assertEqual(listed[j["file_id"]]["content_type"], "image/png")
        self.assertEqual(listed[j2["file_id"]]["directory"], "forms/q")
        self.assertEqual(listed[raw["file_id"]]["content_type"], "text/plain; charset=utf-8")
        self.assertEqual(listed[chunked["file_id"]]["sha256"], sha256_hex(big))
        self.assertEqual(self.download(srv, raw["file_id"]).headers["content-type"], "text/plain; charset=utf-8")

    def test_single_upload_fires_the_webhook(self):
        rec = Receiver()
        self.addCleanup(rec.close)
        srv = self.start(WEBHOOK_ALLOWED_HOSTS="127.0.0.1")
        j = self.upload_ok(srv, "hooked.bin", b"hook me", path="hooks", extra=[("webhook_url", rec.url())])
        self.assertTrue(rec.wait_hits(1, 15), "no webhook delivered")
        body = json.loads(rec.hits[0]["body"])
        self.assertEqual((body["event"], body["file_id"], body["total_size"]), ("upload.complete", j["file_id"], 7))

    def test_single_upload_refusals(self):
        srv = self.start(MAX_SINGLE_UPLOAD_MB="1")
        before = set(e["file_id"] for e in self.list_files(srv)["files"])
        # The path after the file: refused, nothing stored.
        body = multipart([("file", ("late.bin", "application/octet-stream", b"x" * 1000)), ("path", "late")])
        h = dict(self.key(), **{"Content-Type": "multipart/form-data; boundary=%s" % BOUNDARY})
        self.assertError(srv.request("POST", "/api/files/upload", body, h), 400, "before the file")
        body = multipart([("file", ("one.bin", "a/b", b"1")), ("file", ("two.bin", "a/b", b"2"))])
        self.assertError(srv.request("POST", "/api/files/upload", body, h), 400, "one file per request")
        self.assertError(srv.request("POST", "/api/files/upload", multipart([("path", "x")]), h), 400, "no file")
        self.assertError(srv.request("POST", "/api/files/upload", b"nameless", self.key()), 400, "filename")
        self.assertError(srv.request("POST", "/api/files/upload?filename=../escape.bin", b"x", self.key()), 400,
                         "..")
        self.assertError(self.upload(srv, "x.bin", b"x", path="a/../../b"), 400, "..")
        self.assertError(srv.request("POST", "/api/files/upload?filename=a.bin", b"x"), 401)
        # Over MAX_SINGLE_UPLOAD_MB: from Content-Length before the body (raw and multipart) ...
        for ctype in ("application/octet-stream", "multipart/form-data; boundary=%s" % BOUNDARY):
            r, sent = raw_request(srv.port, "POST", "/api/files/upload?filename=big.bin",
                                  dict(self.key(), **{"Content-Type": ctype, "Expect": "100-continue"}),
                                  b"\0" * (3 * 1024 * 1024), early_wait=2.0)
            self.assertError(r, 413, "one request")
            self.assertEqual(sent, 0, "the refusal came after %d body bytes" % sent)
        # ... and while it streams when no length was declared.
        big = multipart([("file", ("big.bin", "application/octet-stream", b"\1" * (1024 * 1024 + 1)))])
        r, _ = raw_request(srv.port, "POST", "/api/files/upload",
                           dict(self.key(), **{"Content-Type": "multipart/form-data; boundary=%s" % BOUNDARY,
                                               "Transfer-Encoding": "chunked"}),
                           chunked_body(big), content_length=False, timeout=60)
        self.assertError(r, 413, "one request")
        # Exactly the limit is fine.
        self.upload_ok(srv, "limit.bin", b"\2" * (1024 * 1024), path="refusals")
        after = [e for e in self.list_files(srv)["files"] if e["file_id"] not in before]
        self.assertEqual([e["filename"] for e in after], ["limit.bin"])
        self.assertFalse(self.staging_left(srv), "staging data left by refused uploads")

    # -- downloads
    def test_downloads_with_curl(self):
        srv = self.start()
        data = os.urandom(300 * 1000 + 17)
        name = "Résumé «final» 2024.pdf"
        j = self.upload_ok(srv, name, data, path="dl", ctype="application/pdf")
        fid, size = j["file_id"], len(data)
        u = self.url(srv, "/api/files/%s" % fid)
        k = ["-H", "X-API-Key: " + API_KEY]
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "out")

            def get(*args):
                if os.path.exists(out):
                    os.unlink(out)  # curl writes nothing for a reply without a body
                rc, blocks, statuses = curl(k + ["-o", out] + list(args) + [u])
                if not os.path.exists(out):
                    open(out, "wb").close()
                self.assertEqual(rc, 0)
                with open(out, "rb") as f:
                    return statuses[-1], blocks[-1], f.read()

            status, h, body = get()
            self.assertEqual((status, body), (200, data))
            etag, modified = h["etag"], h["last-modified"]
            self.assertRegex(etag, r'^"[0-9a-f]{32}"$')
            self.assertEqual(h["accept-ranges"], "bytes")
            self.assertEqual(h["content-type"], "application/pdf")
            self.assertEqual(h["content-length"], str(size))
            self.assertEqual(h["content-disposition"],
                             "attachment; filename=\"R_sum_ _final_ 2024.pdf\"; "
                             "filename*=UTF-8''R%C3%A9sum%C3%A9%20%C2%ABfinal%C2%BB%202024.pdf")
            self.assertEqual(h["x-content-type-options"], "nosniff")
            self.assertEqual(rfc3339_to_epoch(j["completed_at"]),
                             int(time.mktime(time.strptime(modified, "%a, %d %b %Y %H:%M:%S GMT")) - time.timezone))
            self.assertEqual(get()[1]["etag"], etag, "the ETag is stable")
            for rng, lo, hi in (("0-99", 0, 99), ("1000-", 1000, size - 1), ("-500", size - 500, size - 1),
                                ("299990-999999999", 299990, size - 1)):
                status, h, body = get("-r", rng)
                self.assertEqual(status, 206, rng)
                self.assertEqual(h["content-range"], "bytes %d-%d/%d" % (lo, hi, size))
                self.assertEqual(body, data[lo:hi + 1], rng)
                self.assertEqual(h["etag"], etag)
            # Several ranges: the whole file, 200.
            status, h, body = get("-r", "0-1,5-9")
            self.assertEqual((status, body), (200, data))
            # Not modified: by tag, by date; a tag that differs sends the file.
            status, h, body = get("-H", "If-None-Match: %s" % etag)
            self.assertEqual((status, body), (304, b""))
            self.assertEqual(h["etag"], etag)
            self.assertEqual(get("-H", 'If-None-Match: "other", %s' % etag)[0], 304)
            self.assertEqual(get("-H", "If-Modified-Since: %s" % modified)[0], 304)
            self.assertEqual(get("-H", 'If-None-Match: "other"')[0], 200)
            self.assertEqual(get("-H", "If-Match: \"other\"")[0], 412)
            self.assertEqual(get("-H", "If-Match: %s" % etag, "-r", "0-0")[0], 206)
            # If-Range: the current tag or date keeps the range, another sends everything.
            status, h, body = get("-r", "10-19", "-H", "If-Range: %s" % etag)
            self.assertEqual((status, body), (206, data[10:20]))
            status, h, body = get("-r", "10-19", "-H", "If-Range: %s" % modified)
            self.assertEqual((status, body), (206, data[10:20]))
            status, h, body = get("-r", "10-19", "-H", 'If-Range: "stale"')
            self.assertEqual((status, body), (200, data))
        # Unsatisfiable: 416 with the size, as JSON.
        r = self.download(srv, fid, {"Range": "bytes=%d-" % size})
        self.assertError(r, 416, "not satisfiable")
        self.assertEqual(r.headers["content-range"], "bytes */%d" % size)
        # HEAD: the headers of the GET, no body.
        rc, blocks, statuses = curl(k + ["-I", u])
        self.assertEqual((rc, statuses), (0, [200]))
        self.assertEqual(blocks[0]["content-length"], str(size))
        self.assertEqual(blocks[0]["etag"], etag)
        rc, blocks, statuses = curl(k + ["-I", "-r", "5-9", u])
        self.assertEqual((statuses, blocks[0]["content-length"]), ([206], "5"))
        # Keys and ids.
        self.assertError(srv.request("GET", "/api/files/%s" % fid), 401)
        self.assertError(self.download(srv, str(uuid.uuid4())), 404)
        self.assertError(self.download(srv, "not-an-id"), 404)

    def test_resume_a_cut_download_with_curl(self):
        srv = self.start()
        data = os.urandom(16 * 1024 * 1024 + 3)
        fid = self.upload_ok(srv, "movie.mp4", data, path="resume")["file_id"]
        u = self.url(srv, "/api/files/%s" % fid)
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "movie.mp4")
            rc, _, statuses = curl(["-H", "X-API-Key: " + API_KEY, "--limit-rate", "1M", "--max-time", "1",
                                    "-o", out, u])
            self.assertEqual(rc, 28, "the first download was meant to be cut by --max-time")
            have = os.path.getsize(out)
            self.assertTrue(0 < have < len(data), have)
            rc, blocks, statuses = curl(["-H", "X-API-Key: " + API_KEY, "-C", "-", "-o", out, u])
            self.assertEqual((rc, statuses), (0, [206]))
            self.assertEqual(blocks[0]["content-range"], "bytes %d-%d/%d" % (have, len(data) - 1, len(data)))
            with open(out, "rb") as f:
                self.assertTrue(f.read() == data, "the resumed download differs from the file")

    # -- listing
    def test_list_pagination_by_directory(self):
        srv = self.start()
        d = "pages/%s" % uuid.uuid4().hex[:8]
        ids = [self.upload_ok(srv, "f%d.bin" % i, b"%d" % i, path=d if i < 5 else d + "/sub")["file_id"]
               for i in range(7)]
        self.upload_ok(srv, "sibling.bin", b"s", path=d + "x")  # a/bx is not below a/b
        self.upload_ok(srv, "elsewhere.bin", b"e", path="other")
        full = self.list_files(srv, prefix=d, limit=1000)
        self.assertIsNone(full["next_cursor"])
        self.assertEqual(sorted(e["file_id"] for e in full["files"]), sorted(ids))
        # The last completed first, by their order of completion (the clock has whole seconds).
        self.assertEqual([e["file_id"] for e in full["files"]], ids[::-1])
        times = [rfc3339_to_epoch(e["completed_at"]) for e in full["files"]]
        self.assertEqual(times, sorted(times, reverse=True))
        self.assertEqual(self.list_files(srv, prefix="/%s/" % d)["files"], full["files"])
        self.assertEqual(len(self.list_files(srv, prefix=d + "/sub")["files"]), 2)
        # Pages of 3; a file that completes meanwhile neither repeats nor hides a listed one.
        seen, cursor, pages = [], None, 0
        while True:
            q = {"prefix": d, "limit": 3}
            if cursor:
                q["cursor"] = cursor
            page = self.list_files(srv, **q)
            pages += 1
            self.assertLessEqual(len(page["files"]), 3)
            seen += [e["file_id"] for e in page["files"]]
            if pages == 1:
                late = self.upload_ok(srv, "late.bin", b"late", path=d)["file_id"]
            cursor = page["next_cursor"]
            if not cursor:
                break
        self.assertEqual(pages, 3)
        self.assertEqual(seen, [e["file_id"] for e in full["files"]])
        self.assertEqual(self.list_files(srv, prefix=d, limit=1)["files"][0]["file_id"], late)
        for bad in ({"limit": 0}, {"limit": 1001}, {"limit": "x"}, {"cursor": "nope"}, {"prefix": "a/../b"}):
            self.assertError(srv.request("GET", "/api/files?" + urllib.parse.urlencode(bad), None, self.key()), 400)
        self.assertError(srv.request("GET", "/api/files"), 401)
        # A pending upload (the seed's, parts still to come) is not a file.
        init = self.assertOk(srv.init(d + "/pending.bin", 10))
        self.assertNotIn(init["file_id"], [e["file_id"] for e in self.list_files(srv, prefix=d)["files"]])

    # -- deleting
    def test_delete(self):
        srv = self.start()
        j = self.upload_ok(srv, "gone.bin", b"delete me", path="del")
        fid = j["file_id"]
        self.assertTrue(self.stored(srv, j))
        self.assertError(srv.request("DELETE", "/api/files/%s" % fid), 401)
        r = srv.request("DELETE", "/api/files/%s" % fid, None, self.key())
        self.assertEqual(self.assertOk(r), {"file_id": fid, "message": "File deleted"})
        self.assertFalse(self.stored(srv, j), "the bytes are still in storage")
        self.assertError(self.download(srv, fid), 404)
        self.assertEqual(srv.request("HEAD", "/api/files/%s" % fid, None, self.key()).status, 404)
        self.assertError(srv.request("DELETE", "/api/files/%s" % fid, None, self.key()), 404)
        self.assertError(srv.status(fid), 404)
        self.assertNotIn(fid, [e["file_id"] for e in self.list_files(srv, prefix="del")["files"]])
        self.assertError(srv.request("DELETE", "/api/files/%s" % uuid.uuid4(), None, self.key()), 404)
        # A pending upload is not a file to delete (cancel it instead).
        init = self.assertOk(srv.init("del/pending.bin", 10))
        self.assertError(srv.request("DELETE", "/api/files/%s" % init["file_id"], None, self.key()), 404)

    # -- signed links
    def test_signed_links(self):
        srv = self.start()
        data = os.urandom(100 * 1024)
        j = self.upload_ok(srv, "shared.bin", data, path="links")
        fid = j["file_id"]
        r = srv.request("POST", "/api/files/%s/link" % fid, {"expires_in": 120}, self.key())
        link = self.assertOk(r)
        self.assertEqual(set(link), {"file_id", "url", "expires_at", "expires_in"})
        self.assertEqual(link["expires_in"], 120)
        self.assertTrue(abs(rfc3339_to_epoch(link["expires_at"]) - time.time() - 120) < 5)
        url = link["url"]
        self.assertTrue(url.startswith("http://127.0.0.1:%d/api/files/%s/download?" % (srv.port, fid)), url)
        # No API key: the link's signature is the credential.
        rc, blocks, statuses = curl(["-o", "/dev/null", url])
        self.assertEqual((rc, statuses), (0, [200]))
        self.assertEqual(blocks[0]["content-length"], str(len(data)))
        path = url[len("http://127.0.0.1:%d" % srv.port):]
        got = srv.request("GET", path)
        self.assertEqual((got.status, got.body), (200, data))
        part = srv.request("GET", path, None, {"Range": "bytes=10-19"})
        self.assertEqual((part.status, part.body), (206, data[10:20]))
        head = srv.request("HEAD", path)
        self.assertEqual((head.status, head.headers["content-length"]), (200, str(len(data))))
        # The default lifetime.
        d = self.assertOk(srv.request("POST", "/api/files/%s/link" % fid, None, self.key()))
        self.assertEqual(d["expires_in"], 3600)
        # Tampered: the signature, the expiry, the file; missing parameters.
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
        sig, exp = q["signature"][0], q["expires"][0]
        other = self.upload_ok(srv, "other.bin", b"other", path="links")["file_id"]
        flipped = ("A" if sig[5] != "A" else "B")
        for bad in ("/api/files/%s/download?expires=%s&signature=%s" % (fid, exp, sig[:5] + flipped + sig[6:]),
                    "/api/files/%s/download?expires=%d&signature=%s" % (fid, int(exp) + 1, sig),
                    "/api/files/%s/download?expires=%s&signature=%s" % (other, exp, sig),
                    "/api/files/%s/download?expires=%s" % (fid, exp),
                    "/api/files/%s/download" % fid):
            self.assertError(srv.request("GET", bad), 403)
        # Expired.
        short = self.assertOk(srv.request("POST", "/api/files/%s/link" % fid, {"expires_in": 1}, self.key()))
        time.sleep(2.2)
        spath = short["url"][len("http://127.0.0.1:%d" % srv.port):]
        self.assertError(srv.request("GET", spath), 403, "expired")
        # Refusals when making one.
        self.assertError(srv.request("POST", "/api/files/%s/link" % fid, {"expires_in": 120}), 401)
        for bad in ({"expires_in": 0}, {"expires_in": 7 * 86400 + 1}, {"expires_in": "60"}):
            self.assertError(srv.request("POST", "/api/files/%s/link" % fid, bad, self.key()), 400)
        self.assertError(srv.request("POST", "/api/files/%s/link" % uuid.uuid4(), {}, self.key()), 404)
        # A deleted file's link leads nowhere.
        self.assertOk(srv.request("DELETE", "/api/files/%s" % fid, None, self.key()))
        self.assertError(srv.request("GET", path), 404)


class LocalFilesTest(FilesApiCases, ServerTestCase):
    backend = "local"

    def start(self, **env):
        return self.start_server(env=env)

    def stored(self, srv, reply):
        return os.path.isfile(srv.resolve(reply["final_path"]))

    def staging_left(self, srv):
        return [f for f in os.listdir(srv.staging)] if os.path.isdir(srv.staging) else []

    def test_download_is_sent_with_sendfile(self):
        """A local file goes out from its descriptor: strace sees sendfile carry the bytes of a
        64 MiB download, and no read of them through the server's memory."""
        strace = shutil.which("strace")
        self.assertIsNotNone(strace, "strace not found (scripts/install-deps.sh --test installs it)")
        srv = self.start(MAX_SINGLE_UPLOAD_MB="100")
        data = os.urandom(1024 * 1024) * 64
        fid = self.upload_ok(srv, "big.bin", data, path="sendfile")["file_id"]
        log = os.path.join(srv.tmp, "strace.log")
        tracer = subprocess.Popen([strace, "-f", "-qq", "-e", "trace=sendfile,read,pread64,readv,preadv",
                                   "-o", log, "-p", str(srv.proc.pid)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE)
        try:
            deadline = time.time() + 10
            while not os.path.exists(log) and time.time() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)  # every thread attached
            r = self.download(srv, fid)
            self.assertTrue(r.status == 200 and r.body == data)
            time.sleep(0.3)
        finally:
            tracer.terminate()
            tracer.wait(10)
        sent = read = 0
        with open(log) as f:
            for line in f:
                m = re.search(r"\b(sendfile|read|pread64|readv|preadv)\(.*\)\s+=\s+(\d+)", line)
                if m:
                    if m.group(1) == "sendfile":
                        sent += int(m.group(2))
                    else:
                        read += int(m.group(2))
        self.assertGreaterEqual(sent, len(data), "sendfile carried %d bytes" % sent)
        self.assertLess(read, 1024 * 1024, "%d bytes were read through user space" % read)


class S3FilesTest(FilesApiCases, S3TestCase):
    backend = "s3"

    def setUp(self):
        self.s3 = self.start_s3()

    def start(self, **env):
        return self.start_s3_server(self.s3, env=env)

    def stored(self, srv, reply):
        key = reply["final_path"][len("s3://%s/" % self.s3.bucket):]
        try:
            self.s3.client().head_object(self.s3.bucket, key)
            return True
        except S3Error as e:
            if e.status == 404:
                return False
            raise

    def staging_left(self, srv):
        return self.s3.client().list_multipart_uploads(self.s3.bucket) or self.spool_files(srv)

    def test_redirect_to_presigned_url(self):
        srv = self.start(S3_DOWNLOAD_REDIRECT="true")
        data = os.urandom(200 * 1024 + 1)
        j = self.upload_ok(srv, "Résumé.bin", data, path="redirect", ctype="application/x-test")
        fid = j["file_id"]
        r = self.download(srv, fid)
        self.assertEqual(r.status, 302)
        loc = r.headers["location"]
        self.assertTrue(loc.startswith(self.s3.endpoint + "/"), loc)
        self.assertIn("X-Amz-Signature=", loc)
        self.assertIn("X-Amz-Expires=300", loc)
        self.assertEqual(r.json["url"], loc)
        # curl follows it to S3 and gets the file, with our name and type.
        u = self.url(srv, "/api/files/%s" % fid)
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "out")
            rc, blocks, statuses = curl(["-L", "-H", "X-API-Key: " + API_KEY, "-o", out, u])
            self.assertEqual((rc, statuses), (0, [302, 200]))
            self.assertTrue(read_file(out) == data)
            self.assertEqual(blocks[1]["content-type"], "application/x-test")
            self.assertEqual(blocks[1]["content-disposition"],
                             "attachment; filename=\"R_sum_.bin\"; filename*=UTF-8''R%C3%A9sum%C3%A9.bin")
            rc, blocks, statuses = curl(["-L", "-r", "100-199", "-H", "X-API-Key: " + API_KEY, "-o", out, u])
            self.assertEqual((rc, statuses), (0, [302, 206]))
            self.assertEqual(read_file(out), data[100:200])
            # A signed link redirects too, for no longer than the link lives.
            link = self.assertOk(srv.request("POST", "/api/files/%s/link" % fid, {"expires_in": 60}, self.key()))
            rc, blocks, statuses = curl(["-L", "-o", out, link["url"]])
            self.assertEqual((rc, statuses), (0, [302, 200]))
            self.assertTrue(read_file(out) == data)
            self.assertRegex(blocks[0]["location"], r"X-Amz-Expires=(60|59|58)&")
        # The presigned URL stops at its expiry and holds to what it signed.
        bad = loc.replace("X-Amz-Expires=300", "X-Amz-Expires=301")
        self.assertEqual(curl(["-o", "/dev/null", bad])[2], [403])
        # Preconditions and HEAD are answered here, without a trip to S3.
        etag = srv.request("HEAD", "/api/files/%s" % fid, None, self.key()).headers["etag"]
        self.assertEqual(self.download(srv, fid, {"If-None-Match": etag}).status, 304)

    def test_streamed_download_survives_a_broken_s3_get(self):
        """Without the redirect the server streams S3's ranged GET; one that breaks off after
        1 MiB is resumed (If-Match its ETag), and the client never notices."""
        self.s3.stop(check=False)
        self.s3 = self.start_s3(cut_gets=1)
        srv = self.start()
        data = os.urandom(3 * 1024 * 1024 + 11)
        fid = self.upload_ok(srv, "cut.bin", data, path="cut")["file_id"]
        r = self.download(srv, fid)
        self.assertTrue(r.status == 200 and r.body == data, "download through a cut S3 GET differs")


class SmbFilesTest(FilesApiCases, SmbTestCase):
    backend = "smb"

    def start(self, **env):
        self.smb_path = "files-%s" % uuid.uuid4().hex[:8]
        return self.start_smb_server(self.smb_path, env=env)

    def stored(self, srv, reply):
        return os.path.isfile(self.smb.url_to_path(reply["final_path"]))

    def staging_left(self, srv):
        return self.smb.files_under(self.smb_path, ".staging")


GIB = 1024 * 1024 * 1024
BLOCK = 1024 * 1024


def generated_blocks(total, seed=b"cu-1gib"):
    """Deterministic pseudo-random blocks (SHA-256 in counter mode over a 64 KiB seed block,
    varied per MiB): cheap to make, never all alike."""
    base = hashlib.sha256(seed).digest() * 2048  # 64 KiB
    n = 0
    sent = 0
    while sent < total:
        stamp = hashlib.sha256(seed + n.to_bytes(8, "little")).digest()
        block = (stamp + base[32:]) * 16  # 1 MiB, the first 32 bytes of every 64 KiB vary
        block = block[:min(BLOCK, total - sent)]
        sent += len(block)
        n += 1
        yield block


class LargeFilesTest(ServerTestCase):
    """1 GiB each way through one server, memory bounded: peak RSS (VmHWM) under 64 MiB."""

    def vmhwm_kib(self, srv):
        with open("/proc/%d/status" % srv.proc.pid) as f:
            return int(re.search(r"^VmHWM:\s+(\d+) kB", f.read(), re.M).group(1))

    def test_1gib_single_upload_and_download_in_bounded_memory(self):
        srv = self.start_server(env={"MAX_SINGLE_UPLOAD_MB": "1100", "LOG_LEVEL": "info"})
        head = ('--%s\r\nContent-Disposition: form-data; name="path"\r\n\r\nlarge\r\n'
                '--%s\r\nContent-Disposition: form-data; name="file"; filename="gib.bin"\r\n'
                'Content-Type: application/octet-stream\r\n\r\n' % (BOUNDARY, BOUNDARY)).encode()
        tail = ("\r\n--%s--\r\n" % BOUNDARY).encode()
        want = hashlib.sha256()

        def body():
            yield head
            for b in generated_blocks(GIB):
                want.update(b)
                yield b
            yield tail
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=600)
        c.putrequest("POST", "/api/files/upload")
        c.putheader("X-API-Key", API_KEY)
        c.putheader("Content-Type", "multipart/form-data; boundary=%s" % BOUNDARY)
        c.putheader("Content-Length", str(len(head) + GIB + len(tail)))
        c.endheaders()
        for piece in body():
            c.send(piece)
        r = c.getresponse()
        reply = json.loads(r.read())
        c.close()
        self.assertEqual(r.status, 200, reply)
        self.assertEqual((reply["total_size"], reply["sha256"]), (GIB, want.hexdigest()))
        after_upload = self.vmhwm_kib(srv)

        got = hashlib.sha256()
        n = 0
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=600)
        c.request("GET", "/api/files/%s" % reply["file_id"], headers={"X-API-Key": API_KEY})
        r = c.getresponse()
        self.assertEqual(r.status, 200)
        self.assertEqual(int(r.getheader("Content-Length")), GIB)
        while True:
            b = r.read(BLOCK)
            if not b:
                break
            got.update(b)
            n += len(b)
        c.close()
        self.assertEqual((n, got.hexdigest()), (GIB, want.hexdigest()))
        peak = self.vmhwm_kib(srv)
        sys.stderr.write("\n1 GiB single upload + download: peak RSS %.1f MiB (%.1f MiB after the upload)\n"
                         % (peak / 1024.0, after_upload / 1024.0))
        self.assertLess(peak, 64 * 1024, "peak RSS %d KiB" % peak)


if __name__ == "__main__":
    import unittest
    unittest.main()
