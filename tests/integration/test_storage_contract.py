"""The storage contract (tests/contract/storage_contract.c) against every backend, each on
its real server: local disk, S3 (s3rver behind the SigV4-checking launcher) and SMB (smbd).

The contract binary is configured exactly like the server (STORAGE_BACKEND and the
backend's variables) and runs the same suite whichever backend it gets."""

import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import REPO, SANITIZER_MARKERS, S3Server, SmbServer, base_env  # noqa: E402

CONTRACT = os.environ.get("CU_CONTRACT_BINARY") or os.path.join(REPO, "build", "storage_contract")


class StorageContractTest(unittest.TestCase):

    def run_contract(self, env, timeout=300):
        self.assertTrue(os.access(CONTRACT, os.X_OK), "contract binary not built: %s" % CONTRACT)
        full = base_env()
        full.update(env)
        p = subprocess.run([CONTRACT], env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout)
        out = p.stdout.decode("utf-8", "replace")
        for marker in SANITIZER_MARKERS:
            self.assertNotIn(marker, out, out[-8000:])
        self.assertEqual(p.returncode, 0, "contract failed for %s:\n%s"
                         % (env.get("STORAGE_BACKEND"), out[-8000:]))
        self.assertIn("[  PASSED  ] 14 test(s)", out, out[-4000:])
        return out

    def test_local(self):
        with tempfile.TemporaryDirectory() as tmp:
            for durability in ("fsync", "none"):
                with self.subTest(durability=durability):
                    out = self.run_contract({"STORAGE_BACKEND": "local",
                                             "LOCAL_STORAGE_PATH": os.path.join(tmp, durability),
                                             "DURABILITY": durability, "CONTRACT_SPACE_OF": tmp})
                    self.assertIn("local storage: read, zero-copy read, remove, concatenate, "
                                  "deferred length, append, read staging, free space, sweep", out)

    def test_smb(self):
        smb = SmbServer()
        self.addCleanup(smb.destroy)
        smb.start()
        before = smb.profile()
        env = {k: v for k, v in smb.server_env("contract").items() if v is not None}
        env["CONTRACT_SPACE_OF"] = smb.share_dir
        out = self.run_contract(env)
        self.assertIn("smb storage: read, remove, concatenate, deferred length, append, read "
                      "staging, free space, sweep", out)
        # Concatenation copied on the server instead of reading the sources through the
        # process: per source an FSCTL_SRV_REQUEST_RESUME_KEY and at least one
        # FSCTL_SRV_COPYCHUNK_WRITE, SMB2 IOCTLs (test_concatenate has 3 sources; the rest
        # of the suite sends one IOCTL, a copy through the process none more).
        ioctls = smb.profile()["smb2_ioctl_count"] - before["smb2_ioctl_count"]
        self.assertGreaterEqual(ioctls, 2 * 3, "no server-side copy: %d SMB2 IOCTLs" % ioctls)

    def test_s3(self):
        s3 = S3Server()
        self.addCleanup(s3.destroy)
        s3.start()
        spool = os.path.join(s3.tmp, "spool")
        env = {k: v for k, v in s3.server_env(TEMP_STORAGE_PATH=spool).items() if v is not None}
        out = self.run_contract(env)
        self.assertIn("s3 storage: read, remove, concatenate, deferred length, append, sweep", out)
        # Every staged upload was finished or aborted: nothing is left half done, in S3 or in
        # the spool, and concatenation sources are gone with their abort.
        c = s3.client()
        self.assertEqual(c.list_multipart_uploads(s3.bucket), [], "multipart uploads left behind")
        left = sorted(os.path.join(d, f) for d, _, fs in os.walk(spool) for f in fs)
        self.assertEqual(left, [], "spool files left behind")
        keys = [o["Key"] for o in c.list_objects(s3.bucket)]
        self.assertEqual([k for k in keys if k.endswith("_partial")], [],
                         "concatenation sources not removed by their abort")
        self.assertTrue(any(k.endswith("_concatenated.bin") for k in keys), keys)

if __name__ == "__main__":
    unittest.main()
