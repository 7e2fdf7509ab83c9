"""Concurrent requests: the same part twice at once, clients dropping mid-part, slow
clients, and many parts of several uploads in parallel."""

import concurrent.futures
import os
import random
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (CHUNK, RawConn, ServerTestCase, request_head,  # noqa: E402
                     sha256_hex, split_parts)


class ConcurrencyTest(ServerTestCase):

    def setUp(self):
        self.srv = self.start_server()

    def part_head(self, fid, n, token, length):
        return request_head("PUT", "/upload/%s/part/%d" % (fid, n),
                            {"Authorization": "Bearer " + token, "Content-Type": "application/octet-stream",
                             "Content-Length": str(length)})

    def test_same_part_twice_at_once(self):
        srv = self.srv
        data = bytearray(os.urandom(2 * CHUNK + 5000))
        parts = split_parts(bytes(data))
        init = self.init_ok(srv, "race.bin", bytes(data))
        fid, tok = init["file_id"], [p["token"] for p in init["parts"]]
        a_bytes = parts[0]
        b_bytes = os.urandom(CHUNK)

        a = RawConn(srv.port, timeout=30)
        try:
            a.send(self.part_head(fid, 0, tok[0], CHUNK))
            a.send(a_bytes[:CHUNK // 2])
            time.sleep(0.5)
            # B sends the same part in full while A is in flight: 409
            t0 = time.time()
            rb = srv.put_part_raw(fid, 0, tok[0], b_bytes)
            self.assertError(rb, 409)
            self.assertLess(time.time() - t0, 5)
            st = self.assertOk(srv.status(fid))
            self.assertEqual(st["parts"][0], {"part": 0, "status": "pending", "checksum_sha256": None})
            self.assertEqual(st["uploaded_parts"], 0)
            self.assertFalse(a.readable(0), "A got an answer before sending its whole body")
            # A finishes: 200 with A's checksum
            a.send(a_bytes[CHUNK // 2:])
            ra = a.read_response(30)
        finally:
            a.close()
        ja = self.assertOk(ra)
        self.assertEqual(ja["checksum_sha256"], sha256_hex(a_bytes))
        # B again, now that the part is uploaded: still 409
        self.assertError(srv.put_part_raw(fid, 0, tok[0], b_bytes), 409)
        for n in (1, 2):
            self.assertOk(srv.put_part(fid, n, tok[n], parts[n]))
        c = self.complete_ok(srv, fid, bytes(data))
        with open(srv.resolve(c["final_path"]), "rb") as f:
            self.assertEqual(f.read(CHUNK), a_bytes)

    def test_complete_while_last_part_in_flight(self):
        srv = self.srv
        data = os.urandom(2 * CHUNK + 5)
        parts = split_parts(data)
        init = self.init_ok(srv, "late.bin", data)
        fid, tok = init["file_id"], [p["token"] for p in init["parts"]]
        for n in (0, 1):
            self.assertOk(srv.put_part(fid, n, tok[n], parts[n]))
        a = RawConn(srv.port, timeout=30)
        try:
            a.send(self.part_head(fid, 2, tok[2], len(parts[2])))
            a.send(parts[2][:2])
            time.sleep(0.3)
            self.assertError(srv.complete(fid), 400, contains="Not all parts uploaded: 2/3 complete")
            a.send(parts[2][2:])
            self.assertOk(a.read_response(30))
        finally:
            a.close()
        self.complete_ok(srv, fid, data)

    def test_cancel_while_part_in_flight(self):
        srv = self.srv
        data = os.urandom(2 * CHUNK + 5)
        parts = split_parts(data)
        init = self.init_ok(srv, "gone.bin", data)
        fid, tok = init["file_id"], [p["token"] for p in init["parts"]]
        self.assertOk(srv.put_part(fid, 0, tok[0], parts[0]))
        a = RawConn(srv.port, timeout=30)
        try:
            a.send(self.part_head(fid, 1, tok[1], CHUNK))
            a.send(parts[1][:CHUNK // 2])
            time.sleep(0.3)
            rc = srv.cancel(fid)
            self.assertIn(rc.status, (200, 409), "cancel during an in-flight part: %r" % (rc,))
            a.try_send(parts[1][CHUNK // 2:])
            try:
                ra = a.read_response(30)
            except (EOFError, OSError):
                ra = None
        finally:
            a.close()
        if rc.status == 200:
            self.assertEqual(rc.json, {"file_id": fid, "message": "Upload cancelled"})
            if ra is not None:
                self.assertError(ra, (409, 410))
            self.assertError(srv.status(fid), 410, contains="Upload was cancelled")
            time.sleep(0.3)
            left = [f for _, _, fs in os.walk(srv.staging) for f in fs]
            self.assertEqual(left, [], "staging data left after cancelling during a part upload")
        else:
            self.assertError(rc, 409)
            self.assertOk(ra)
            self.assertOk(srv.cancel(fid))

    def _drop_case(self, send_before_drop, how):
        srv = self.srv
        data = os.urandom(2 * CHUNK + 777)
        parts = split_parts(data)
        init = self.init_ok(srv, "drop.bin", data)
        fid, tok = init["file_id"], [p["token"] for p in init["parts"]]
        self.assertOk(srv.put_part(fid, 0, tok[0], parts[0]))

        junk = os.urandom(CHUNK)  # what the dropped client had sent: must never show up
        c = RawConn(srv.port)
        c.send(self.part_head(fid, 1, tok[1], CHUNK))
        if send_before_drop:
            c.send(junk[:send_before_drop])
        time.sleep(0.3)
        if how == "shutdown":
            c.sock.shutdown(socket.SHUT_WR)
            if c.readable(5):
                try:
                    r = c.read_response(5)
                    self.assertError(r, 400)
                except EOFError:
                    pass  # closing without an answer is fine too
        c.close()

        st = self.assertOk(srv.status(fid))
        self.assertEqual(st["parts"][1], {"part": 1, "status": "pending", "checksum_sha256": None})
        self.assertEqual(st["uploaded_parts"], 1)
        # the part can be sent again (allow the server a moment to notice the drop)
        deadline = time.time() + 5
        while True:
            r = srv.put_part_raw(fid, 1, tok[1], parts[1])
            if r.status != 409 or time.time() > deadline:
                break
            time.sleep(0.1)
        j = self.assertOk(r, "(re-sending a part whose first sender dropped)")
        self.assertEqual(j["checksum_sha256"], sha256_hex(parts[1]))
        self.assertOk(srv.put_part(fid, 2, tok[2], parts[2]))
        self.complete_ok(srv, fid, data)

    def test_client_drops_mid_part(self):
        self._drop_case(CHUNK // 2, "close")

    def test_client_drops_after_headers(self):
        self._drop_case(0, "close")

    def test_client_drops_one_byte_short(self):
        self._drop_case(CHUNK - 1, "close")

    def test_client_half_closes_one_byte_short(self):
        self._drop_case(CHUNK - 1, "shutdown")

    def test_stalled_clients_do_not_block_others(self):
        srv = self.srv
        data = os.urandom(4 * CHUNK + 99)
        parts = split_parts(data)
        init = self.init_ok(srv, "stall.bin", data)
        fid, tok = init["file_id"], [p["token"] for p in init["parts"]]
        other = os.urandom(3 * CHUNK + 1)
        init2 = self.init_ok(srv, "other.bin", other)
        stalled = []
        try:
            for n in range(4):  # more stalled parts than the machine has cores
                c = RawConn(srv.port, timeout=30)
                c.send(self.part_head(fid, n, tok[n], len(parts[n])))
                c.send(parts[n][:1000])
                stalled.append(c)
            time.sleep(0.3)
            t0 = time.time()
            self.assertOk(srv.request("GET", "/health", timeout=5))
            self.assertOk(srv.status(fid))
            self.upload_all(srv, init2, other, threads=3)
            self.complete_ok(srv, init2["file_id"], other)
            self.assertLess(time.time() - t0, 10, "stalled uploads slowed other requests down")
            # the stalled ones finish
            for n, c in enumerate(stalled):
                c.send(parts[n][1000:])
            for n, c in enumerate(stalled):
                j = self.assertOk(c.read_response(30))
                self.assertEqual(j["checksum_sha256"], sha256_hex(parts[n]))
        finally:
            for c in stalled:
                c.close()
        self.assertOk(srv.put_part(fid, 4, tok[4], parts[4]))
        self.complete_ok(srv, fid, data)

    def test_many_parts_of_several_uploads_in_parallel(self):
        srv = self.srv
        uploads = []
        for i in range(5):
            data = os.urandom(random.randint(2 * CHUNK + 1, 3 * CHUNK - 1))
            uploads.append((self.init_ok(srv, "multi/%d.bin" % i, data), data))
        jobs = [(u, d, n, p) for u, d in uploads for n, p in enumerate(split_parts(d))]
        random.shuffle(jobs)
        stop = threading.Event()
        seen = {u["file_id"]: [] for u, _ in uploads}
        poll_errors = []

        def poll():
            while not stop.is_set():
                for u, _ in uploads:
                    r = srv.status(u["file_id"])
                    if r.status != 200:
                        poll_errors.append(r)
                    else:
                        seen[u["file_id"]].append(r.json["uploaded_parts"])
                time.sleep(0.02)

        poller = threading.Thread(target=poll)
        poller.start()
        try:
            def one(job):
                u, d, n, p = job
                return job, srv.put_part(u["file_id"], n, u["parts"][n]["token"], p)

            with concurrent.futures.ThreadPoolExecutor(max_workers=8) as ex:
                results = list(ex.map(one, jobs))
        finally:
            stop.set()
            poller.join()
        for (u, d, n, p), r in results:
            j = self.assertOk(r)
            self.assertEqual(j["checksum_sha256"], sha256_hex(p))
        self.assertEqual(poll_errors, [])
        for fid, counts in seen.items():
            self.assertEqual(counts, sorted(counts), "uploaded_parts went backwards for %s" % fid)

        # complete all at once, each twice concurrently
        def comp(u):
            return u, srv.complete(u["file_id"])

        with concurrent.futures.ThreadPoolExecutor(max_workers=10) as ex:
            results = list(ex.map(comp, [u for u, _ in uploads] * 2))
        replies = {}
        for u, r in results:  # concurrent callers wait for the completion under way
            j = self.assertOk(r, "(concurrent complete)")
            if u["file_id"] in replies:
                self.assertEqual(j, replies[u["file_id"]])
            replies[u["file_id"]] = j
        self.assertEqual(len(replies), len(uploads))
        for u, d in uploads:
            self.assertEqual(self.complete_ok(srv, u["file_id"], d), replies[u["file_id"]])

    def test_parallel_inits_get_distinct_ids(self):
        srv = self.srv
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as ex:
            rs = list(ex.map(lambda i: srv.init("p/%d.bin" % i, 5 * CHUNK), range(32)))
        ids = [self.assertOk(r)["file_id"] for r in rs]
        self.assertEqual(len(set(ids)), 32)
        tokens = [p["token"] for r in rs for p in r.json["parts"]]
        self.assertEqual(len(set(tokens)), 32 * 5)


if __name__ == "__main__":
    import unittest
    unittest.main()
