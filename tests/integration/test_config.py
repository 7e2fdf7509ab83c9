"""Configuration: start-up errors (exit status 2, the variable named on stderr), warnings,
.env handling, and the command line (--help, --version, serve)."""

import hashlib
import hmac
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import CHUNK, REPO, ServerTestCase, b64url  # noqa: E402


class StartupErrorTest(ServerTestCase):

    def assertStartupError(self, env, variable, tmpdir=None):
        rc, out, err, _ = self.run_binary(env=env, timeout=5, tmpdir=tmpdir)
        self.assertEqual(rc, 2, "%r: exit status %s, expected 2\nstdout: %s\nstderr: %s"
                         % (env, rc, out[-2000:], err[-2000:]))
        self.assertIn(variable, err, "%r: stderr does not name %s: %r" % (env, variable, err[-2000:]))

    def test_missing_required(self):
        for env, var in (({"API_KEY": None}, "API_KEY"), ({"JWT_SECRET": None}, "JWT_SECRET"),
                         ({"API_KEY": ""}, "API_KEY"), ({"JWT_SECRET": ""}, "JWT_SECRET")):
            with self.subTest(env=env):
                self.assertStartupError(env, var)

    def test_bad_numbers(self):
        cases = [("CHUNK_SIZE_MB", v) for v in ("abc", "0", "-1", "1.5", "4097", "1x", "99999999999999999999")]
        cases += [("SERVER_PORT", v) for v in ("x", "70000", "-1")]
        cases += [("UPLOAD_TTL_HOURS", v) for v in ("abc", "0", "-1")]
        cases += [("MAX_PARTS", "abc")]
        cases += [("MAX_FILE_SIZE", "abc"), ("WEBHOOK_MAX_ATTEMPTS", "abc"), ("WEBHOOK_RETRY_BASE_SECONDS", "abc"),
                  ("CLEANUP_INTERVAL_SECONDS", "abc"), ("MAX_CONNECTIONS", "abc"),
                  ("LOG_LEVEL", "verbose"), ("STORAGE_BACKEND", "ftp"), ("DURABILITY", "sometimes")]
        for var, value in cases:
            with self.subTest(var=var, value=value):
                self.assertStartupError({var: value}, var)

    def test_storage_path_under_a_regular_file(self):
        tmp = tempfile.mkdtemp(prefix="cu-it-")
        with open(os.path.join(tmp, "file"), "w") as f:
            f.write("not a directory\n")
        self.assertStartupError({"LOCAL_STORAGE_PATH": os.path.join(tmp, "file", "sub")},
                                "LOCAL_STORAGE_PATH", tmpdir=tmp)

    def test_storage_path_created_if_missing(self):
        tmp = tempfile.mkdtemp(prefix="cu-it-")
        nested = os.path.join(tmp, "a", "b", "store")
        srv = self.start_server(env={"LOCAL_STORAGE_PATH": nested}, tmpdir=tmp)
        self.assertTrue(os.path.isdir(nested))
        data = os.urandom(100)
        init = self.init_ok(srv, "n.bin", data)
        self.upload_all(srv, init, data)
        c = self.complete_ok(srv, init["file_id"], data)
        self.assertEqual(os.path.normpath(srv.resolve(c["final_path"])),
                         os.path.join(nested, "files", init["file_id"] + "_n.bin"))


