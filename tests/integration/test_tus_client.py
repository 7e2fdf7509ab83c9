"""tus-js-client (npm, tests/js/node_modules, unchanged) against the real server, on local
storage, S3 (s3rver behind tests/s3/launcher.js) and SMB (a private smbd): one stream in small
chunks, parallelUploads: 4 (partial uploads joined by a final one), abort and resume from the
URL tus-js-client stored under the file's fingerprint (and from uploadUrl), and termination.
Each result is read back from the store independently (the local file, the S3 object through
the AWS SDK, the SMB file through smbclient) and compared byte for byte; nothing of the
partial uploads or of staging may be left behind.

The client runs in Node (tests/js/tus_upload.js), one process per run; the abort and resume
test uses two processes, as a page reload or a restarted program would."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import API_KEY, REPO, S3TestCase, ServerTestCase, base_env, sha256_hex  # noqa: E402
from test_smb import SmbTestCase  # noqa: E402

JS = os.path.join(REPO, "tests", "js")
DRIVER = os.path.join(JS, "tus_upload.js")


def node():
    n = shutil.which("node")
    if not n:
        raise AssertionError("node not found: these tests need Node.js 20+")
    if not os.path.isdir(os.path.join(JS, "node_modules", "tus-js-client")):
        raise AssertionError("tests/js/node_modules/tus-js-client missing: run make test-servers")
    return n


class TusClientCases(object):
    """The scenarios; a subclass says how to start a server on its backend and how to read a
    finished file and the leftovers back from the store."""

    size = 3 * 1024 * 1024 + 12345
    chunk = 256 * 1024

    # -- to be provided
    def start_tus_server(self):
        raise NotImplementedError

    def stored_bytes(self, srv, final_path):
        raise NotImplementedError

    def leftovers(self, srv):
        """Objects of the store that are neither a finished file nor expected."""
        raise NotImplementedError

    def stored_files(self, srv):
        raise NotImplementedError

    # -- helpers
    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="cu-tus-js-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.data = os.urandom(self.size)
        self.src = os.path.join(self.tmp, "source.bin")
        with open(self.src, "wb") as f:
            f.write(self.data)

    def client(self, srv, timeout=300, **opts):
        o = {"endpoint": "http://127.0.0.1:%d/files/" % srv.port, "file": self.src, "apiKey": API_KEY,
             "chunkSize": self.chunk}
        o.update(opts)
        p = subprocess.run([node(), DRIVER, json.dumps(o)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout, env=dict(base_env(), NODE_NO_WARNINGS="1"), cwd=JS)
        out = p.stdout.decode("utf-8", "replace").strip().splitlines()
        try:
            res = json.loads(out[-1])
        except (IndexError, ValueError):
            raise AssertionError("tus_upload.js printed no result (exit %d): %s %s"
                                 % (p.returncode, p.stdout[-2000:], p.stderr[-3000:]))
        if p.returncode != 0 or not res["ok"]:
            raise AssertionError("tus-js-client failed: %r\n%s" % (res, p.stderr.decode()[-3000:]))
        return res

    def file_id(self, url):
        fid = url.rsplit("/", 1)[1]
        uuid.UUID(fid)
        return fid

    def assertStored(self, srv, res, name):
        fid = self.file_id(res["url"])
        j = self.assertOk(srv.status(fid))
        self.assertEqual((j["status"], j["filename"], j["total_size"]), ("complete", name, len(self.data)), j)
        got = self.stored_bytes(srv, j["final_path"])
        self.assertEqual(len(got), len(self.data))
        self.assertTrue(got == self.data, "stored %s differs (sha256 %s, sent %s)"
                        % (j["final_path"], sha256_hex(got), sha256_hex(self.data)))
        self.assertEqual(self.leftovers(srv), [], "left behind after the upload")
        return fid, j

    def head(self, srv, fid):
        return srv.request("HEAD", "/files/" + fid, None, {"Tus-Resumable": "1.0.0", "X-API-Key": API_KEY})

    # -- the scenarios
    def test_one_stream_small_chunks(self):
        srv = self.start_tus_server()
        res = self.client(srv, metadata={"filename": "tus/one/stream.bin", "filetype": "application/octet-stream"})
        fid, j = self.assertStored(srv, res, "stream.bin")
        self.assertIn("tus/one/%s_stream.bin" % fid, j["final_path"])
        # The API key as a bearer token works the same.
        res = self.client(srv, bearer=True, chunkSize=self.size, metadata={"name": "whole.bin"})
        self.assertStored(srv, res, "whole.bin")

    def test_parallel_uploads(self):
        srv = self.start_tus_server()
        res = self.client(srv, parallelUploads=4, metadata={"filename": "par/four.bin"})
        fid, j = self.assertStored(srv, res, "four.bin")
        h = self.head(srv, fid)
        self.assertTrue(h.headers.get("upload-concat", "").startswith("final;"), h.headers)
        parts = h.headers["upload-concat"][6:].split(" ")
        self.assertEqual(len(parts), 4)
        for url in parts:
            self.assertEqual(self.head(srv, self.file_id(url)).status, 410, "a partial upload survived")
        self.assertEqual(self.stored_files(srv), [j["final_path"]], "partial uploads stored as files")

    def test_abort_then_resume_from_the_stored_url(self):
        srv = self.start_tus_server()
        storage = os.path.join(self.tmp, "tus-urls.json")
        first = self.client(srv, urlStorage=storage, abortAt=self.size // 3, metadata={"filename": "resumed.bin"})
        self.assertTrue(first["aborted"])
        fid = self.file_id(first["url"])
        at = int(self.head(srv, fid).headers["upload-offset"])
        self.assertGreaterEqual(at, self.size // 3)
        self.assertLess(at, self.size)
        second = self.client(srv, urlStorage=storage, resume=True, metadata={"filename": "resumed.bin"})
        self.assertEqual(second["previous"], 1, "tus-js-client found no stored upload")
        self.assertEqual(second["url"], first["url"], "a new upload was made instead of resuming")
        self.assertEqual(second["resumedFrom"], at)
        self.assertStored(srv, second, "resumed.bin")

    def test_resume_with_upload_url(self):
        srv = self.start_tus_server()
        first = self.client(srv, abortAt=self.chunk * 3, metadata={"filename": "by-url.bin"})
        second = self.client(srv, uploadUrl=first["url"])
        self.assertEqual(second["url"], first["url"])
        self.assertGreaterEqual(second["resumedFrom"], self.chunk * 3)
        self.assertStored(srv, second, "by-url.bin")

    def test_termination(self):
        srv = self.start_tus_server()
        res = self.client(srv, abortAt=self.chunk * 2, terminate=True, metadata={"filename": "gone.bin"})
        self.assertTrue(res["terminated"])
        fid = self.file_id(res["url"])
        self.assertEqual(self.head(srv, fid).status, 410)
        self.assertEqual(self.leftovers(srv), [])
        self.assertEqual(self.stored_files(srv), [])


class LocalTusClientTest(TusClientCases, ServerTestCase):

    def start_tus_server(self):
        return self.start_server()

    def stored_bytes(self, srv, final_path):
        with open(srv.resolve(final_path), "rb") as f:
            return f.read()

    def leftovers(self, srv):
        return sorted(os.listdir(srv.staging)) if os.path.isdir(srv.staging) else []

    def stored_files(self, srv):
        return sorted(os.path.join(d, f) for d, _, fs in os.walk(srv.files_dir) for f in fs)


class S3TusClientTest(TusClientCases, S3TestCase):
    # Chunks below S3's 5 MiB part minimum, and partial uploads of 3 MiB, go through the spool.
    size = 12 * 1024 * 1024 + 777
    chunk = 1024 * 1024

    def start_tus_server(self):
        self.s3 = self.start_s3()
        return self.start_s3_server(self.s3)

    def stored_bytes(self, srv, final_path):
        prefix = "s3://%s/" % self.s3.bucket
        self.assertTrue(final_path.startswith(prefix), final_path)
        return self.s3.client().get_object(self.s3.bucket, final_path[len(prefix):])

    def leftovers(self, srv):
        return self.s3.client().list_multipart_uploads(self.s3.bucket) + self.spool_files(srv)

    def stored_files(self, srv):
        return sorted("s3://%s/%s" % (self.s3.bucket, o["Key"])
                      for o in self.s3.client().list_objects(self.s3.bucket))


class SmbTusClientTest(TusClientCases, SmbTestCase):

    def start_tus_server(self):
        self.smb_path = "tus-" + uuid.uuid4().hex[:8]
        return self.start_smb_server(self.smb_path)

    def stored_bytes(self, srv, final_path):
        prefix = "smb://%s/%s/" % (self.smb.host, self.smb.share)
        self.assertTrue(final_path.startswith(prefix), final_path)
        return self.smb.fetch(final_path[len(prefix):])

    def leftovers(self, srv):
        return self.staging(self.smb_path)

    def stored_files(self, srv):
        prefix = self.smb.share_dir + os.sep
        return sorted("smb://%s/%s/%s" % (self.smb.host, self.smb.share, f[len(prefix):])
                      for f in self.final_files(self.smb_path))
