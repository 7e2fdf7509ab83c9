"""A client that behaves as an attacker would: more uploads and bytes than it should hold,
sizes no disk has, names that squat where another upload's file must go, requests that try
to forge log lines; and the records such clients leave are pruned in time."""

import json
import os
import re
import resource
import shutil
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import API_KEY, CHUNK, RawConn, ServerTestCase, Trickler, request_head  # noqa: E402


class HostileClientTest(ServerTestCase):

    def test_open_uploads_per_owner(self):
        srv = self.start_server(env={"MAX_OPEN_UPLOADS": "3"})
        ids = [self.init_ok(srv, "q%d.bin" % i, 10)["file_id"] for i in range(3)]
        j = self.assertError(srv.init("q3.bin", 10), 429)
        self.assertIn("3 are open", j["error"])
        self.assertIn("at most 3", j["error"])
        # Ending one frees its place; completing does too.
        self.assertOk(srv.cancel(ids[0]))
        self.init_ok(srv, "q4.bin", 10)
        self.assertError(srv.init("q5.bin", 10), 429)

    def test_reserved_bytes_per_owner(self):
        srv = self.start_server(env={"MAX_RESERVED_BYTES": str(3 * CHUNK)})
        first = self.init_ok(srv, "r1.bin", 2 * CHUNK)
        j = self.assertError(srv.init("r2.bin", 2 * CHUNK), 507)
        self.assertIn(str(2 * CHUNK), j["error"])
        self.assertIn(str(3 * CHUNK), j["error"])
        self.init_ok(srv, "r3.bin", CHUNK)
        data = os.urandom(2 * CHUNK)
        self.upload_all(srv, first, data)
        self.complete_ok(srv, first["file_id"], data)
        self.init_ok(srv, "r4.bin", 2 * CHUNK)  # the completed one no longer holds its bytes

    def test_a_size_no_disk_has_is_refused_at_once(self):
        srv = self.start_server(env={"MAX_PARTS": "1000000", "CHUNK_SIZE_MB": "4096",
                                     "MAX_RESERVED_BYTES": "0"})
        t0 = time.time()
        j = self.assertError(srv.init("huge.bin", 10 ** 15), 507)  # 1 PB: 232,831 parts
        self.assertLess(time.time() - t0, 1.0, "no part tokens may be signed first")
        self.assertIn("Not enough space", j["error"])
        self.assertEqual(os.listdir(srv.staging), [])

    def test_a_file_too_large_for_the_filesystem_is_413(self):
        """The storage's filesystem (here the server's file size limit, RLIMIT_FSIZE) cannot
        hold the file: 413 at init, and the server lives on."""
        limit = 4 * CHUNK
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))  # inherited by the server
        try:
            srv = self.start_server()
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        j = self.assertError(srv.init("big.bin", 2 * limit), 413)
        self.assertIn("too large for the storage", j["error"])
        self.assertEqual(os.listdir(srv.staging), [])
        data = os.urandom(CHUNK)
        init = self.init_ok(srv, "small.bin", data)
        self.upload_all(srv, init, data)
        self.complete_ok(srv, init["file_id"], data)

    def test_a_name_cannot_squat_another_uploads_path(self):
        srv = self.start_server()
        data = os.urandom(CHUNK + 5)
        victim = self.init_ok(srv, "f.bin", data)
        squat = "%s_f.bin/x" % victim["file_id"]
        self.assertError(srv.init(squat, 10), 400, "upload id")
        self.assertError(srv.init("dir/%s_f.bin/x" % victim["file_id"], 10), 400, "upload id")
        self.upload_all(srv, victim, data)
        self.complete_ok(srv, victim["file_id"], data)

    def test_a_directory_at_the_final_path_is_a_conflict(self):
        """Something put a directory where the file must go: 409 saying so, the upload stays
        pending with its data, and completes once the directory is gone."""
        srv = self.start_server()
        data = os.urandom(CHUNK + 3)
        init = self.init_ok(srv, "d/blocked.bin", data)
        self.upload_all(srv, init, data)
        blocker = os.path.join(srv.files_dir, "d", "%s_blocked.bin" % init["file_id"])
        os.makedirs(os.path.join(blocker, "inside"))
        self.assertError(srv.complete(init["file_id"]), 409, "a directory is in the way")
        self.assertEqual(self.assertOk(srv.status(init["file_id"]))["status"], "pending")
        shutil.rmtree(blocker)
        self.complete_ok(srv, init["file_id"], data)

    def test_control_characters_cannot_forge_log_lines(self):
        srv = self.start_server()
        forged = "2026-01-01T00:00:00.000Z INFO  upload 1 complete"
        r = srv.request("GET", "/nope%0a" + forged.replace(" ", "%20") + "%0d", None,
                        {"X-API-Key": API_KEY})
        self.assertError(r, 404)
        time.sleep(0.2)
        log = srv.log_text()
        self.assertNotIn("\n" + forged, log)
        self.assertIn("\\x0a" + forged, log)

    def test_a_method_with_control_characters_reaches_the_log_escaped(self):
        srv = self.start_server()
        c = RawConn(srv.port)
        self.addCleanup(c.close)
        c.send(b"G\x1b[2J\x08ET /health%1b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        r = c.read_response(10)
        self.assertGreaterEqual(r.status, 400, r)
        time.sleep(0.2)
        log = srv.log_text()
        self.assertNotIn("\x1b", log, "an escape character reached the log raw")
        self.assertNotIn("\x08", log)
        self.assertIn("G\\x1b[2J\\x08ET /health\\x1b", log)

    def test_ended_uploads_are_pruned_after_the_retention_time(self):
        srv = self.start_server(env={"RETENTION_HOURS": "0.0005",  # 1.8 s
                                     "CLEANUP_INTERVAL_SECONDS": "0.5"})
        gone = self.init_ok(srv, "gone.bin", 10)["file_id"]
        kept = self.init_ok(srv, "kept.bin", 10)["file_id"]
        self.assertOk(srv.cancel(gone))
        self.assertError(srv.status(gone), 410)
        deadline = time.time() + 15
        while time.time() < deadline and srv.status(gone).status == 410:
            time.sleep(0.3)
        self.assertError(srv.status(gone), 404)  # forgotten
        self.assertEqual(self.assertOk(srv.status(kept))["status"], "pending")
        self.assertIn("pruned 1 ended upload", srv.log_text())

    def test_staging_data_no_record_owns_is_swept(self):
        srv = self.start_server(env={"ORPHAN_GRACE_SECONDS": "1", "CLEANUP_INTERVAL_SECONDS": "0.5"})
        live = self.init_ok(srv, "live.bin", 10)["file_id"]
        orphan = os.path.join(srv.staging, "%s.data" % uuid.uuid4())
        stranger = os.path.join(srv.staging, "notes.txt")
        for path in (orphan, stranger):
            with open(path, "wb") as f:
                f.write(b"x" * 100)
        deadline = time.time() + 10
        while time.time() < deadline and os.path.exists(orphan):
            time.sleep(0.2)
        self.assertFalse(os.path.exists(orphan), "an orphan staging file was left")
        self.assertTrue(os.path.exists(stranger), "a file that is not staging data was removed")
        self.assertTrue(os.path.exists(os.path.join(srv.staging, "%s.data" % live)))
        self.assertEqual(self.assertOk(srv.status(live))["status"], "pending")
        self.assertIn("staging data no upload owns", srv.log_text())

    def test_orphans_left_before_start_are_swept_at_start(self):
        """With the default cleanup interval (minutes), staging data no record owns that was
        already there when the server started goes at start, not at the first interval."""
        srv = self.start_server()
        srv.stop()
        old = time.time() - 2 * 3600  # older than ORPHAN_GRACE_SECONDS (1 hour)
        orphan = os.path.join(srv.staging, "%s.data" % uuid.uuid4())
        young = os.path.join(srv.staging, "%s.data" % uuid.uuid4())
        for path in (orphan, young):
            with open(path, "wb") as f:
                f.write(b"x" * 100)
        os.utime(orphan, (old, old))
        srv.start()
        deadline = time.time() + 5
        while time.time() < deadline and os.path.exists(orphan):
            time.sleep(0.1)
        self.assertFalse(os.path.exists(orphan), "an orphan older than the grace time was left at start")
        self.assertTrue(os.path.exists(young), "an orphan younger than the grace time was removed")

    def test_a_stalled_part_is_taken_over_by_the_retry(self):
        srv = self.start_server(env={"PART_STALL_SECONDS": "1"})
        data = os.urandom(CHUNK)
        init = self.init_ok(srv, "stall.bin", data)
        token = init["parts"][0]["token"]
        path = "/upload/%s/part/0" % init["file_id"]
        # A client that sends half its part and then nothing, its connection left open.
        stalled = RawConn(srv.port)
        stalled.send(request_head("PUT", path, {"Authorization": "Bearer " + token,
                                                "Content-Length": str(CHUNK)}))
        stalled.send(os.urandom(CHUNK // 2))
        time.sleep(0.3)
        self.assertError(srv.put_part(init["file_id"], 0, token, data), 409)  # still fresh
        time.sleep(1.2)
        self.assertOk(srv.put_part(init["file_id"], 0, token, data))  # taken over
        # The stalled client wakes up: it is refused and its bytes go nowhere.
        stalled.try_send(os.urandom(CHUNK // 2))
        r = stalled.read_response(10)
        self.assertEqual(r.status, 409, r)
        stalled.close()
        self.complete_ok(srv, init["file_id"], data)

    def test_a_trickling_part_is_taken_over_by_the_retry(self):
        """A byte every 0.2 s keeps a connection busy (and with BODY_MIN_RATE=0 nothing else
        ends it), but it is too little progress to keep the part from the real client."""
        srv = self.start_server(env={"PART_STALL_SECONDS": "1", "BODY_MIN_RATE": "0"})
        data = os.urandom(CHUNK)
        init = self.init_ok(srv, "trickle.bin", data)
        token = init["parts"][0]["token"]
        trickling = RawConn(srv.port)
        self.addCleanup(trickling.close)
        trickling.send(request_head("PUT", "/upload/%s/part/0" % init["file_id"],
                                    {"Authorization": "Bearer " + token, "Content-Length": str(CHUNK)}))
        trickler = Trickler(trickling, 0.2)
        self.addCleanup(trickler.stop)
        time.sleep(0.3)
        self.assertError(srv.put_part(init["file_id"], 0, token, data), 409)  # still fresh
        time.sleep(1.2)
        self.assertGreater(trickler.sent, 3, "the trickle did not go on")
        self.assertOk(srv.put_part(init["file_id"], 0, token, data))  # taken over
        trickler.stop()
        trickling.try_send(b"t" * (CHUNK - trickler.sent))  # the rest: refused, written nowhere
        r = trickling.read_response(10)
        self.assertEqual(r.status, 409, r)
        self.complete_ok(srv, init["file_id"], data)


if __name__ == "__main__":
    import unittest
    unittest.main()
