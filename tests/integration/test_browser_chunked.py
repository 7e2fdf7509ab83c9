"""flow.js and resumable.js, unchanged, uploading from headless Chromium.

tests/browser/chunked.js drives the page tests/browser/pages/chunked.html (served with the
libraries from tests/js by a web server of its own that passes /api/ on to our server, so
the page and the API share one origin) and reports every API request it made. Each file
is made in the page; the SHA-256 the page computed must be the stored file's, read back from
the backend itself (the local disk, the S3 bucket, the SMB share). A page reloaded halfway
resumes with the chunk test and sends again only the chunks the server does not have.
Chromium has no network beyond loopback: every other request is refused and reported.
"""

import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (S3_CHUNK, S3TestCase, ServerTestCase, SmbServer,  # noqa: E402
                     browser_run, file_sha256)

MIB = 1024 * 1024
SIZE = 30 * MIB


def flow_chunks(size, chunk, force=False):
    """How many chunks the libraries cut size bytes into (bootstrap() in both)."""
    n = -(-size // chunk) if force else size // chunk
    return max(n, 1)


class BrowserChunkedMixin(object):
    """Runs scenarios in one browser and checks what every one of them did."""

    def run_scenarios(self, srv, scenarios, timeout=120):
        out = browser_run("chunked.js", {"server": "http://127.0.0.1:%d" % srv.port,
                                         "apiKey": srv.api_key, "scenarios": scenarios}, timeout)
        # Nothing but the test's own probe tried to leave loopback, and it was refused.
        self.assertEqual(out["outside"], "refused")
        self.assertEqual(out["blocked"], ["http://example.com/cu-probe"])
        results = {}
        for s, got in zip(scenarios, out["scenarios"]):
            self.assertEqual(got["name"], s["name"])
            results[s["name"]] = self.check_scenario(srv, s, got)
        sys.stderr.write("browser: %.1f s in all, launch %.1f s, %s\n" % (
            out["seconds"], out["launchSeconds"],
            ", ".join("%s %.1f s" % (g["name"], g["seconds"]) for g in out["scenarios"])))
        return results

    def check_scenario(self, srv, s, got):
        name, r = s["name"], got["result"]
        self.assertTrue(r["ok"], "%s: the library reported an error: %s" % (name, r["message"]))
        total = flow_chunks(s["size"], s["chunkSize"], s.get("forceChunkSize", False))
        reqs = got["requests"]
        new = [e for e in reqs if e["phase"].endswith(":after")]
        for e in new:
            self.assertIsNone(e["error"], "%s: %r" % (name, e))
        posts = [e for e in new if e["method"] == "POST"]
        gets = [e for e in new if e["method"] == "GET"]
        for e in posts:
            self.assertEqual(e["status"], 200, "%s: %r" % (name, e))
        for e in gets:
            self.assertIn(e["status"], (200, 204), "%s: %r" % (name, e))
        every = set(range(1, total + 1))
        if s.get("reloadAfter"):
            old = [e for e in reqs if not e["phase"].endswith(":after")]
            stored_before = {e["chunk"] for e in old if e["method"] == "POST" and e["status"] == 200}
            found = {e["chunk"] for e in gets if e["status"] == 200}
            self.assertGreaterEqual(len(stored_before), s["reloadAfter"])
            # The reloaded page tested every chunk; every one stored before the reload was
            # found, and only the others were sent again, each once.
            self.assertEqual(sorted(e["chunk"] for e in gets), sorted(every), name)
            self.assertTrue(stored_before <= found, "%s: stored %s, found %s" % (name, stored_before, found))
            self.assertEqual(sorted(e["chunk"] for e in posts), sorted(every - found), name)
            self.assertLess(len(posts), total, name)
        else:
            # A fresh file: every chunk tested (204), then sent once.
            self.assertEqual(sorted(e["chunk"] for e in gets), sorted(every), name)
            self.assertEqual({e["status"] for e in gets}, {204}, name)
            self.assertEqual(sorted(e["chunk"] for e in posts), sorted(every), name)
        # The chunk that stored the last missing one answered with the file.
        replies = [json.loads(e["reply"]) for e in posts]
        done = [j for j in replies if j.get("status") == "complete"]
        self.assertTrue(done, "%s: no reply says complete: %r" % (name, replies[-3:]))
        file_id = done[0]["file_id"]
        for j in replies:
            self.assertEqual(j["file_id"], file_id, name)
            self.assertEqual(j["total_chunks"], total, name)
        j = done[0]
        self.assertEqual(j["total_size"], s["size"])
        self.assertEqual(j["filename"], s["fileName"])
        for key in ("final_path", "storage_backend", "completed_at", "identifier"):
            self.assertIn(key, j)
        # The seed's status agrees.
        st = self.assertOk(srv.status(file_id))
        self.assertEqual(st["status"], "complete")
        self.assertEqual(st["final_path"], j["final_path"])
        return {"reply": j, "sha256": r["sha256"]}

    def assertFilesStored(self, scenarios, results, path_of):
        """Each scenario's file, at the path path_of gives for its final_path, is the page's."""
        for s in scenarios:
            got = results[s["name"]]
            path = path_of(got["reply"]["final_path"])
            self.assertEqual(os.path.getsize(path), s["size"], s["name"])
            self.assertEqual(file_sha256(path), got["sha256"], "%s: stored bytes differ" % s["name"])


class BrowserChunkedLocalTest(BrowserChunkedMixin, ServerTestCase):

    def test_flow_and_resumable(self):
        srv = self.start_server()
        scenarios = [
            # 30 MiB + 12345 B: the last chunk takes the remainder (up to twice the chunk size).
            {"name": "flow", "library": "flow", "fileName": "movie.bin",
             "relativePath": "videos/2026/movie.bin", "size": SIZE + 12345, "seed": 11,
             "chunkSize": MIB, "simultaneousUploads": 3},
            {"name": "resumable", "library": "resumable", "fileName": "sound.bin",
             "size": SIZE + MIB - 1, "seed": 12, "chunkSize": MIB, "simultaneousUploads": 4},
            # forceChunkSize: every chunk the chunk size, the last one shorter.
            {"name": "flow-forced", "library": "flow", "fileName": "forced.bin",
             "size": SIZE + 12345, "seed": 13, "chunkSize": MIB, "forceChunkSize": True,
             "simultaneousUploads": 3},
            {"name": "flow-reload", "library": "flow", "fileName": "again.bin", "size": SIZE,
             "seed": 14, "chunkSize": MIB, "simultaneousUploads": 3, "reloadAfter": 10},
            {"name": "resumable-reload", "library": "resumable", "fileName": "again2.bin",
             "size": SIZE + 7, "seed": 15, "chunkSize": MIB, "simultaneousUploads": 3,
             "reloadAfter": 12},
        ]
        results = self.run_scenarios(srv, scenarios)
        self.assertFilesStored(scenarios, results, srv.resolve)
        self.assertEqual({r["reply"]["storage_backend"] for r in results.values()}, {"local"})
        # A relative path keeps its directory.
        self.assertIn("/videos/2026/", results["flow"]["reply"]["final_path"])
        self.assertTrue(results["flow"]["reply"]["final_path"].endswith("_movie.bin"))


class BrowserChunkedS3Test(BrowserChunkedMixin, S3TestCase):

    def test_flow_and_resumable_on_s3(self):
        s3 = self.start_s3()
        srv = self.start_s3_server(s3)
        scenarios = [
            {"name": "flow-s3", "library": "flow", "fileName": "s3.bin", "size": SIZE + 999,
             "seed": 21, "chunkSize": S3_CHUNK, "simultaneousUploads": 3},
            {"name": "resumable-s3-reload", "library": "resumable", "fileName": "s3again.bin",
             "size": SIZE, "seed": 22, "chunkSize": S3_CHUNK, "simultaneousUploads": 2,
             "reloadAfter": 2},
        ]
        results = self.run_scenarios(srv, scenarios)
        client = s3.client()
        for s in scenarios:
            got = results[s["name"]]
            prefix = "s3://%s/" % s3.bucket
            self.assertTrue(got["reply"]["final_path"].startswith(prefix), got["reply"])
            body = client.get_object(s3.bucket, got["reply"]["final_path"][len(prefix):])
            self.assertEqual(len(body), s["size"])
            self.assertEqual(hashlib.sha256(body).hexdigest(), got["sha256"], s["name"])
        self.assertNoMultipartUploads(s3)


class BrowserChunkedSmbTest(BrowserChunkedMixin, ServerTestCase):

    def test_flow_and_resumable_on_smb(self):
        smb = SmbServer()
        self.addCleanup(smb.destroy)
        smb.start()
        srv = self.start_server(env=smb.server_env())
        scenarios = [
            {"name": "flow-smb", "library": "flow", "fileName": "nas.bin",
             "relativePath": "shared/nas.bin", "size": SIZE, "seed": 31, "chunkSize": MIB,
             "simultaneousUploads": 3},
            {"name": "resumable-smb-reload", "library": "resumable", "fileName": "nas2.bin",
             "size": SIZE + 3, "seed": 32, "chunkSize": MIB, "simultaneousUploads": 3,
             "reloadAfter": 8},
        ]
        results = self.run_scenarios(srv, scenarios)
        self.assertFilesStored(scenarios, results, smb.url_to_path)
        self.assertIn("/shared/", results["flow-smb"]["reply"]["final_path"])


if __name__ == "__main__":
    import unittest
    unittest.main()
