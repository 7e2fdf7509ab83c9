"""Expiry: incomplete uploads expire after UPLOAD_TTL_HOURS and the reaper removes their
data; complete uploads never expire."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import CHUNK, ServerTestCase, file_sha256, rfc3339_to_epoch, sha256_hex, split_parts  # noqa: E402

TTL_ENV = {"UPLOAD_TTL_HOURS": "0.0005", "CLEANUP_INTERVAL_SECONDS": "0.5"}  # 1.8 s


def staged_files(srv):
    return [os.path.join(d, f) for d, _, fs in os.walk(srv.staging) for f in fs]


class ExpiryTest(ServerTestCase):

    def test_incomplete_upload_expires(self):
        srv = self.start_server(env=TTL_ENV)
        data = os.urandom(2 * CHUNK + 10)
        parts = split_parts(data)
        t0 = time.time()
        init = self.init_ok(srv, "exp/soon.bin", data)
        fid = init["file_id"]
        exp = rfc3339_to_epoch(init["expires_at"])
        self.assertAlmostEqual(exp, t0 + 1.8, delta=2.0, msg="expires_at is not now + 1.8 s")
        self.assertOk(srv.put_part(fid, 0, init["parts"][0]["token"], parts[0]))
        self.assertTrue(staged_files(srv), "no staging data after a part was uploaded")
        time.sleep(4)
        r = srv.status(fid)
        j = self.assertError(r, (404, 410))
        if r.status == 410:
            self.assertIn("expired", j["error"].lower())
        self.assertEqual(staged_files(srv), [], "staging data of the expired upload is still there")
        self.assertError(srv.put_part_raw(fid, 1, init["parts"][1]["token"], parts[1]), (404, 410))
        self.assertError(srv.complete(fid), (404, 410))
        self.assertEqual([f for _, _, fs in os.walk(srv.files_dir) for f in fs], [])

    def test_expired_before_reaper_runs(self):
        """With the reaper far away, an expired upload answers 410 'Upload expired'."""
        srv = self.start_server(env={"UPLOAD_TTL_HOURS": "0.0005", "CLEANUP_INTERVAL_SECONDS": "3600"})
        data = os.urandom(CHUNK + 10)
        parts = split_parts(data)
        init = self.init_ok(srv, "exp.bin", data)
        fid = init["file_id"]
        self.assertOk(srv.put_part(fid, 0, init["parts"][0]["token"], parts[0]))
        time.sleep(3)
        self.assertError(srv.status(fid), 410, contains="Upload expired")
        self.assertError(srv.put_part_raw(fid, 1, init["parts"][1]["token"], parts[1]), 410, contains="expired")
        self.assertError(srv.complete(fid), 410)

    def test_completed_upload_never_expires(self):
        srv = self.start_server(env=TTL_ENV)
        data = os.urandom(CHUNK + 999)
        init = self.init_ok(srv, "keep/me.bin", data)
        self.upload_all(srv, init, data)
        c = self.complete_ok(srv, init["file_id"], data)
        time.sleep(4)
        st = self.assertOk(srv.status(init["file_id"]))
        self.assertEqual(st["status"], "complete")
        self.assertEqual(st["final_path"], c["final_path"])
        self.assertEqual(file_sha256(srv.resolve(c["final_path"])), sha256_hex(data))
        self.assertEqual(self.assertOk(srv.complete(init["file_id"])), c)


if __name__ == "__main__":
    import unittest
    unittest.main()