class ConfigTest(ServerTestCase):

    def test_large_chunk_warns_about_cloudflare(self):
        srv = self.start_server(env={"CHUNK_SIZE_MB": "100"})
        init = self.assertOk(srv.init("big.bin", 250 * CHUNK))
        self.assertEqual(init["chunk_size"], 100 * CHUNK)
        self.assertEqual(init["total_parts"], 3)
        self.assertIn("cloudflare", srv.log_text().lower(), "no warning about Cloudflare for CHUNK_SIZE_MB=100")

    def test_chunk_95_does_not_warn(self):
        srv = self.start_server(env={"CHUNK_SIZE_MB": "95"})
        init = self.assertOk(srv.init("big.bin", 95 * CHUNK + 1))
        self.assertEqual(init["chunk_size"], 95 * CHUNK)
        self.assertEqual(init["total_parts"], 2)
        self.assertNotIn("cloudflare", srv.log_text().lower())

    def test_dotenv_is_read(self):
        tmp = tempfile.mkdtemp(prefix="cu-it-")
        with open(os.path.join(tmp, ".env"), "w") as f:
            f.write("# chunked-uploader settings\n"
                    "\n"
                    "export API_KEY=dotenv-api-key-1\n"
                    'JWT_SECRET="dotenv secret with spaces"\n'
                    "CHUNK_SIZE_MB='2'\n"
                    "# CHUNK_SIZE_MB=7\n")
        srv = self.start_server(env={"API_KEY": None, "JWT_SECRET": None, "CHUNK_SIZE_MB": None}, tmpdir=tmp)
        srv.api_key = "dotenv-api-key-1"
        init = self.assertOk(srv.init("e.bin", 5 * CHUNK))
        self.assertEqual(init["chunk_size"], 2 * CHUNK)
        self.assertEqual(init["total_parts"], 3)
        tok = init["parts"][0]["token"]
        h, p, s = tok.split(".")
        want = b64url(hmac.new(b"dotenv secret with spaces", (h + "." + p).encode(), hashlib.sha256).digest())
        self.assertEqual(s, want, "token not signed with the .env JWT_SECRET (quotes must be stripped)")
        srv.api_key = "wrong"
        self.assertError(srv.init("e.bin", 5), 401)

    def test_environment_wins_over_dotenv(self):
        tmp = tempfile.mkdtemp(prefix="cu-it-")
        with open(os.path.join(tmp, ".env"), "w") as f:
            f.write("API_KEY=from-dotenv\nCHUNK_SIZE_MB=3\n")
        srv = self.start_server(env={"API_KEY": "from-environment"}, tmpdir=tmp)
        srv.api_key = "from-environment"
        init = self.assertOk(srv.init("w.bin", 10))
        self.assertEqual(init["chunk_size"], CHUNK)
        srv.api_key = "from-dotenv"
        self.assertError(srv.init("w.bin", 10), 401)

    def test_help_and_version(self):
        env = {"API_KEY": None, "JWT_SECRET": None}
        rc, out, err, _ = self.run_binary(env=env, args=["--help"])
        self.assertEqual(rc, 0, "--help exit status %s\n%s" % (rc, err))
        self.assertIn("usage", (out + err).lower())
        self.assertIn("serve", out + err)
        rc, out, err, _ = self.run_binary(env=env, args=["--version"])
        self.assertEqual(rc, 0, "--version exit status %s\n%s" % (rc, err))
        m = re.search(r"\d+\.\d+\.\d+", out + err)
        self.assertTrue(m, "--version printed no version: %r %r" % (out, err))
        srv = self.start_server()
        health = self.assertOk(srv.request("GET", "/health"))
        self.assertIn(health["version"], out + err, "--version differs from /health's version")

    def test_documented_table_is_the_one_the_server_reads(self):
        """docs/CONFIGURATION.md holds exactly the table the binary is built from, and --help
        names every variable in it."""
        env = {"API_KEY": None, "JWT_SECRET": None}
        rc, table, err, _ = self.run_binary(env=env, args=["--config-markdown"])
        self.assertEqual(rc, 0, err)
        names = re.findall(r"^\| `([A-Z0-9_]+)` \|", table, re.M)
        self.assertGreater(len(names), 30, table)
        for name in ("API_KEY", "MAX_CONNECTIONS_PER_IP", "HEADER_TIMEOUT_SECONDS", "BODY_MIN_RATE"):
            self.assertIn(name, names)
        with open(os.path.join(REPO, "docs", "CONFIGURATION.md")) as f:
            doc = f.read()
        self.assertIn(table, doc, "docs/CONFIGURATION.md is out of date: regenerate its table "
                      "with chunked-uploader --config-markdown")
        rc, out, err, _ = self.run_binary(env=env, args=["--help"])
        self.assertEqual(rc, 0, err)
        for name in names:
            self.assertRegex(out, r"(?m)^  %s\b" % name)

    def test_serve_subcommand(self):
        srv = self.start_server(args=["serve"])
        self.assertEqual(self.assertOk(srv.request("GET", "/health"))["status"], "ok")
        data = os.urandom(CHUNK + 3)
        init = self.init_ok(srv, "s.bin", data)
        self.upload_all(srv, init, data)
        self.complete_ok(srv, init["file_id"], data)


if __name__ == "__main__":
    import unittest
    unittest.main()
