"""Kinds of file on the real binary through the seed API: ALLOWED_EXTENSIONS and the declared
type refused at init (415, before any part), libmagic's finding on a file's first bytes as
they arrive (a text file named .png refused, its upload failed and its data removed; a real
PNG accepted and its type recorded), the failure kept across a restart, a database of the
previous release upgraded, bad configuration stopping the server at start, and S3 (the
multipart upload aborted)."""

import os
import random
import shutil
import sqlite3
import struct
import sys
import tempfile
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_migration  # noqa: E402  (its fixture: a database of the previous release)
from harness import CHUNK, S3_CHUNK, S3TestCase, ServerTestCase, sha256_hex, split_parts  # noqa: E402

TYPES_ENV = {"ALLOWED_TYPES": "image/*", "ALLOWED_EXTENSIONS": ".png,.JPG,gif"}


def png_bytes(width, height, seed=1):
    """A real PNG (RGB, 8 bits) of random pixels: it compresses to about its raw size."""
    rnd = random.Random(seed)

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = b"".join(b"\x00" + rnd.randbytes(width * 3) for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 1)) + chunk(b"IEND", b""))


def text_bytes(size):
    line = b"These are only words and no picture at all on line %d\n"
    out, n, length = [], 0, 0
    while length < size:
        out.append(line % n)
        length += len(out[-1])
        n += 1
    return b"".join(out)[:size]


def upload_row(srv, file_id):
    """The upload's record as the server stored it (detected_type, failure_code, ...)."""
    con = sqlite3.connect(os.path.join(srv.tmp, "uploads.db"))
    con.row_factory = sqlite3.Row
    try:
        row = con.execute("SELECT * FROM uploads WHERE id = ?", (file_id,)).fetchone()
        return dict(row) if row else None
    finally:
        con.close()


class TypesMixin(object):
    def assertFailedForType(self, srv, file_id, says="text/plain"):
        """Every request about a failed upload answers 415 with the recorded reason."""
        row = upload_row(srv, file_id)
        self.assertEqual((row["state"], row["failure_code"]), ("failed", "media_type"), row)
        self.assertIn(says, row["failure_reason"])
        j = self.assertError(srv.status(file_id), 415, "Upload failed: ")
        self.assertIn(row["failure_reason"], j["error"])
        self.assertError(srv.complete(file_id), 415, says)
        self.assertError(srv.cancel(file_id), 415, says)
        return row


