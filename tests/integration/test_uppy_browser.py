"""Uppy with its tus plugin, unchanged, in headless Chromium, from a page on another origin.

tests/browser/uppy_tus.js serves tests/browser/pages/uppy.html (with Uppy's bundle from
tests/js) from a web server of its own, on an origin that only the server's
CORS_ALLOWED_ORIGINS lets in, so the browser runs CORS for real: the preflights of tus's
POST, PATCH and HEAD, and the exposed Location and Upload-Offset that Uppy must read. Each
file is made in the page; the bytes the server stored are downloaded through
/api/files/{id} and read back from the backend itself (the local disk, the S3 bucket, the SMB
share), and both must have the SHA-256 the page computed. Chromium has no network beyond
the two loopback origins.
"""

import hashlib
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import S3TestCase, ServerTestCase, SmbServer, browser_run, free_port, http_request  # noqa: E402

MIB = 1024 * 1024
FILES = [
    {"name": "clip.bin", "size": 7 * MIB + 12345, "seed": 41, "type": "application/octet-stream"},
    {"name": "notes.txt", "size": 3 * MIB + 1, "seed": 42, "type": "text/plain"},
    {"name": "tiny.dat", "size": 1000, "seed": 43, "type": "application/octet-stream"},
]


class UppyMixin(object):

    def upload_with_uppy(self, start, chunk_size=MIB):
        page_port = free_port()
        page_origin = "http://127.0.0.1:%d" % page_port
        srv = start({"CORS_ALLOWED_ORIGINS": page_origin})
        server = "http://127.0.0.1:%d" % srv.port
        out = browser_run("uppy_tus.js", {"server": server, "apiKey": srv.api_key, "pagePort": page_port,
                                          "chunkSize": chunk_size, "limit": 2, "files": FILES}, timeout=180)
        self.assertEqual(out["pageOrigin"], page_origin)
        self.assertEqual(out["outside"], "refused")
        self.assertEqual(out["blocked"], ["http://example.com/cu-probe"])
        self.assertIn("http://example.com/cu-probe", out["refused"])
        result = out["result"]
        self.assertEqual(result["failed"], [])
        done = {f["name"]: f for f in result["successful"]}
        self.assertEqual(sorted(done), sorted(f["name"] for f in FILES))
        for f in FILES:
            progress = done[f["name"]]["progress"]
            self.assertTrue(progress["uploadComplete"], progress)
            self.assertEqual((progress["bytesUploaded"], progress["percentage"]), (f["size"], 100))
        # The page read every Location (exposed by CORS): absolute URLs on the server.
        ids = {}
        for f in FILES:
            url = done[f["name"]]["uploadURL"]
            m = re.match(r"^%s/files/([0-9a-f-]{36})$" % re.escape(server), url)
            self.assertTrue(m, url)
            ids[f["name"]] = m.group(1)
        # What the page sent, as the browser saw it: creations, then PATCHes of at most a chunk.
        reqs = out["requests"]
        for r in reqs:
            self.assertNotIn("failed", r, r)
        posts = [r for r in reqs if r["method"] == "POST"]
        patches = [r for r in reqs if r["method"] == "PATCH"]
        self.assertEqual([r["status"] for r in posts], [201] * len(FILES))
        self.assertEqual({r["status"] for r in patches}, {204})
        want_patches = sum(-(-f["size"] // chunk_size) for f in FILES)
        self.assertEqual(len(patches), want_patches)
        # The browser asked before each cross-origin request kind (preflights answered 204).
        log = srv.log_text()
        self.assertRegex(log, r"OPTIONS /files/ 204")
        self.assertRegex(log, r"OPTIONS /files/[0-9a-f-]{36} 204")
        self.assertNotRegex(log, r"OPTIONS \S+ 403")
        # Each file, downloaded through the files API: the page's bytes.
        stored = {}
        for f in FILES:
            file_id = ids[f["name"]]
            r = http_request(srv.port, "GET", "/api/files/" + file_id, headers=srv.api_headers())
            self.assertEqual(r.status, 200, r)
            self.assertEqual(len(r.body), f["size"])
            self.assertEqual(hashlib.sha256(r.body).hexdigest(), done[f["name"]]["sha256"], f["name"])
            st = self.assertOk(srv.status(file_id))
            self.assertEqual(st["status"], "complete")
            self.assertEqual(st["filename"], f["name"])
            self.assertTrue(st["final_path"].endswith("%s_%s" % (file_id, f["name"])), st)
            stored[f["name"]] = st["final_path"]
        sys.stderr.write("Uppy: %d files, %d PATCHes in %.1f s (%.1f s in all)\n"
                         % (len(FILES), len(patches), out["uploadSeconds"], out["seconds"]))
        return srv, done, stored


class UppyLocalTest(UppyMixin, ServerTestCase):

    def test_uppy_tus_from_another_origin(self):
        srv, done, stored = self.upload_with_uppy(lambda env: self.start_server(env=env))
        for f in FILES:
            with open(srv.resolve(stored[f["name"]]), "rb") as fh:
                self.assertEqual(hashlib.sha256(fh.read()).hexdigest(), done[f["name"]]["sha256"])


class UppyS3Test(UppyMixin, S3TestCase):

    def test_uppy_tus_from_another_origin_on_s3(self):
        s3 = self.start_s3()
        # Chunks under S3's 5 MiB part minimum: the server gathers them into parts.
        srv, done, stored = self.upload_with_uppy(lambda env: self.start_s3_server(s3, env=env))
        client = s3.client()
        prefix = "s3://%s/" % s3.bucket
        for f in FILES:
            self.assertTrue(stored[f["name"]].startswith(prefix), stored[f["name"]])
            body = client.get_object(s3.bucket, stored[f["name"]][len(prefix):])
            self.assertEqual(hashlib.sha256(body).hexdigest(), done[f["name"]]["sha256"])
        self.assertNoMultipartUploads(s3)


class UppySmbTest(UppyMixin, ServerTestCase):

    def test_uppy_tus_from_another_origin_on_smb(self):
        smb = SmbServer()
        self.addCleanup(smb.destroy)
        smb.start()
        srv, done, stored = self.upload_with_uppy(lambda env: self.start_server(env=dict(smb.server_env(), **env)))
        for f in FILES:
            with open(smb.url_to_path(stored[f["name"]]), "rb") as fh:
                self.assertEqual(hashlib.sha256(fh.read()).hexdigest(), done[f["name"]]["sha256"])


if __name__ == "__main__":
    import unittest
    unittest.main()
