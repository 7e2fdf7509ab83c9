"""The original README's Python example client, run unmodified against our server.

The client is extracted from CU_SEEDS_DIR/chunked-uploader.md at test time (the seed's
code is never copied into this repository); only its four constants are replaced."""

import os
import re
import subprocess
import sys
import tempfile
import shutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import API_KEY, CHUNK, SEEDS_DIR, UUID_RE, ServerTestCase, file_sha256  # noqa: E402

PYTHON = "/usr/bin/python3"


def extract_client(readme_text):
    m = re.search(r"^## Example Client \(Python\)\s*$", readme_text, re.M)
    if not m:
        raise AssertionError("no '## Example Client (Python)' section in the seed README")
    rest = readme_text[m.end():]
    b = re.search(r"^```python\s*\n(.*?)^```\s*$", rest, re.M | re.S)
    if not b:
        raise AssertionError("no ```python block under '## Example Client (Python)'")
    return b.group(1)


def set_constant(code, name, value_src):
    new, n = re.subn(r"^%s\s*=.*$" % re.escape(name), "%s = %s" % (name, value_src), code, flags=re.M)
    if n != 1:
        raise AssertionError("constant %s found %d times in the seed client (expected once)" % (name, n))
    return new


class SeedClientTest(ServerTestCase):

    def test_readme_python_client(self):
        readme = os.path.join(SEEDS_DIR, "chunked-uploader.md")
        if not os.path.isfile(readme):
            self.fail("seed README not found at %s (set CU_SEEDS_DIR to the seeds folder)" % readme)
        with open(readme, encoding="utf-8") as f:
            code = extract_client(f.read())
        self.assertIn("def upload_file", code)

        srv = self.start_server()
        work = tempfile.mkdtemp(prefix="cu-seed-client-")
        self.addCleanup(shutil.rmtree, work, True)
        src = os.path.join(work, "sample-video.bin")
        with open(src, "wb") as f:
            f.write(os.urandom(3 * CHUNK + CHUNK // 2 + 17))

        code = set_constant(code, "API_KEY", repr(API_KEY))
        code = set_constant(code, "BASE_URL", repr("http://127.0.0.1:%d" % srv.port))
        code = set_constant(code, "FILE_PATH", repr(src))
        code = set_constant(code, "CHUNK_SIZE", "1 * 1024 * 1024")
        client = os.path.join(work, "client.py")
        with open(client, "w", encoding="utf-8") as f:
            f.write(code)

        if not os.access(PYTHON, os.X_OK):
            self.fail("%s not found" % PYTHON)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", work)}
        p = subprocess.run([PYTHON, client], cwd=work, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=120)
        out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
        self.assertEqual(p.returncode, 0, "seed client failed (%d)\nstdout:\n%s\nstderr:\n%s"
                         % (p.returncode, out[-3000:], err[-3000:]))
        self.assertEqual(out.count("Upload complete:"), 2, out)
        self.assertIn("Part 3: 4/4", out)

        found = {}
        for d, _, files in os.walk(srv.files_dir):
            for name in files:
                found[os.path.relpath(os.path.join(d, name), srv.files_dir)] = os.path.join(d, name)
        self.assertEqual(len(found), 2, "expected exactly two files under files/: %r" % sorted(found))
        plain = [k for k in found if "/" not in k]
        nested = [k for k in found if k.startswith("videos/2024/december/")]
        self.assertEqual(len(plain), 1, sorted(found))
        self.assertEqual(len(nested), 1, sorted(found))
        want = file_sha256(src)
        for rel in plain + nested:
            base = os.path.basename(rel)
            self.assertTrue(base.endswith("_sample-video.bin"), rel)
            self.assertRegex(base[:-len("_sample-video.bin")], UUID_RE)
            self.assertEqual(file_sha256(found[rel]), want, "%s differs from the source" % rel)
        for line in out.splitlines():
            if line.startswith("Upload complete: "):
                self.assertTrue(os.path.isfile(srv.resolve(line[len("Upload complete: "):].strip())), line)


if __name__ == "__main__":
    import unittest
    unittest.main()