class TypesTest(TypesMixin, ServerTestCase):

    def test_text_named_png_refused_and_its_data_removed(self):
        srv = self.start_server(env=TYPES_ENV)
        data = text_bytes(2 * CHUNK + 5000)
        init = self.init_ok(srv, "shots/notes.png", data, content_type="image/png")
        fid, tokens, parts = init["file_id"], [p["token"] for p in init["parts"]], split_parts(data)
        staging = os.path.join(srv.staging, fid + ".data")
        self.assertTrue(os.path.exists(staging))
        # Parts after the first are not sniffed: they are stored as they come.
        self.assertOk(srv.put_part(fid, 2, tokens[2], parts[2]))
        # The first part's first bytes are text: 415, whatever init declared.
        r = srv.put_part_raw(fid, 0, tokens[0], parts[0])
        j = self.assertError(r, 415, "text/plain")
        self.assertIn("image/*", j["error"])
        self.assertIn("data is removed", j["error"])
        self.assertFalse(os.path.exists(staging), "the upload's data is still there")
        self.assertEqual(os.listdir(srv.staging), [])
        row = self.assertFailedForType(srv, fid)
        self.assertEqual(row["data_removed"], 1)
        self.assertError(srv.put_part_raw(fid, 1, tokens[1], parts[1]), 415, "Upload failed")
        # The refusal was logged once, with its reason.
        self.assertEqual(sum(1 for line in srv.log_text().splitlines()
                             if " 415 " in line and "/part/0" in line), 1)
        # Kept across a restart: the record says why.
        srv.restart()
        self.assertError(srv.status(fid), 415, "text/plain")

    def test_real_png_accepted_and_its_type_recorded(self):
        srv = self.start_server(env=TYPES_ENV)
        data = png_bytes(700, 700)
        self.assertGreater(len(data), CHUNK)
        # application/octet-stream says only "some bytes": the sniffed type decides.
        init = self.init_ok(srv, "photos/cat.PNG", data, content_type="application/octet-stream")
        self.upload_all(srv, init, data)
        self.complete_ok(srv, init["file_id"], data)
        row = upload_row(srv, init["file_id"])
        self.assertEqual((row["state"], row["detected_type"]), ("complete", "image/png"))
        self.assertEqual(row["content_type"], "application/octet-stream")  # as declared
        # A file shorter than the window is judged whole: a tiny GIF.
        gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00," \
              b"\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
        init = self.init_ok(srv, "dot.gif", gif)
        self.upload_all(srv, init, gif)
        self.complete_ok(srv, init["file_id"], gif)
        self.assertEqual(upload_row(srv, init["file_id"])["detected_type"], "image/gif")

    def test_extension_refused_at_init(self):
        srv = self.start_server(env=TYPES_ENV)
        for name in ("notes.txt", "photo.png.exe", "png", ".png", "dir.png/readme"):
            j = self.assertError(srv.init(name, 10), 415, "extension")
            self.assertIn(".png,.JPG,gif", j["error"])
        # Nothing was created: no staging file, no record.
        self.assertEqual(os.listdir(srv.staging) if os.path.isdir(srv.staging) else [], [])
        con = sqlite3.connect(os.path.join(srv.tmp, "uploads.db"))
        self.assertEqual(con.execute("SELECT COUNT(*) FROM uploads").fetchone()[0], 0)
        con.close()
        self.init_ok(srv, "a.jpg", 10)  # any case

    def test_declared_type_refused_at_init(self):
        srv = self.start_server(env=TYPES_ENV)
        self.assertError(srv.init("a.png", 10, content_type="text/plain"), 415, "text/plain")
        self.assertError(srv.init("a.png", 10, content_type="Video/MP4; codecs=x"), 415, "video/mp4")
        self.assertError(srv.init("a.png", 10, content_type="nonsense"), 415, "not a media type")
        self.assertError(srv.init("a.png", 10, content_type=7), 400, "content_type")
        self.init_ok(srv, "a.png", 10, content_type="image/png; q=1")
        self.init_ok(srv, "a.png", 10, content_type=None)

    def test_empty_file_is_judged_at_complete(self):
        srv = self.start_server(env=dict(TYPES_ENV, ALLOWED_TYPES="image/*,application/x-empty"))
        init = self.init_ok(srv, "empty.png", 0)
        self.assertEqual(self.assertOk(srv.complete(init["file_id"]))["status"], "complete")
        self.assertEqual(upload_row(srv, init["file_id"])["detected_type"], "application/x-empty")
        srv.stop()
        srv = self.start_server(env=TYPES_ENV, tmpdir=srv.tmp, port=srv.port)
        init = self.init_ok(srv, "empty.png", 0)
        self.assertError(srv.complete(init["file_id"]), 415, "application/x-empty")
        self.assertFailedForType(srv, init["file_id"], "application/x-empty")

    def test_without_allowed_types_nothing_is_sniffed(self):
        srv = self.start_server(env={"ALLOWED_EXTENSIONS": ".png"})
        data = text_bytes(CHUNK + 10)
        init = self.init_ok(srv, "notes.png", data, content_type="text/plain")
        self.upload_all(srv, init, data)
        self.complete_ok(srv, init["file_id"], data)
        self.assertIsNone(upload_row(srv, init["file_id"])["detected_type"])

    def test_bad_configuration_stops_the_server(self):
        for env, says in (({"ALLOWED_TYPES": "image"}, "ALLOWED_TYPES"),
                          ({"ALLOWED_TYPES": "image/*,,video/mp4"}, "ALLOWED_TYPES"),
                          ({"ALLOWED_EXTENSIONS": "../png"}, "ALLOWED_EXTENSIONS")):
            rc, out, err, _ = self.run_binary(env=env)
            self.assertEqual(rc, 2, (env, err))
            self.assertIn(says, err)
        # libmagic's database cannot be loaded: said at start, not at the first upload.
        tmp = tempfile.mkdtemp(prefix="cu-magic-")
        self.addCleanup(shutil.rmtree, tmp, True)
        bad = os.path.join(tmp, "bad.mgc")
        with open(bad, "w") as f:
            f.write("not a magic database\n")
        for path in (bad, os.path.join(tmp, "missing.mgc")):
            rc, out, err, _ = self.run_binary(env=dict(TYPES_ENV, MAGIC=path))
            self.assertEqual(rc, 2, err)
            self.assertIn("configuration: ALLOWED_TYPES: libmagic cannot load its database", err)
        # Without ALLOWED_TYPES libmagic is not even loaded.
        srv = self.start_server(env={"MAGIC": bad})
        self.init_ok(srv, "a.bin", 10)


