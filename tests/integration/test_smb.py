"""SMB backend (STORAGE_BACKEND=smb) against a private Samba smbd started by the harness.

The contract: one staging file per upload under <share>/<SMB_PATH>/.staging/, each part
written at its offset as it streams in; complete renames it to
<share>/<SMB_PATH>/<dir>/<file_id>_<name>; final_path is smb://<host>/<share>/<path> (no
double slashes); storage_backend is smb. A dropped connection to the NAS is reconnected on
the next request. Wrong credentials, unknown share or unreachable host at start: exit 2
with a line saying which. Files are checked byte for byte on the share's directory on disk
(and once over SMB with smbclient).

Parts are written by SMB_WORKERS worker processes (each with its own libsmbclient), so
several reach smbd at once; the flow and robustness tests run again with SMB_WORKERS=0,
where every SMB call is made from the server process, one at a time."""

import concurrent.futures
import os
import random
import shutil
import signal
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (CHUNK, RawConn, ServerTestCase, SmbLatencyProxy, SmbServer, Trickler, UUID_RE,  # noqa: E402
                     file_sha256, free_port, live_processes, proc_stat, request_head, sha256_hex,
                     split_parts)

TTL_ENV = {"UPLOAD_TTL_HOURS": "0.0005", "CLEANUP_INTERVAL_SECONDS": "0.5"}  # 1.8 s
STARTUP_LIMIT = 10.0  # seconds within which a start-up error must end the process
COMPLETE_KEYS = {"file_id", "filename", "total_size", "status", "final_path", "storage_backend", "completed_at"}


def slow_put(port, fid, n, token, body, piece=128 * 1024, delay=0.004, on_first=None):
    """PUT a part in slices a little apart, so that it is really in flight."""
    c = RawConn(port, timeout=30)
    try:
        c.send(request_head("PUT", "/upload/%s/part/%d" % (fid, n),
                            {"Authorization": "Bearer " + token, "Content-Type": "application/octet-stream",
                             "Content-Length": str(len(body))}))
        for i in range(0, len(body), piece):
            c.send(body[i:i + piece])
            if i == 0 and on_first:
                on_first()
            time.sleep(delay)
        return c.read_response(30)
    finally:
        c.close()


class SmbTestCase(ServerTestCase):
    """One smbd for the whole class (each test uses its own SMB_PATH below the share);
    tests that kill smbd start their own. mode_env is added to every server's environment
    (the classes that run again without workers set SMB_WORKERS=0 there)."""

    mode_env = {}

    @classmethod
    def setUpClass(cls):
        smb = SmbServer()
        cls.addClassCleanup(smb.destroy)
        smb.start()
        cls.smb = smb

    def setUp(self):
        self.addCleanup(self._keep_smb_log, self.smb)

    def _keep_smb_log(self, smb):
        if not hasattr(self, "_log_tails"):
            self._log_tails = []
        self._log_tails.append(("smbd " + smb.tmp, smb.log_tail(30)))

    def own_smb(self):
        smb = SmbServer()
        self.addCleanup(smb.destroy)
        self.addCleanup(self._keep_smb_log, smb)
        smb.start()
        return smb

    def start_smb_server(self, smb_path, smb=None, env=None):
        smb = smb or self.smb
        e = smb.server_env(smb_path)
        e.update(self.mode_env)
        e.update(env or {})
        return self.start_server(env=e)

    def worker_pids(self, srv):
        """The server's child processes (its SMB workers; it starts no others)."""
        return sorted(pid for pid, ppid, _ in live_processes() if ppid == srv.proc.pid)

    # -- share helpers
    def staging(self, smb_path, smb=None):
        return (smb or self.smb).files_under(smb_path, ".staging")

    def final_files(self, smb_path, smb=None):
        """Files below SMB_PATH that are not staging files."""
        smb = smb or self.smb
        stage = smb.path(smb_path, ".staging") + os.sep
        return [f for f in smb.files_under(smb_path) if not f.startswith(stage)]

    def assertSmbComplete(self, c, fid, name, size, rel_dir, smb_path, smb=None):
        """Checks a complete reply's final_path (exact smb:// URL) and returns the file's
        path on the share's directory."""
        smb = smb or self.smb
        self.assertEqual(set(c.keys()), COMPLETE_KEYS, repr(c))
        self.assertEqual(c["file_id"], fid)
        self.assertEqual(c["filename"], name)
        self.assertIntField(c, "total_size", size)
        self.assertEqual(c["status"], "complete")
        self.assertEqual(c["storage_backend"], "smb")
        self.assertRfc3339(c["completed_at"])
        want_url = smb.url(smb_path, rel_dir, fid + "_" + name)
        self.assertEqual(c["final_path"], want_url,
                         "final_path must be smb://<host>/<share>/<SMB_PATH>/<dir>/<id>_<name>")
        self.assertNotIn("//", c["final_path"][len("smb://"):], "double slash in final_path")
        path = smb.path(smb_path, rel_dir, fid + "_" + name)
        self.assertTrue(os.path.isfile(path), "final file missing on the share: %s (share has %r)"
                        % (path, smb.files_under()))
        return path

    def assertShareFile(self, path, data):
        self.assertEqual(os.path.getsize(path), len(data), "size of %s" % path)
        self.assertEqual(file_sha256(path), sha256_hex(data), "%s differs from the source" % path)

    def put_retrying_409(self, srv, fid, n, token, body, limit=5.0):
        """PUT a part; a 409 (the server still busy with a dropped request for the same
        part) is retried for a few seconds."""
        deadline = time.time() + limit
        while True:
            r = srv.put_part(fid, n, token, body)
            if r.status != 409 or time.time() > deadline:
                return r
            time.sleep(0.1)


