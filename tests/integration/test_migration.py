"""A database written by the previous release (schema 2: tests/fixtures/schema-v2.db, made by
that release's own binary through its HTTP API) is upgraded in place without losing a row,
and everything in it keeps working: the complete upload, the pending one (finished with the
tokens issued before the upgrade), the cancelled one, the queued webhook."""

import hashlib
import json
import os
import re
import shutil
import sqlite3
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import REPO, ServerTestCase  # noqa: E402

FIXTURES = os.path.join(REPO, "tests", "fixtures")
# The schema this release writes: its newest migration.
LATEST = max(int(f.split("_")[0]) for f in os.listdir(os.path.join(REPO, "src", "meta", "migrations", "sqlite"))
             if f.endswith(".sql"))
M = 1 << 20


def pattern(n, seed):
    """The bytes the fixture's uploads were made of."""
    return bytes(((i * 31 + seed) % 251) for i in range(n))


class MigrationTest(ServerTestCase):

    def setUp(self):
        with open(os.path.join(FIXTURES, "schema-v2.json")) as f:
            self.ids = json.load(f)
        self.tmp = tempfile.mkdtemp(prefix="cu-migrate-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.db = os.path.join(self.tmp, "uploads.db")
        shutil.copy(os.path.join(FIXTURES, "schema-v2.db"), self.db)
        # The storage the old release left beside it: the complete file, and the pending
        # upload's staging file with parts 0 and 2 in place.
        store = os.path.join(self.tmp, "store")
        done = os.path.join(store, "files", "videos", "2024", "%s_a.bin" % self.ids["complete"])
        os.makedirs(os.path.dirname(done))
        with open(done, "wb") as f:
            f.write(pattern(self.ids["complete_size"], 1))
        os.makedirs(os.path.join(store, "files", "dir"))
        open(os.path.join(store, "files", "dir", "%s_empty.bin" % self.ids["empty"]), "wb").close()
        os.makedirs(os.path.join(store, ".staging"))
        self.pending = pattern(self.ids["pending_size"], 2)
        with open(os.path.join(store, ".staging", "%s.data" % self.ids["pending"]), "wb") as f:
            f.truncate(len(self.pending))
            for n in (0, 2):
                f.seek(n * M)
                f.write(self.pending[n * M:(n + 1) * M])

    def rows(self):
        con = sqlite3.connect(self.db)
        try:
            return {t: con.execute("SELECT COUNT(*) FROM %s" % t).fetchone()[0]
                    for t in ("uploads", "parts", "webhooks")}, \
                con.execute("PRAGMA user_version").fetchone()[0]
        finally:
            con.close()

    def test_upgrade_keeps_every_row_and_every_upload_working(self):
        before, version = self.rows()
        self.assertEqual(version, 2)
        self.assertEqual(before, {"uploads": 4, "parts": 6, "webhooks": 1})
        env = {"API_KEY": self.ids["api_key"], "JWT_SECRET": self.ids["jwt_secret"],
               "DATABASE_PATH": "./uploads.db", "LOCAL_STORAGE_PATH": "./store",
               "CHUNK_SIZE_MB": str(self.ids["chunk_mb"]), "WEBHOOK_MAX_ATTEMPTS": "100",
               "WEBHOOK_RETRY_BASE_SECONDS": "3600"}
        srv = self.start_server(env=env, tmpdir=self.tmp)
        srv.api_key = self.ids["api_key"]
        # Every migration after schema 2, each once, in order.
        migrated = [int(v) for v in re.findall(r"migrated to schema (\d+)", srv.log_text())]
        self.assertEqual(migrated, list(range(3, LATEST + 1)))
        after, version = self.rows()
        self.assertEqual(version, LATEST)
        self.assertEqual(after["uploads"], 4)
        self.assertEqual(after["webhooks"], 1)
        self.assertGreaterEqual(after["parts"], 6)

        st = self.assertOk(srv.status(self.ids["complete"]))
        self.assertEqual(st["status"], "complete")
        self.assertEqual(st["uploaded_parts"], 3)
        self.assertTrue(st["final_path"].endswith("videos/2024/%s_a.bin" % self.ids["complete"]))
        self.assertEqual(self.assertOk(srv.complete(self.ids["complete"]))["status"], "complete")

        pid = self.ids["pending"]
        st = self.assertOk(srv.status(pid))
        self.assertEqual((st["status"], st["uploaded_parts"], st["total_parts"]), ("pending", 2, 3))
        sums = {p["part"]: p["checksum_sha256"] for p in st["parts"]}
        self.assertEqual(sums[0], hashlib.sha256(self.pending[:M]).hexdigest())
        self.assertIsNone(sums[1])
        # The token issued before the upgrade still works, and only for its own part.
        tokens = self.ids["pending_tokens"]
        self.assertError(srv.put_part(pid, 1, tokens[0], self.pending[M:2 * M]), 401)
        self.assertOk(srv.put_part(pid, 1, tokens[1], self.pending[M:2 * M]))
        done = self.assertOk(srv.complete(pid))  # verifies the whole-file checksum too
        with open(srv.resolve(done["final_path"]), "rb") as f:
            self.assertEqual(f.read(), self.pending)

        self.assertError(srv.status(self.ids["cancelled"]), 410, "cancelled")
        self.assertEqual(self.assertOk(srv.status(self.ids["empty"]))["status"], "complete")

        # The files API lists the old files too, numbered in the order they completed, after
        # the one completed since the upgrade; and serves their bytes.
        listed = self.assertOk(srv.request("GET", "/api/files", None, srv.api_headers()))["files"]
        self.assertEqual(listed[0]["file_id"], pid)
        self.assertEqual(sorted(e["file_id"] for e in listed[1:]),
                         sorted([self.ids["complete"], self.ids["empty"]]))
        old = [(e["completed_at"], e["file_id"]) for e in listed[1:]]
        self.assertEqual(old, sorted(old, reverse=True))
        got = srv.request("GET", "/api/files/%s" % self.ids["complete"], None, srv.api_headers())
        self.assertEqual(got.body, pattern(self.ids["complete_size"], 1))

        # Started again, the database is left as it is.
        srv.restart()
        self.assertEqual(srv.log_text().count("migrated to schema"), LATEST - 2)
        self.assertEqual(self.rows()[1], LATEST)

    def test_a_newer_database_is_refused(self):
        con = sqlite3.connect(self.db)
        con.execute("PRAGMA user_version = 999")
        con.commit()
        con.close()
        rc, out, err, _ = self.run_binary(env={"DATABASE_PATH": self.db}, tmpdir=self.tmp)
        self.assertEqual(rc, 2, err)
        self.assertIn("newer release", err)


if __name__ == "__main__":
    import unittest
    unittest.main()
