"""Persistence across kill -9: every acknowledged part survives, nothing half-written is
reported as uploaded, and the upload completes byte-exact after a restart."""

import http.client
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (CHUNK, RawConn, ServerTestCase, file_sha256, request_head, sha256_hex,  # noqa: E402
                     split_parts)


def slow_put(srv, fid, n, token, body):
    """PUT a part in 128 KiB slices a few ms apart, so that parts are really in flight
    (half received, being written, being synced) when the server is killed."""
    c = RawConn(srv.port, timeout=20)
    try:
        c.send(request_head("PUT", "/upload/%s/part/%d" % (fid, n),
                            {"Authorization": "Bearer " + token, "Content-Type": "application/octet-stream",
                             "Content-Length": str(len(body))}))
        for i in range(0, len(body), 128 * 1024):
            c.send(body[i:i + 128 * 1024])
            time.sleep(0.004)
        return c.read_response(20)
    finally:
        c.close()


class RestartTest(ServerTestCase):

    def kill_during_upload(self, srv, data, name, kill_after):
        parts = split_parts(data)
        init = self.init_ok(srv, name, data)
        fid = init["file_id"]
        tokens = [p["token"] for p in init["parts"]]
        order = list(range(len(parts)))
        random.shuffle(order)
        acked = {}
        cond = threading.Condition()
        killed = threading.Event()
        bad = []

        def worker():
            while not killed.is_set():
                with cond:
                    if not order:
                        return
                    n = order.pop()
                try:
                    r = slow_put(srv, fid, n, tokens[n], parts[n])
                except (OSError, EOFError, ValueError):
                    continue  # the server died under this request
                with cond:
                    if r.status == 200:
                        acked[n] = r.json["checksum_sha256"]
                    elif not killed.is_set():
                        bad.append((n, r))
                    cond.notify_all()

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        with cond:
            cond.wait_for(lambda: len(acked) >= kill_after or (not order and len(acked) + len(bad) >= len(parts)),
                          timeout=60)
        time.sleep(random.uniform(0, 0.02))
        srv.kill9()
        killed.set()
        for t in threads:
            t.join(30)
        self.assertEqual(bad, [], "parts refused before the kill")
        self.assertLess(len(acked), len(parts), "every part was acknowledged before the kill; "
                                                "the kill did not land mid-upload")
        return init, parts, dict(acked)

    def test_kill9_while_parts_in_flight(self):
        srv = self.start_server()
        done = []
        for i, kill_after in enumerate(sorted(random.sample(range(1, 20), 3))):
            with self.subTest(round=i, kill_after=kill_after):
                data = os.urandom(24 * CHUNK - 54321)
                init, parts, acked = self.kill_during_upload(srv, data, "kill/%d.bin" % i, kill_after)
                self.assertEqual(len(parts), 24)
                fid = init["file_id"]
                srv.restart()
                st = self.assertOk(srv.status(fid))
                self.assertEqual(st["status"], "pending")
                by_part = {p["part"]: p for p in st["parts"]}
                self.assertEqual(sorted(by_part), list(range(24)))
                uploaded = 0
                for n in range(24):
                    p = by_part[n]
                    if n in acked:
                        self.assertEqual(acked[n], sha256_hex(parts[n]))
                        self.assertEqual((p["status"], p["checksum_sha256"]), ("uploaded", acked[n]),
                                         "acknowledged part %d lost by kill -9" % n)
                    else:
                        self.assertIn(p["status"], ("pending", "uploaded"))
                        if p["status"] == "uploaded":
                            self.assertEqual(p["checksum_sha256"], sha256_hex(parts[n]),
                                             "unacknowledged part %d recorded with a wrong checksum" % n)
                        else:
                            self.assertIsNone(p["checksum_sha256"])
                    uploaded += p["status"] == "uploaded"
                self.assertEqual(st["uploaded_parts"], uploaded)
                for n in range(24):
                    if by_part[n]["status"] == "pending":
                        j = self.assertOk(srv.put_part(fid, n, init["parts"][n]["token"], parts[n]))
                        self.assertEqual(j["checksum_sha256"], sha256_hex(parts[n]))
                    else:
                        self.assertError(srv.put_part_raw(fid, n, init["parts"][n]["token"], parts[n]), 409)
                c = self.complete_ok(srv, fid, data)
                done.append((c, data))
                # files completed in earlier rounds are untouched
                for c_old, d_old in done:
                    self.assertEqual(file_sha256(srv.resolve(c_old["final_path"])), sha256_hex(d_old))

    def test_kill9_during_complete(self):
        """A kill while complete runs (hashing for checksum_sha256, then the rename) leaves
        an upload that, after a restart, completes byte-exact."""
        srv = self.start_server()
        for i in range(4):
            with self.subTest(round=i):
                data = os.urandom(8 * CHUNK - 1234)
                init = self.init_ok(srv, "fin/%d.bin" % i, data, checksum_sha256=sha256_hex(data))
                fid = init["file_id"]
                self.upload_all(srv, init, data)
                result = {}

                def comp():
                    try:
                        result["r"] = srv.complete(fid)
                    except (OSError, http.client.HTTPException) as e:
                        result["e"] = e

                t = threading.Thread(target=comp)
                t.start()
                time.sleep(random.uniform(0, 0.012))
                srv.kill9()
                t.join(10)
                srv.restart()
                st = self.assertOk(srv.status(fid))
                self.assertIn(st["status"], ("pending", "finalizing", "complete"))
                self.assertEqual(st["uploaded_parts"], 8)
                deadline = time.time() + 5
                while True:
                    r = srv.complete(fid)
                    if r.status != 409 or time.time() > deadline:
                        break
                    time.sleep(0.2)
                c = self.assertOk(r, "(complete after a kill during complete; status was %s)" % st["status"])
                self.assertEqual(file_sha256(srv.resolve(c["final_path"])), sha256_hex(data))
                if "r" in result and result["r"].status == 200:
                    self.assertEqual(c, result["r"].json, "the acknowledged complete reply changed")
                files = [f for _, _, fs in os.walk(os.path.join(srv.files_dir, "fin")) for f in fs]
                self.assertEqual(len(files), i + 1, "final files: %r" % files)
                self.assertFalse(os.path.exists(os.path.join(srv.staging, fid + ".data")))

    def test_sigterm_with_stalled_and_idle_clients(self):
        """SIGTERM while one client is stuck mid-part and another holds an idle keep-alive
        connection: the server still exits 0 within 10 s; the stuck part stays pending."""
        srv = self.start_server()
        data = os.urandom(2 * CHUNK + 9)
        parts = split_parts(data)
        init = self.init_ok(srv, "term.bin", data)
        fid, tok = init["file_id"], [p["token"] for p in init["parts"]]
        self.assertOk(srv.put_part(fid, 0, tok[0], parts[0]))
        stuck = RawConn(srv.port, timeout=30)
        idle = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        try:
            stuck.send(request_head("PUT", "/upload/%s/part/1" % fid,
                                    {"Authorization": "Bearer " + tok[1], "Content-Length": str(CHUNK)}))
            stuck.send(parts[1][:CHUNK // 3])
            idle.request("GET", "/health")
            idle.getresponse().read()
            time.sleep(0.3)
            t0 = time.time()
            srv.stop()
            self.assertLess(time.time() - t0, 10)
        finally:
            stuck.close()
            idle.close()
        srv.restart()
        st = self.assertOk(srv.status(fid))
        self.assertEqual([p["status"] for p in st["parts"]], ["uploaded", "pending", "pending"])
        for n in (1, 2):
            self.assertOk(srv.put_part(fid, n, tok[n], parts[n]))
        self.complete_ok(srv, fid, data)

    def test_sigterm_restart_keeps_state(self):
        srv = self.start_server()
        data = os.urandom(3 * CHUNK + 5)
        parts = split_parts(data)
        init = self.init_ok(srv, "t.bin", data)
        fid = init["file_id"]
        self.assertOk(srv.put_part(fid, 1, init["parts"][1]["token"], parts[1]))
        before = self.assertOk(srv.status(fid))
        srv.stop()
        srv.restart()
        self.assertEqual(self.assertOk(srv.status(fid)), before)
        for n in (0, 2, 3):
            self.assertOk(srv.put_part(fid, n, init["parts"][n]["token"], parts[n]))
        c = self.complete_ok(srv, fid, data)
        srv.stop()
        srv.restart()
        self.assertEqual(self.assertOk(srv.complete(fid)), c)
        st = self.assertOk(srv.status(fid))
        self.assertEqual(st["status"], "complete")

    def test_durability_none(self):
        srv = self.start_server(env={"DURABILITY": "none"})
        data = os.urandom(4 * CHUNK + 4096 + 1)
        init = self.init_ok(srv, "fast/none.bin", data)
        self.upload_all(srv, init, data)
        srv.stop()
        srv.restart()
        st = self.assertOk(srv.status(init["file_id"]))
        self.assertEqual(st["uploaded_parts"], 5)
        self.complete_ok(srv, init["file_id"], data)

    def test_durability_invalid(self):
        rc, out, err, _ = self.run_binary(env={"DURABILITY": "sometimes"})
        self.assertEqual(rc, 2, "DURABILITY=sometimes must stop the server with status 2\n" + err)
        self.assertIn("DURABILITY", err)


if __name__ == "__main__":
    import unittest
    unittest.main()