class SmbFlowTest(SmbTestCase):

    def test_health_reports_smb(self):
        srv = self.start_smb_server("health")
        j = self.assertOk(srv.request("GET", "/health"))
        self.assertEqual(j.get("status"), "ok")
        self.assertEqual(j.get("storage_backend"), "smb")

    def test_full_flow_parallel_parts(self):
        smb_path = "flow"
        srv = self.start_smb_server(smb_path)
        data = os.urandom(5 * CHUNK + 123457)
        parts = split_parts(data)
        init = self.init_ok(srv, "videos/2024/movie.mp4", data)
        fid = init["file_id"]
        self.assertRegex(fid, UUID_RE)
        self.assertEqual(init["filename"], "movie.mp4")
        tokens = [p["token"] for p in init["parts"]]

        # two parts out of order: one staging file on the share, each part at its offset
        for n in (3, 0):
            j = self.assertOk(srv.put_part(fid, n, tokens[n], parts[n]), "(part %d)" % n)
            self.assertEqual(j["checksum_sha256"], sha256_hex(parts[n]))
        staged = self.staging(smb_path)
        self.assertEqual(len(staged), 1, "expected one staging file under <share>/%s/.staging/: %r"
                         % (smb_path, self.smb.files_under()))
        with open(staged[0], "rb") as f:
            for n in (3, 0):
                f.seek(n * CHUNK)
                self.assertEqual(f.read(len(parts[n])), parts[n],
                                 "part %d is not at offset %d of the staging file" % (n, n * CHUNK))
        self.assertEqual(self.final_files(smb_path), [], "a final file exists before complete")
        st = self.assertOk(srv.status(fid))
        self.assertEqual(st["uploaded_parts"], 2)
        self.assertEqual(st["status"], "pending")

        # complete with parts missing
        self.assertError(srv.complete(fid), 400, contains="Not all parts uploaded: 2/6")

        # the rest in parallel
        self.upload_all(srv, init, data, threads=4, skip=(0, 3))
        self.assertEqual(self.staging(smb_path), staged, "still one staging file per upload")
        staged_ino = os.stat(staged[0]).st_ino

        c = self.assertOk(srv.complete(fid))
        path = self.assertSmbComplete(c, fid, "movie.mp4", len(data), "videos/2024", smb_path)
        self.assertShareFile(path, data)
        self.assertEqual(os.stat(path).st_ino, staged_ino, "complete copied the staging file instead of renaming it")
        self.assertEqual(self.staging(smb_path), [], "staging file left after complete")
        self.assertEqual(self.final_files(smb_path), [path])
        # read back over SMB too (independent client)
        self.assertEqual(sha256_hex(self.smb.fetch("%s/videos/2024/%s_movie.mp4" % (smb_path, fid))),
                         sha256_hex(data), "file read back with smbclient differs")

        st = self.assertOk(srv.status(fid))
        self.assertEqual(st["status"], "complete")
        self.assertEqual(st["final_path"], c["final_path"])
        self.assertEqual(st["storage_backend"], "smb")
        self.assertError(srv.put_part_raw(fid, 1, tokens[1], parts[1]), 409)
        self.assertShareFile(path, data)

    def test_parts_reach_the_share_in_large_writes(self):
        """The HTTP layer hands a body over in pieces of tens of KiB; the writer gathers them,
        so an 8 MiB part reaches smbd in a few large SMB2 WRITEs (each one round trip, in a
        worker or under the one libsmbclient lock), not in hundreds of small ones."""
        smb_path = "bigwrites"
        srv = self.start_smb_server(smb_path, env={"CHUNK_SIZE_MB": "8"})
        data = os.urandom(8 * CHUNK + 4321)
        init = self.assertOk(srv.init("big.bin", len(data)))
        self.assertEqual(init["total_parts"], 2)
        tokens = [p["token"] for p in init["parts"]]
        before = self.smb.profile()
        j = self.assertOk(srv.put_part(init["file_id"], 0, tokens[0], data[:8 * CHUNK]))
        self.assertEqual(j["checksum_sha256"], sha256_hex(data[:8 * CHUNK]))
        after = self.smb.profile()
        sent = after["smb2_write_inbytes"] - before["smb2_write_inbytes"]
        self.assertGreaterEqual(sent, 8 * CHUNK, "smbd counted fewer bytes written than the part has")
        writes = after["smb2_write_count"] - before["smb2_write_count"]
        self.assertLessEqual(writes, 8, "an 8 MiB part took %d SMB2 WRITEs (%d bytes each on average)"
                             % (writes, sent // max(writes, 1)))
        self.assertOk(srv.put_part(init["file_id"], 1, tokens[1], data[8 * CHUNK:]))
        c = self.assertOk(srv.complete(init["file_id"]))
        self.assertShareFile(self.assertSmbComplete(c, init["file_id"], "big.bin", len(data), "", smb_path),
                             data)

    def test_complete_twice(self):
        smb_path = "twice"
        srv = self.start_smb_server(smb_path)
        data = os.urandom(2 * CHUNK + 77)
        init = self.init_ok(srv, "docs/report.pdf", data)
        fid = init["file_id"]
        self.upload_all(srv, init, data)
        c1 = self.assertOk(srv.complete(fid))
        path = self.assertSmbComplete(c1, fid, "report.pdf", len(data), "docs", smb_path)
        mtime = os.stat(path).st_mtime_ns
        time.sleep(0.05)
        c2 = self.assertOk(srv.complete(fid))
        self.assertEqual(c2, c1, "a second complete must give the same reply")
        self.assertShareFile(path, data)
        self.assertEqual(os.stat(path).st_mtime_ns, mtime, "the second complete touched the file")
        self.assertEqual(self.final_files(smb_path), [path])
        self.assertEqual(self.staging(smb_path), [])

    def test_a_directory_at_the_final_path_is_a_conflict(self):
        srv = self.start_smb_server("blocked")
        data = os.urandom(CHUNK + 3)
        init = self.init_ok(srv, "d/blocked.bin", data)
        self.upload_all(srv, init, data)
        blocker = self.smb.path("blocked", "d", "%s_blocked.bin" % init["file_id"])
        for inside in ("inside", ""):  # a directory with something in it, then an empty one
            os.makedirs(os.path.join(blocker, inside), exist_ok=True)
            self.assertError(srv.complete(init["file_id"]), 409, "a directory is in the way")
        self.assertEqual(self.assertOk(srv.status(init["file_id"]))["status"], "pending")
        shutil.rmtree(blocker)
        c = self.assertOk(srv.complete(init["file_id"]))
        self.assertShareFile(self.assertSmbComplete(c, init["file_id"], "blocked.bin", len(data), "d",
                                                    "blocked"), data)

    def test_a_size_the_share_cannot_hold_is_refused_at_once(self):
        srv = self.start_smb_server("huge", env={"MAX_PARTS": "1000000", "CHUNK_SIZE_MB": "4096",
                                                 "MAX_RESERVED_BYTES": "0"})
        t0 = time.time()
        j = self.assertError(srv.init("huge.bin", 10 ** 15), 507)  # 1 PB
        self.assertLess(time.time() - t0, 1.0, "no part tokens may be signed first")
        self.assertIn("Not enough space", j["error"])
        self.assertEqual(self.staging("huge"), [])

    def test_zero_byte_file(self):
        smb_path = "zero"
        srv = self.start_smb_server(smb_path)
        init = self.assertOk(srv.init("empty.txt", 0))
        self.assertEqual(init["total_parts"], 0)
        self.assertEqual(init["parts"], [])
        fid = init["file_id"]
        st = self.assertOk(srv.status(fid))
        self.assertEqual(st["progress_percent"], 100)
        c = self.assertOk(srv.complete(fid))
        path = self.assertSmbComplete(c, fid, "empty.txt", 0, "", smb_path)
        self.assertShareFile(path, b"")
        self.assertEqual(self.staging(smb_path), [])
        self.assertEqual(self.assertOk(srv.complete(fid)), c)

    def test_names_an_smb_server_cannot_hold_are_refused_at_init(self):
        """Windows and NAS servers refuse \\ : * ? " < > | and names ending in a dot or space
        (and "a:b" would open an alternate data stream on Windows): refused at init, before
        any data is sent, not at complete."""
        smb_path = "names"
        srv = self.start_smb_server(smb_path)
        for name in ("a:b.txt", "what?.txt", 'q"uote.txt', "a*b", "a<b", "a>b", "a|b",
                     "dir./x.bin", "trailing.", "dir /x.bin", "space "):
            r = srv.init(name, 10)
            self.assertError(r, 400, contains="smb")
        self.assertEqual(self.staging(smb_path), [], "a refused init must leave nothing behind")
        # Names Windows does accept still work.
        init = self.init_ok(srv, "ok dir/file (1) [x] #2.txt", 3)
        self.upload_all(srv, init, b"abc")
        c = self.assertOk(srv.complete(init["file_id"]))
        self.assertShareFile(self.assertSmbComplete(c, init["file_id"], "file (1) [x] #2.txt", 3,
                                                    "ok dir", smb_path), b"abc")

    def test_empty_smb_path(self):
        """SMB_PATH unset: everything at the share's root, no double slash in final_path."""
        srv = self.start_smb_server("")
        data = os.urandom(CHUNK + 4321)
        parts = split_parts(data)
        init = self.init_ok(srv, "root.bin", data)
        fid = init["file_id"]
        self.assertOk(srv.put_part(fid, 0, init["parts"][0]["token"], parts[0]))
        staged = self.smb.files_under(".staging")
        self.assertEqual(len(staged), 1, "expected one staging file under <share>/.staging/: %r"
                         % self.smb.files_under())
        self.assertOk(srv.put_part(fid, 1, init["parts"][1]["token"], parts[1]))
        c = self.assertOk(srv.complete(fid))
        self.assertEqual(c["final_path"], "smb://127.0.0.1/uploads/%s_root.bin" % fid)
        path = self.assertSmbComplete(c, fid, "root.bin", len(data), "", "")
        self.assertShareFile(path, data)
        self.assertEqual(self.smb.files_under(".staging"), [])

    def test_nested_smb_path_and_path_in_filename(self):
        """SMB_PATH=nas/videos (not created beforehand) and a filename with directories."""
        smb_path = "nas/videos"
        self.assertFalse(os.path.exists(self.smb.path("nas")))
        srv = self.start_smb_server(smb_path)
        data = os.urandom(3 * CHUNK + 5)
        parts = split_parts(data)
        init = self.init_ok(srv, "2024/summer/clip.mov", data)
        fid = init["file_id"]
        self.assertEqual(init["filename"], "clip.mov")
        self.assertOk(srv.put_part(fid, 2, init["parts"][2]["token"], parts[2]))
        self.assertEqual(len(self.staging(smb_path)), 1,
                         "expected one staging file under <share>/nas/videos/.staging/: %r" % self.smb.files_under())
        self.upload_all(srv, init, data, skip=(2,))
        c = self.assertOk(srv.complete(fid))
        self.assertEqual(c["final_path"], "smb://127.0.0.1/uploads/nas/videos/2024/summer/%s_clip.mov" % fid)
        path = self.assertSmbComplete(c, fid, "clip.mov", len(data), "2024/summer", smb_path)
        self.assertShareFile(path, data)
        self.assertEqual(self.staging(smb_path), [])
        # a second upload with the same name lands next to it, nothing overwritten
        data2 = os.urandom(1000)
        init2 = self.init_ok(srv, "2024/summer/clip.mov", data2)
        self.upload_all(srv, init2, data2)
        c2 = self.assertOk(srv.complete(init2["file_id"]))
        path2 = self.assertSmbComplete(c2, init2["file_id"], "clip.mov", len(data2), "2024/summer", smb_path)
        self.assertShareFile(path2, data2)
        self.assertShareFile(path, data)

    def test_cancel(self):
        smb_path = "cancel"
        srv = self.start_smb_server(smb_path)
        data = os.urandom(2 * CHUNK + 10)
        parts = split_parts(data)
        init = self.init_ok(srv, "gone/away.bin", data)
        fid = init["file_id"]
        self.assertOk(srv.put_part(fid, 0, init["parts"][0]["token"], parts[0]))
        self.assertEqual(len(self.staging(smb_path)), 1, "no staging file on the share while uploading: %r"
                         % self.smb.files_under())
        j = self.assertOk(srv.cancel(fid))
        self.assertEqual(j, {"file_id": fid, "message": "Upload cancelled"})
        self.assertEqual(self.staging(smb_path), [], "staging file left after cancel")
        self.assertError(srv.status(fid), 410, contains="Upload was cancelled")
        self.assertError(srv.put_part_raw(fid, 1, init["parts"][1]["token"], parts[1]), 409)
        self.assertError(srv.complete(fid), 409)
        self.assertEqual(self.staging(smb_path), [])
        self.assertEqual(self.final_files(smb_path), [])

    def test_expiry_short_ttl(self):
        smb_path = "expiry"
        srv = self.start_smb_server(smb_path, env=TTL_ENV)
        data = os.urandom(2 * CHUNK + 10)
        parts = split_parts(data)
        init = self.init_ok(srv, "exp/soon.bin", data)
        fid = init["file_id"]
        self.assertOk(srv.put_part(fid, 0, init["parts"][0]["token"], parts[0]))
        self.assertEqual(len(self.staging(smb_path)), 1, "no staging file on the share while uploading: %r"
                         % self.smb.files_under())
        time.sleep(4)
        r = srv.status(fid)
        j = self.assertError(r, (404, 410))
        if r.status == 410:
            self.assertIn("expired", j["error"].lower())
        self.assertEqual(self.staging(smb_path), [], "staging file of the expired upload is still on the share")
        self.assertError(srv.put_part_raw(fid, 1, init["parts"][1]["token"], parts[1]), (404, 410))
        self.assertError(srv.complete(fid), (404, 410))
        self.assertEqual(self.final_files(smb_path), [])

    def test_resume_after_dropped_connection(self):
        smb_path = "resume"
        srv = self.start_smb_server(smb_path)
        data = os.urandom(4 * CHUNK - 999)
        parts = split_parts(data)
        init = self.init_ok(srv, "resume/big.bin", data)
        fid = init["file_id"]
        tokens = [p["token"] for p in init["parts"]]
        self.assertOk(srv.put_part(fid, 0, tokens[0], parts[0]))
        before = self.smb.profile()

        # part 1: the client goes away after 60 % of the body
        c = RawConn(srv.port)
        c.send(request_head("PUT", "/upload/%s/part/1" % fid,
                            {"Authorization": "Bearer " + tokens[1], "Content-Type": "application/octet-stream",
                             "Content-Length": str(len(parts[1]))}))
        c.send(parts[1][:len(parts[1]) * 6 // 10])
        time.sleep(0.2)
        c.close()
        time.sleep(0.3)

        # the client resumes from status: 0 uploaded, 1..3 pending
        sp = self.status_parts(srv, fid)
        self.assertEqual(sp[0], ("uploaded", sha256_hex(parts[0])))
        for n in (1, 2, 3):
            self.assertEqual(sp[n], ("pending", None), "part %d after the dropped connection" % n)
        for n in (1, 2, 3):
            r = self.put_retrying_409(srv, fid, n, tokens[n], parts[n])
            j = self.assertOk(r, "(part %d after resume)" % n)
            self.assertEqual(j["checksum_sha256"], sha256_hex(parts[n]))
        # The connection the dropped request wrote on was fine: it went back to the pool, or
        # its worker was freed (not left stuck), and carried the resumed parts: no new SMB
        # session was needed.
        sessions = self.smb.profile()["smb2_sesssetup_count"] - before["smb2_sesssetup_count"]
        self.assertEqual(sessions, 0, "SMB sessions set up after a client hung up mid-part")
        c = self.assertOk(srv.complete(fid))
        path = self.assertSmbComplete(c, fid, "big.bin", len(data), "resume", smb_path)
        self.assertShareFile(path, data)
        self.assertEqual(self.staging(smb_path), [])


class SmbRobustnessTest(SmbTestCase):

    def test_staging_data_no_record_owns_is_swept(self):
        smb_path = "sweep"
        srv = self.start_smb_server(smb_path, env={"ORPHAN_GRACE_SECONDS": "1",
                                                   "CLEANUP_INTERVAL_SECONDS": "0.5"})
        live = self.init_ok(srv, "live.bin", 10)["file_id"]
        staging = self.smb.path(smb_path, ".staging")
        orphan = os.path.join(staging, "%s.data" % uuid.uuid4())
        stranger = os.path.join(staging, "notes.txt")
        for path in (orphan, stranger):
            with open(path, "wb") as f:
                f.write(b"x" * 100)
            os.chmod(path, 0o666)
        old = time.time() - 60  # older than the grace already
        os.utime(orphan, (old, old))
        deadline = time.time() + 15
        while time.time() < deadline and os.path.exists(orphan):
            time.sleep(0.2)
        self.assertFalse(os.path.exists(orphan), "an orphan staging file was left on the share")
        self.assertTrue(os.path.exists(stranger), "a file that is not staging data was removed")
        self.assertTrue(os.path.exists(os.path.join(staging, "%s.data" % live)))
        self.assertEqual(self.assertOk(srv.status(live))["status"], "pending")
        self.assertIn("staging data no upload owns", srv.log_text())

    def test_kill9_mid_upload_then_restart_and_finish(self):
        smb_path = "crash"
        srv = self.start_smb_server(smb_path)
        data = os.urandom(8 * CHUNK + 31337)
        parts = split_parts(data)
        init = self.init_ok(srv, "crash/after.bin", data)
        fid = init["file_id"]
        tokens = [p["token"] for p in init["parts"]]
        order = list(range(len(parts)))
        random.shuffle(order)
        acked = {}
        bad = []
        done = [0]  # part requests over, however they ended
        cond = threading.Condition()
        killed = threading.Event()

        def worker():
            while not killed.is_set():
                with cond:
                    if not order:
                        return
                    n = order.pop()
                try:
                    r = slow_put(srv.port, fid, n, tokens[n], parts[n])
                except (OSError, EOFError, ValueError) as e:
                    with cond:  # the server died under this request
                        done[0] += 1
                        if not killed.is_set():
                            bad.append((n, e))
                        cond.notify_all()
                    continue
                with cond:
                    done[0] += 1
                    if r.status == 200:
                        acked[n] = r.json["checksum_sha256"]
                    elif not killed.is_set():
                        bad.append((n, r))
                    cond.notify_all()

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        with cond:
            cond.wait_for(lambda: len(acked) >= 3 or bad or done[0] == len(parts), timeout=60)
        self.assertTrue(srv.running(), "the server died during the parallel part uploads: %r" % bad)
        killed.set()  # from here on, failing requests are the kill's doing
        srv.kill9()
        for t in threads:
            t.join(30)
        self.assertEqual(bad, [], "parts refused before the kill")
        self.assertLess(len(acked), len(parts), "every part was acknowledged before the kill")

        srv.start()
        self.assertEqual(len(self.staging(smb_path)), 1, "the staging file must survive the crash: %r"
                         % self.smb.files_under())
        sp = self.status_parts(srv, fid)
        for n, digest in acked.items():
            self.assertEqual(sp[n], ("uploaded", digest), "acknowledged part %d lost by kill -9" % n)
        for n, (state, digest) in sp.items():
            self.assertIn(state, ("uploaded", "pending"), "part %d: %r" % (n, sp[n]))
            if state == "uploaded":
                self.assertEqual(digest, sha256_hex(parts[n]), "part %d reported with a wrong digest" % n)
        todo = [n for n, (state, _) in sp.items() if state == "pending"]
        self.assertTrue(todo, "no part left to upload after the kill")
        for n in todo:
            self.assertOk(srv.put_part(fid, n, tokens[n], parts[n]), "(part %d after restart)" % n)
        c = self.assertOk(srv.complete(fid))
        path = self.assertSmbComplete(c, fid, "after.bin", len(data), "crash", smb_path)
        self.assertShareFile(path, data)
        self.assertEqual(self.staging(smb_path), [])

    def test_health_and_status_answer_while_16_parts_in_flight(self):
        smb_path = "isolation"
        srv = self.start_smb_server(smb_path)
        data = os.urandom(16 * CHUNK)
        parts = split_parts(data)
        init = self.init_ok(srv, "iso/sixteen.bin", data)
        fid = init["file_id"]
        tokens = [p["token"] for p in init["parts"]]
        results = {}
        ack_time = {}
        started = threading.Semaphore(0)
        lock = threading.Lock()

        def one(n):
            try:
                r = slow_put(srv.port, fid, n, tokens[n], parts[n], piece=64 * 1024, delay=0.2,
                             on_first=started.release)
            except Exception as e:  # noqa: BLE001 - reported below
                r = e
            with lock:
                results[n] = r
                ack_time[n] = time.time()

        threads = [threading.Thread(target=one, args=(n,), daemon=True) for n in range(16)]
        for t in threads:
            t.start()
        n_started, deadline = 0, time.time() + 10
        while n_started < 16:
            if started.acquire(timeout=0.1):
                n_started += 1
            elif results or time.time() > deadline:
                self.fail("16 part requests could not all start (server running: %s; finished: %r)"
                          % (srv.running(), results))
        time.sleep(0.3)

        slow = []
        t_end = time.time() + 1.5
        while time.time() < t_end:
            for what, fn in (("health", lambda: srv.request("GET", "/health", timeout=10)),
                             ("status", lambda: srv.status(fid))):
                t0 = time.time()
                r = fn()
                dt = time.time() - t0
                self.assertOk(r, "(%s while 16 parts are in flight)" % what)
                if dt > 1.0:
                    slow.append((what, round(dt, 2)))
            time.sleep(0.05)
        measured_until = time.time()
        for t in threads:
            t.join(60)
        early = sorted(n for n, at in ack_time.items() if at < measured_until)
        self.assertEqual(early, [], "parts finished before the measurements did: not 16 in flight")
        self.assertEqual(slow, [], "GET /health or status took over 1 s while 16 parts were in flight")
        for n in range(16):
            r = results.get(n)
            self.assertFalse(isinstance(r, Exception) or r is None, "part %d: %r" % (n, r))
            self.assertEqual(r.status, 200, "part %d: %r" % (n, r))
        c = self.assertOk(srv.complete(fid))
        path = self.assertSmbComplete(c, fid, "sixteen.bin", len(data), "iso", smb_path)
        self.assertShareFile(path, data)

    # -- smbd restarted under the server (own smbd, the class one is left alone)
    def put_after_smbd_restart(self, srv, fid, n, token, body):
        """The first part after the NAS dropped every connection succeeds at once: the server
        notices its pooled connection is dead and reconnects within the same request."""
        r = srv.put_part(fid, n, token, body)
        j = self.assertOk(r, "(part %d, the first request after smbd restarted)" % n)
        self.assertEqual(j["checksum_sha256"], sha256_hex(body))

    def test_reconnect_after_smbd_restart_between_parts(self):
        smb = self.own_smb()
        smb_path = "reconnect"
        srv = self.start_smb_server(smb_path, smb=smb)
        data = os.urandom(3 * CHUNK + 2222)
        parts = split_parts(data)
        init = self.init_ok(srv, "re/connect.bin", data)
        fid = init["file_id"]
        tokens = [p["token"] for p in init["parts"]]
        self.assertOk(srv.put_part(fid, 0, tokens[0], parts[0]))
        self.assertOk(srv.put_part(fid, 1, tokens[1], parts[1]))

        smb.restart()  # kill -9 of smbd and every child: the server's connection is gone
        self.put_after_smbd_restart(srv, fid, 2, tokens[2], parts[2])
        self.assertOk(srv.put_part(fid, 3, tokens[3], parts[3]), "(the part after the reconnect)")
        self.assertOk(srv.request("GET", "/health"))
        c = self.assertOk(srv.complete(fid))
        path = self.assertSmbComplete(c, fid, "connect.bin", len(data), "re", smb_path, smb=smb)
        self.assertShareFile(path, data)
        self.assertEqual(self.staging(smb_path, smb=smb), [])

    def test_reconnect_after_smbd_restart_before_complete(self):
        smb = self.own_smb()
        smb_path = "reconnect2"
        srv = self.start_smb_server(smb_path, smb=smb)
        data = os.urandom(2 * CHUNK + 1)
        init = self.init_ok(srv, "before/complete.bin", data)
        fid = init["file_id"]
        self.upload_all(srv, init, data)
        smb.restart()
        r = srv.complete(fid)
        c = self.assertOk(r, "(complete after smbd restarted)")
        path = self.assertSmbComplete(c, fid, "complete.bin", len(data), "before", smb_path, smb=smb)
        self.assertShareFile(path, data)
        self.assertEqual(self.staging(smb_path, smb=smb), [])


class SmbFlowWithoutWorkersTest(SmbFlowTest):
    """The same flows with SMB_WORKERS=0: every SMB call from the server process."""
    mode_env = {"SMB_WORKERS": "0"}


class SmbRobustnessWithoutWorkersTest(SmbRobustnessTest):
    """The same with SMB_WORKERS=0."""
    mode_env = {"SMB_WORKERS": "0"}


def proc_io(pid):
    """/proc/<pid>/io as {name: int} ({} once the process is gone)."""
    try:
        with open("/proc/%d/io" % pid) as f:
            return {k: int(v) for k, v in (line.split(":") for line in f)}
    except (OSError, ValueError):
        return {}


def wait_dead(pid, timeout=10):
    """Waits until pid has exited (gone or a zombie); returns whether it did."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = proc_stat(pid)
        if st is None or st[0] in "ZX":
            return True
        time.sleep(0.02)
    return False


class SmbParallelWritesTest(SmbTestCase):
    """Several parts in flight reach smbd at the same time: behind a proxy that holds every
    reply back by DELAY seconds (a NAS some network hops away), four parts written by four
    workers have four SMB2 WRITEs in flight together and take about the time of one, where
    the server process alone, one libsmbclient call at a time, never has more than one
    WRITE in flight and takes about four times as long."""

    DELAY = 0.15
    PART_MB = 4

    def upload_through_proxy(self, smb_path, env):
        """Warms every worker's connection with four parts at once, then times one part alone
        and four at once of a second upload; returns (one, four, proxy stats of the four)."""
        proxy = SmbLatencyProxy(self.smb.port, delay=self.DELAY)
        self.addCleanup(proxy.close)
        srv = self.start_smb_server(smb_path, env=dict(env, SMB_PORT=str(proxy.port),
                                                       CHUNK_SIZE_MB=str(self.PART_MB)))
        part = self.PART_MB * CHUNK

        def put_all(fid, tokens, parts, numbers):
            with concurrent.futures.ThreadPoolExecutor(max_workers=len(numbers)) as ex:
                replies = list(ex.map(lambda n: srv.put_part(fid, n, tokens[n], parts[n], timeout=120),
                                      numbers))
            for n, r in zip(numbers, replies):
                self.assertEqual(self.assertOk(r, "(part %d)" % n)["checksum_sha256"], sha256_hex(parts[n]))

        warm = os.urandom(4 * part)
        init = self.assertOk(srv.init("warm.bin", len(warm)))
        put_all(init["file_id"], [p["token"] for p in init["parts"]], split_parts(warm, part), range(4))

        data = os.urandom(5 * part)
        parts = split_parts(data, part)
        init = self.assertOk(srv.init("five.bin", len(data)))
        fid, tokens = init["file_id"], [p["token"] for p in init["parts"]]
        t0 = time.time()
        put_all(fid, tokens, parts, [0])
        one = time.time() - t0
        proxy.reset()
        t0 = time.time()
        put_all(fid, tokens, parts, [1, 2, 3, 4])
        four = time.time() - t0
        stats = proxy.stats()
        c = self.assertOk(srv.complete(fid))
        self.assertShareFile(self.assertSmbComplete(c, fid, "five.bin", len(data), "", smb_path), data)
        return one, four, stats

    def test_four_parts_write_at_once(self):
        one, four, stats = self.upload_through_proxy("parallel", {})
        what = "one part %.2f s, four at once %.2f s, proxy saw %r" % (one, four, stats)
        self.assertGreaterEqual(stats["max_writes_in_flight"], 3, "writes did not overlap: " + what)
        self.assertGreaterEqual(stats["connections_writing"], 4, what)
        self.assertLess(four, 2.5 * one, "four parts took too long next to one: " + what)

    def test_without_workers_one_write_at_a_time(self):
        """The control: the same measurement sees the in-process path's one lock."""
        one, four, stats = self.upload_through_proxy("parallel0", {"SMB_WORKERS": "0"})
        what = "one part %.2f s, four at once %.2f s, proxy saw %r" % (one, four, stats)
        self.assertEqual(stats["max_writes_in_flight"], 1, what)
        self.assertGreaterEqual(stats["writes"], 4, what)


class SmbTakeoverTest(SmbTestCase):
    """A stalled part taken over while its worker's last write is still on its way to the
    NAS: the takeover waits for that write, so it can never land over the new request's
    bytes (without the wait, the first 4 MiB of the file would be the stalled client's)."""

    HOLD = 4.0

    def test_takeover_waits_for_the_stalled_writers_write_in_flight(self):
        proxy = SmbLatencyProxy(self.smb.port, delay=0, hold_first_write=self.HOLD)
        self.addCleanup(proxy.close)
        srv = self.start_smb_server("takeover", env={
            "SMB_PORT": str(proxy.port), "SMB_WORKERS": "2", "CHUNK_SIZE_MB": "8",
            "PART_STALL_SECONDS": "1", "BODY_MIN_RATE": "0"})
        part = 8 * CHUNK
        good = os.urandom(part)
        init = self.assertOk(srv.init("fenced.bin", part))
        fid, token = init["file_id"], init["parts"][0]["token"]
        # The stalled client: one whole 4 MiB frame (handed to a worker, whose WRITE the
        # proxy holds), one byte more, then nothing, its connection left open.
        stalled = RawConn(srv.port)
        self.addCleanup(stalled.close)
        stalled.send(request_head("PUT", "/upload/%s/part/0" % fid,
                                  {"Authorization": "Bearer " + token, "Content-Length": str(part)}))
        stalled.send(b"\xee" * (4 * CHUNK + 1))
        self.assertTrue(proxy.first_write_seen.wait(10), "the stalled part's write never reached the proxy")
        held_at = time.time()
        time.sleep(1.5)
        r = srv.put_part(fid, 0, token, good, timeout=60)  # takes over
        self.assertEqual(self.assertOk(r)["checksum_sha256"], sha256_hex(good))
        self.assertGreaterEqual(time.time() - held_at, self.HOLD - 0.5,
                                "the takeover did not wait for the write in flight")
        time.sleep(max(0.0, held_at + self.HOLD + 1 - time.time()))  # any late write has landed
        stalled.close()
        c = self.assertOk(srv.complete(fid))
        self.assertShareFile(self.assertSmbComplete(c, fid, "fenced.bin", part, "", "takeover"), good)


    def test_a_trickling_part_is_taken_over(self):
        """Through a worker and in-process: the trickling writer's handle on the share is
        closed by the takeover (smbd refuses to rename a file that is open)."""
        for workers in ("2", "0"):
            with self.subTest(SMB_WORKERS=workers):
                self.trickle_then_take_over("trickle" + workers, workers)

    def trickle_then_take_over(self, smb_path, workers):
        srv = self.start_smb_server(smb_path, env={"PART_STALL_SECONDS": "1", "BODY_MIN_RATE": "0",
                                                   "SMB_WORKERS": workers})
        data = os.urandom(CHUNK)
        init = self.assertOk(srv.init("trickle.bin", len(data)))
        fid, token = init["file_id"], init["parts"][0]["token"]
        trickling = RawConn(srv.port)
        self.addCleanup(trickling.close)
        trickling.send(request_head("PUT", "/upload/%s/part/0" % fid,
                                    {"Authorization": "Bearer " + token, "Content-Length": str(CHUNK)}))
        trickler = Trickler(trickling, 0.2)
        self.addCleanup(trickler.stop)
        time.sleep(1.5)
        self.assertOk(srv.put_part(fid, 0, token, data))  # taken over from the trickle
        trickler.stop()
        c = self.assertOk(srv.complete(fid))
        self.assertShareFile(self.assertSmbComplete(c, fid, "trickle.bin", len(data), "", smb_path), data)


class SmbWorkerTest(SmbTestCase):
    """Workers' lives: forked at start, each dies with the server, and one that dies under
    a part fails that part only."""

    def test_workers_start_and_end_with_the_server(self):
        srv = self.start_smb_server("lives", env={"SMB_WORKERS": "3"})
        pids = self.worker_pids(srv)
        self.assertEqual(len(pids), 3, "expected 3 worker processes: %r" % pids)
        srv.stop()  # SIGTERM: exit status 0, and the workers end with it
        for pid in pids:
            self.assertTrue(wait_dead(pid), "worker %d outlived the server's exit" % pid)
        srv = self.start_smb_server("lives", env={"SMB_WORKERS": "2"})
        pids = self.worker_pids(srv)
        self.assertEqual(len(pids), 2, pids)
        srv.kill9()
        for pid in pids:
            self.assertTrue(wait_dead(pid), "worker %d outlived the server's kill -9" % pid)
        srv = self.start_smb_server("lives", env={"SMB_WORKERS": "0"})
        self.assertEqual(self.worker_pids(srv), [], "SMB_WORKERS=0 forked workers")

    def test_worker_killed_mid_part(self):
        """Two parts in flight on the two workers; one worker gets SIGKILL once it holds
        part of its part's data. That part fails with a JSON error, the other succeeds;
        later parts go to the surviving worker or in-process, a worker killed while idle is
        noticed by the next part, which goes in-process; the server stays up throughout."""
        smb_path = "workerdeath"
        part_mb = 8
        srv = self.start_smb_server(smb_path, env={"SMB_WORKERS": "2", "CHUNK_SIZE_MB": str(part_mb)})
        workers = self.worker_pids(srv)
        self.assertEqual(len(workers), 2, workers)
        part = part_mb * CHUNK
        data = os.urandom(5 * part)
        parts = split_parts(data, part)
        init = self.assertOk(srv.init("death.bin", len(data)))
        fid, tokens = init["file_id"], [p["token"] for p in init["parts"]]

        # 1. Parts 0 and 1 in flight, one on each worker; kill the first worker once both
        # have sent smbd a whole 4 MiB frame of their part (the bodies are still coming).
        replies = {}

        def put(n):
            try:
                replies[n] = slow_put(srv.port, fid, n, tokens[n], parts[n], piece=128 * 1024, delay=0.02)
            except Exception as e:  # noqa: BLE001 - reported below
                replies[n] = e

        threads = [threading.Thread(target=put, args=(n,), daemon=True) for n in (0, 1)]
        for th in threads:
            th.start()
        deadline = time.time() + 20
        while min(proc_io(pid).get("wchar", 0) for pid in workers) < 4 << 20:
            self.assertLess(time.time(), deadline, "the workers never got a frame: %r"
                            % [proc_io(pid) for pid in workers])
            time.sleep(0.01)
        self.assertFalse(replies, "a part ended before the kill: %r" % replies)
        os.kill(workers[0], signal.SIGKILL)
        for th in threads:
            th.join(60)
        ok = [n for n in (0, 1) if not isinstance(replies[n], Exception) and replies[n].status == 200]
        self.assertEqual(len(ok), 1, "expected exactly one of the two parts to succeed: %r" % replies)
        failed = 1 - ok[0]
        j = self.assertError(replies[failed], 500, contains="worker")
        self.assertIn("send it again", j["error"])
        self.assertTrue(srv.running())
        self.assertEqual(self.worker_pids(srv), workers[1:], "the dead worker is not reaped")
        self.assertIn("pending", self.status_parts(srv, fid)[failed])

        # 2. Three parts at once: the surviving worker takes one, the others go in-process.
        before = proc_io(workers[1]).get("wchar", 0)
        with concurrent.futures.ThreadPoolExecutor(max_workers=3) as ex:
            got = list(ex.map(lambda n: srv.put_part(fid, n, tokens[n], parts[n], timeout=120), (2, 3, 4)))
        for n, r in zip((2, 3, 4), got):
            self.assertEqual(self.assertOk(r, "(part %d)" % n)["checksum_sha256"], sha256_hex(parts[n]))
        self.assertGreaterEqual(proc_io(workers[1]).get("wchar", 0) - before, part,
                                "the surviving worker wrote none of the later parts")

        # 3. The last worker dies while idle: the next part notices and goes in-process.
        os.kill(workers[1], signal.SIGKILL)
        self.assertTrue(wait_dead(workers[1]))
        r = srv.put_part(fid, failed, tokens[failed], parts[failed], timeout=120)
        self.assertEqual(self.assertOk(r, "(part %d again)" % failed)["checksum_sha256"],
                         sha256_hex(parts[failed]))
        self.assertEqual(self.worker_pids(srv), [])
        self.assertOk(srv.request("GET", "/health"))

        c = self.assertOk(srv.complete(fid))
        self.assertShareFile(self.assertSmbComplete(c, fid, "death.bin", len(data), "", smb_path), data)
        log = srv.log_text()
        for w in (0, 1):
            self.assertEqual(log.count("worker %d (killed by signal 9) lost" % w), 1,
                             "worker %d's death is not logged exactly once" % w)
        self.assertIn("0 of 2 workers left", log)


class SmbStartupErrorTest(SmbTestCase):

    def test_smbd_itself(self):
        """The harness's smbd, checked with smbclient alone: the right login works, the wrong
        password and an unknown share are refused, files written over SMB land in the share's
        directory, and a restart on the same port serves again with nothing left behind."""
        smb = self.own_smb()
        rc, out = smb.smbclient("ls")
        self.assertEqual(rc, 0, out)
        rc, out = smb.smbclient("ls", password="wrong")
        self.assertNotEqual(rc, 0)
        self.assertIn("NT_STATUS_LOGON_FAILURE", out)
        rc, out = smb.smbclient("ls", share="nosuchshare")
        self.assertNotEqual(rc, 0)
        self.assertIn("NT_STATUS_BAD_NETWORK_NAME", out)
        src = os.path.join(smb.tmp, "probe.bin")
        data = os.urandom(300000)
        with open(src, "wb") as f:
            f.write(data)
        rc, out = smb.smbclient('mkdir d; put "%s" d\\probe.bin' % src)
        self.assertEqual(rc, 0, out)
        self.assertShareFile(smb.path("d", "probe.bin"), data)
        old = smb.group_members()
        smb.restart()
        self.assertFalse(set(old) & set(smb.group_members()), "smbd processes survived the restart")
        self.assertEqual(smb.fetch("d/probe.bin"), data)
        smb.stop()
        self.assertEqual(smb.group_members(), [], "smbd processes left after stop")

    def run_startup(self, env_over, want, what):
        env = self.smb.server_env("startup")
        env.update(env_over)
        t0 = time.time()
        rc, out, err, _ = self.run_binary(env=env, timeout=STARTUP_LIMIT + 5)
        dt = time.time() - t0
        self.assertEqual(rc, 2, "%s: exit status %s, expected 2\nstdout: %s\nstderr: %s" % (what, rc, out, err))
        self.assertLessEqual(dt, STARTUP_LIMIT, "%s: took %.1f s to give up" % (what, dt))
        lines = [ln for ln in err.splitlines() if any(w.lower() in ln.lower() for w in want)]
        self.assertTrue(lines, "%s: no stderr line mentions %s\nstderr: %s" % (what, " / ".join(map(repr, want)), err))
        return lines, out, err

    def test_wrong_password(self):
        bad = "not-the-pass-4b7d"
        lines, out, err = self.run_startup({"SMB_PASS": bad}, ["Access denied"], "wrong password")
        self.assertNotIn(bad, out + err, "the SMB password is printed")

    def test_unknown_share(self):
        self.run_startup({"SMB_SHARE": "nosuchshare"}, ["Share not found"], "unknown share")

    def test_unreachable_host(self):
        port = free_port()  # nothing listens there
        lines, _, err = self.run_startup({"SMB_PORT": str(port)},
                                         ["No route to host", "Connection refused", "unreachable"],
                                         "closed port")
        self.assertTrue(any("127.0.0.1" in ln for ln in lines),
                        "the error line does not name the host 127.0.0.1: %r" % lines)

    def test_good_settings_start(self):
        """The same settings with the right password, share and port do start."""
        srv = self.start_smb_server("startup")
        self.assertOk(srv.request("GET", "/health"))


if __name__ == "__main__":
    import unittest
    unittest.main()
