"""The database as the server finds it in the field: held locked by another process (a
backup, an operator's sqlite3 shell), or not writable at all. Reads go on, writes answer 503
with Retry-After within a bounded wait, /health/ready tells a load balancer, and a file that
cannot be written stops the server at start with a clear line instead of failing later."""

import concurrent.futures
import os
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ServerTestCase  # noqa: E402


class DatabaseTest(ServerTestCase):

    def test_held_by_another_process(self):
        srv = self.start_server()
        fid = self.init_ok(srv, "held.bin", 10)["file_id"]
        self.assertEqual(self.assertOk(srv.request("GET", "/health/ready"))["status"], "ready")
        other = sqlite3.connect(os.path.join(srv.tmp, "uploads.db"), timeout=1,
                                isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # the write lock, held
        try:
            t0 = time.time()
            self.assertOk(srv.status(fid))  # reads are not held up
            self.assertLess(time.time() - t0, 1.0)
            t0 = time.time()
            r = srv.request("GET", "/health/ready", timeout=20)
            self.assertError(r, 503, "busy")
            self.assertLess(time.time() - t0, 5.0)
            # Three writers at once: each answers within the bound, not one after the other.
            def init(i):
                t0 = time.time()
                r = srv.request("POST", "/upload/init",
                                {"filename": "blocked%d.bin" % i, "total_size": 10},
                                srv.api_headers(), timeout=60)
                return r, time.time() - t0
            with concurrent.futures.ThreadPoolExecutor(3) as ex:
                results = list(ex.map(init, range(3)))
            for r, waited in results:
                self.assertError(r, 503, "busy")
                self.assertEqual(r.headers.get("retry-after"), "2")
                self.assertLess(waited, 14.0, "a writer must answer within about 10 s")
        finally:
            other.execute("ROLLBACK")
            other.close()
        self.assertEqual(self.assertOk(srv.request("GET", "/health/ready"))["status"], "ready")
        self.init_ok(srv, "free.bin", 10)

    def test_a_database_that_cannot_be_written_stops_the_start(self):
        srv = self.start_server()
        self.init_ok(srv, "x.bin", 10)
        srv.stop()
        db = os.path.join(srv.tmp, "uploads.db")
        if subprocess.run(["chattr", "+i", db], capture_output=True).returncode != 0:
            self.fail("chattr +i is not available here")
        self.addCleanup(subprocess.run, ["chattr", "-i", db], capture_output=True)
        rc, out, err, _ = self.run_binary(tmpdir=srv.tmp)
        self.assertEqual(rc, 2, err)
        self.assertIn("DATABASE_PATH", err)
        self.assertIn("cannot be written", err)


if __name__ == "__main__":
    import unittest
    unittest.main()