class TypesMigrationTest(TypesMixin, ServerTestCase):
    """A database of the previous release gains the new columns; an upload whose first part
    was stored before ALLOWED_TYPES existed cannot be judged, and fails at complete."""

    setUp = test_migration.MigrationTest.setUp
    rows = test_migration.MigrationTest.rows

    def test_upgrade_then_types(self):
        self.assertEqual(self.rows()[1], 2)
        env = {"API_KEY": self.ids["api_key"], "JWT_SECRET": self.ids["jwt_secret"],
               "DATABASE_PATH": "./uploads.db", "LOCAL_STORAGE_PATH": "./store",
               "CHUNK_SIZE_MB": str(self.ids["chunk_mb"]), "ALLOWED_TYPES": "*/*"}
        srv = self.start_server(env=env, tmpdir=self.tmp)
        srv.api_key = self.ids["api_key"]
        self.assertEqual(self.rows()[1], test_migration.LATEST)
        con = sqlite3.connect(self.db)
        columns = {r[1] for r in con.execute("PRAGMA table_info(uploads)")}
        con.close()
        self.assertTrue({"detected_type", "failure_code", "failure_reason"} <= columns, columns)
        # Old rows read as before.
        self.assertEqual(self.assertOk(srv.status(self.ids["complete"]))["status"], "complete")
        self.assertError(srv.status(self.ids["cancelled"]), 410, "cancelled")
        pid, tokens, M = self.ids["pending"], self.ids["pending_tokens"], 1 << 20
        self.assertOk(srv.put_part(pid, 1, tokens[1], self.pending[M:2 * M]))
        self.assertError(srv.complete(pid), 415, "before its type was checked")
        self.assertFailedForType(srv, pid, "before its type was checked")
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "store", ".staging", pid + ".data")))
        # A new upload is sniffed and its type recorded.
        data = png_bytes(64, 64)
        init = self.init_ok(srv, "new.png", data)
        self.upload_all(srv, init, data)
        self.assertOk(srv.complete(init["file_id"]))
        self.assertEqual(upload_row(srv, init["file_id"])["detected_type"], "image/png")


class TypesS3Test(TypesMixin, S3TestCase):

    def test_text_named_png_refused_on_s3(self):
        s3 = self.start_s3()
        srv = self.start_s3_server(s3, env=TYPES_ENV)
        data = text_bytes(S3_CHUNK + 1000)
        r = srv.init("notes.png", len(data))
        init = self.assertOk(r)
        fid, tokens, parts = init["file_id"], [p["token"] for p in init["parts"]], split_parts(data, S3_CHUNK)
        self.assertOk(srv.put_part(fid, 1, tokens[1], parts[1]))
        self.assertEqual(len(s3.client().list_multipart_uploads(s3.bucket)), 1)
        self.assertError(srv.put_part_raw(fid, 0, tokens[0], parts[0]), 415, "text/plain")
        # The multipart upload is aborted, the spool empty, no object made.
        self.assertNoMultipartUploads(s3, msg="after a refused type")
        self.assertSpoolEmpty(srv, wait=2)
        self.assertEqual(s3.client().list_objects(s3.bucket), [])
        self.assertFailedForType(srv, fid)
        # A real PNG goes through.
        png = png_bytes(1400, 1400)
        self.assertGreater(len(png), S3_CHUNK)
        init = self.s3_init_ok(srv, "cat.png", png)
        self.s3_upload_all(srv, init, png)
        self.s3_complete_ok(srv, s3, init, "cat.png", png)
        self.assertEqual(upload_row(srv, init["file_id"])["detected_type"], "image/png")


if __name__ == "__main__":
    import unittest
    unittest.main()
