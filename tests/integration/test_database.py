"""The database as the server finds it in the field: held locked by another process (a
backup, an operator's sqlite3 shell), or not writable at all. Reads go on, writes answer 503
with Retry-After within a bounded wait, /health/ready tells a load balancer, and a file that
cannot be written stops the server at start with a clear line instead of failing later."""

import concurrent.futures
import os
import sqlite3
import subprocess
import sys
import tempfile
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

    def small_disk(self, size):
        """A tmpfs of `size` (root: the tests run as root), unmounted at the end."""
        mnt = tempfile.mkdtemp(prefix="cu-it-dbdisk-")
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s" % size, "tmpfs", mnt], check=True)
        self.addCleanup(os.rmdir, mnt)
        self.addCleanup(subprocess.run, ["umount", "-l", mnt], capture_output=True)
        return mnt

    def test_a_full_database_disk(self):
        """The database's disk fills: writers answer 507 (not 500), reads go on, /health/ready
        says the database cannot take writes; once there is room again, all is as before."""
        mnt = self.small_disk("1m")
        srv = self.start_server(env={"DATABASE_PATH": os.path.join(mnt, "uploads.db")})
        fid = self.init_ok(srv, "first.bin", 10)["file_id"]
        meta = "x" * 900
        full = None
        for i in range(5000):
            r = srv.init("f%05d-%s.bin" % (i, meta[:200]), 10)
            if r.status != 200:
                full = r
                break
        self.assertIsNotNone(full, "the database's disk never filled")
        self.assertError(full, 507, "full")
        self.assertEqual(self.assertOk(srv.status(fid))["status"], "pending")  # reads go on
        self.assertError(srv.init("more.bin", 10), 507, "full")
        self.assertError(srv.request("GET", "/health/ready"), 503, "full")
        self.assertEqual(srv.proc.poll(), None)
        subprocess.run(["mount", "-o", "remount,size=16m", mnt], check=True)
        self.init_ok(srv, "room-again.bin", 10)
        self.assertEqual(self.assertOk(srv.request("GET", "/health/ready"))["status"], "ready")
        self.assertNotIn("500 ", srv.log_text())

    def chattr(self, flag, *paths):
        for p in paths:
            if os.path.exists(p) and subprocess.run(["chattr", flag, p], capture_output=True).returncode != 0:
                self.fail("chattr %s is not available here" % flag)

    def test_a_database_made_read_only_while_running(self):
        """The database's files become immutable (chattr +i) under the running server:
        writers get a clear 503 and reads go on while the database file and its WAL are;
        once the WAL index (-shm) is too, which every transaction writes to (SQLite maps it,
        and the kernel answers a write to an immutable mapping with SIGBUS), every request
        gets the 503, and the server lives. All works again once the files are writable."""
        srv = self.start_server()
        fid = self.init_ok(srv, "before.bin", 10)["file_id"]
        db = os.path.join(srv.tmp, "uploads.db")
        files = [db, db + "-wal", db + "-shm"]
        self.addCleanup(self.chattr, "-i", *files)
        self.chattr("+i", db, db + "-wal")
        for i in range(3):
            self.assertError(srv.init("after%d.bin" % i, 10), 503, "cannot be written")
        self.assertEqual(self.assertOk(srv.status(fid))["status"], "pending")
        self.assertError(srv.request("GET", "/health/ready"), 503, "cannot be written")
        self.chattr("+i", db + "-shm")
        for i in range(3):
            self.assertError(srv.status(fid), 503, "cannot be written")
            self.assertError(srv.init("shm%d.bin" % i, 10), 503, "cannot be written")
        self.assertError(srv.request("GET", "/health/ready"), 503, "cannot be written")
        self.assertEqual(self.assertOk(srv.request("GET", "/health"))["status"], "ok")
        self.assertEqual(srv.proc.poll(), None, "the server died")
        self.chattr("-i", *files)
        self.init_ok(srv, "writable-again.bin", 10)
        self.assertEqual(self.assertOk(srv.request("GET", "/health/ready"))["status"], "ready")
        log = srv.log_text()
        self.assertEqual(log.count("is immutable or append-only (chattr)"), 2, log)  # once a change
        self.assertIn("its files can be written again", log)

if __name__ == "__main__":
    import unittest
    unittest.main()
