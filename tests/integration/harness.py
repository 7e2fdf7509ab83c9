"""Shared harness for the chunked-uploader integration tests.

Starts the real server binary in a private temp dir on a free loopback port with a clean
environment, talks to it over real HTTP (http.client, or raw sockets where the test needs
byte-level control), and checks every shutdown for a clean exit and sanitizer reports.

Environment:
  CU_BINARY     absolute path of the server binary (default <repo>/build/chunked-uploader)
  CU_SEEDS_DIR  the seeds folder (default <repo>/../shared/seeds)
"""

import base64
import concurrent.futures
import hashlib
import hmac
import http.client
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.environ.get("CU_BINARY") or os.path.join(REPO, "build", "chunked-uploader")
SEEDS_DIR = os.environ.get("CU_SEEDS_DIR") or os.path.join(REPO, "..", "shared", "seeds")

API_KEY = "it-api-key-5f1c9a7e3b"
JWT_SECRET = "it-jwt-secret-9d2e4b6a8c0f1e3d"
CHUNK = 1024 * 1024  # CHUNK_SIZE_MB=1

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer")
LOG_NAME = "server.log"

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
RFC3339_Z_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
HEX64_RE = re.compile(r"^[0-9a-f]{64}$")


# ----------------------------------------------------------------------------- helpers

def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def split_parts(data, chunk=CHUNK):
    return [data[i:i + chunk] for i in range(0, len(data), chunk)]


def rfc3339_to_epoch(s):
    m = RFC3339_Z_RE.match(s)
    if not m:
        raise ValueError("not an RFC 3339 UTC time: %r" % (s,))
    import calendar
    return calendar.timegm(time.strptime(s[:19], "%Y-%m-%dT%H:%M:%S"))


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def b64url_decode(s):
    s = s + "=" * (-len(s) % 4)
    return base64.urlsafe_b64decode(s.encode())


def make_jwt(claims, secret, alg="HS256", header=None):
    """Build a JWT by hand (no library): HS256/HS384/HS512 signatures or alg 'none'."""
    hdr = header if header is not None else {"alg": alg, "typ": "JWT"}
    h = b64url(json.dumps(hdr, separators=(",", ":")).encode())
    p = b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = (h + "." + p).encode()
    if alg == "none":
        return h + "." + p + "."
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    sig = hmac.new(secret.encode() if isinstance(secret, str) else secret, signing_input, digest).digest()
    return h + "." + p + "." + b64url(sig)


def jwt_parts(token):
    h, p, s = token.split(".")
    return json.loads(b64url_decode(h)), json.loads(b64url_decode(p)), s


def chunked_body(data, piece=65536):
    """Encode data with HTTP/1.1 chunked transfer coding."""
    out = []
    for i in range(0, len(data), piece):
        c = data[i:i + piece]
        out.append(b"%x\r\n" % len(c) + c + b"\r\n")
    out.append(b"0\r\n\r\n")
    return b"".join(out)


def base_env():
    env = {}
    for k in ("PATH", "HOME", "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
        if k in os.environ:
            env[k] = os.environ[k]
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    return env


def require_binary():
    if not (os.path.isfile(BINARY) and os.access(BINARY, os.X_OK)):
        raise AssertionError("server binary not found or not executable: %s "
                             "(build it with make, or set CU_BINARY)" % BINARY)


# ----------------------------------------------------------------------------- HTTP

class Response(object):
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # dict with lower-case names
        self.body = body
        self._json = None

    @property
    def json(self):
        if self._json is None:
            try:
                self._json = json.loads(self.body.decode("utf-8"))
            except Exception as e:
                raise AssertionError("reply is not JSON (%s): status %s body %r"
                                     % (e, self.status, self.body[:500]))
        return self._json

    def __repr__(self):
        return "<Response %s %r>" % (self.status, self.body[:300])


def http_request(port, method, path, body=None, headers=None, timeout=30):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        hdrs = dict(headers or {})
        if body is not None and not isinstance(body, (bytes, bytearray)):
            body = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        data = r.read()
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        conn.close()


class RawConn(object):
    """A raw TCP connection for byte-level HTTP tests."""

    def __init__(self, port, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def try_send(self, data):
        """Send, tolerating a peer that already answered and closed."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError, socket.timeout, OSError):
            return False

    def readable(self, timeout):
        if self.buf:
            return True
        r, _, _ = select.select([self.sock], [], [], timeout)
        return bool(r)

    def _fill(self, deadline):
        remaining = deadline - time.time()
        if remaining <= 0:
            raise socket.timeout("timed out waiting for response bytes")
        self.sock.settimeout(remaining)
        try:
            b = self.sock.recv(65536)
        except ConnectionResetError:
            b = b""
        if not b:
            raise EOFError("connection closed")
        self.buf += b

    def read_response(self, timeout=10):
        """Read one response (interim 1xx responses are returned too)."""
        deadline = time.time() + timeout
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        status = int(parts[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        if 100 <= status < 200:
            return Response(status, headers, b"")
        if "content-length" in headers:
            n = int(headers["content-length"])
            while len(self.buf) < n:
                self._fill(deadline)
            body, self.buf = self.buf[:n], self.buf[n:]
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                while b"\r\n" not in self.buf:
                    self._fill(deadline)
                line, self.buf = self.buf.split(b"\r\n", 1)
                size = int(line.split(b";")[0], 16)
                while len(self.buf) < size + 2:
                    self._fill(deadline)
                body += self.buf[:size]
                self.buf = self.buf[size + 2:]
                if size == 0:
                    break
        else:
            try:
                while True:
                    self._fill(deadline)
            except EOFError:
                pass
            body, self.buf = self.buf, b""
        return Response(status, headers, body)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def request_head(method, path, headers):
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: 127.0.0.1"]
    for k, v in headers.items():
        lines.append("%s: %s" % (k, v))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def raw_request(port, method, path, headers=None, body=b"", early_wait=0.0, timeout=15,
                content_length=True):
    """Send the head, then the body slice by slice while watching for an answer: a server
    that refuses from the headers alone (and may close) is read, not written into. This
    avoids the broken pipe / reset a plain client meets then. early_wait: seconds to wait
    for such an answer before sending any body. Returns (Response, bytes_of_body_sent)."""
    hdrs = {"Connection": "close"}
    if content_length and body is not None:
        hdrs["Content-Length"] = str(len(body))
    hdrs.update(headers or {})
    body = body or b""
    c = RawConn(port, timeout=timeout)
    try:
        c.send(request_head(method, path, hdrs))
        sent = 0
        if early_wait and body and c.readable(early_wait):
            body = b""
        deadline = time.time() + timeout
        while sent < len(body) and time.time() < deadline:
            r, w, _ = select.select([c.sock], [c.sock], [], 1.0)
            if r:
                resp = c.read_response(timeout)
                if 100 <= resp.status < 200:
                    continue  # interim answer: keep sending
                return resp, sent  # a final answer before the whole body: stop writing
            if w:
                try:
                    sent += c.sock.send(body[sent:sent + 65536])
                except (BrokenPipeError, ConnectionResetError):
                    break
        r = c.read_response(timeout)
        while 100 <= r.status < 200:
            r = c.read_response(timeout)
        return r, sent
    finally:
        c.close()


# ----------------------------------------------------------------------------- server

class Server(object):
    def __init__(self, env=None, args=(), tmpdir=None, port=None):
        self.tmp = tmpdir or tempfile.mkdtemp(prefix="cu-it-")
        self.port = port or free_port()
        self.overrides = dict(env or {})
        self.args = list(args)
        self.proc = None
        self.log_path = os.path.join(self.tmp, LOG_NAME)
        self.api_key = self.overrides.get("API_KEY", API_KEY) or API_KEY

    # -- paths
    @property
    def storage(self):
        p = self.env().get("LOCAL_STORAGE_PATH", os.path.join(self.tmp, "uploads"))
        return p if os.path.isabs(p) else os.path.normpath(os.path.join(self.tmp, p))

    @property
    def staging(self):
        return os.path.join(self.storage, ".staging")

    @property
    def files_dir(self):
        return os.path.join(self.storage, "files")

    def resolve(self, path):
        """A path the server reported (maybe relative to its cwd) as an absolute path."""
        return path if os.path.isabs(path) else os.path.normpath(os.path.join(self.tmp, path))

    def env(self):
        env = base_env()
        env.update({
            "API_KEY": API_KEY,
            "JWT_SECRET": JWT_SECRET,
            "SERVER_HOST": "127.0.0.1",
            "SERVER_PORT": str(self.port),
            "LOCAL_STORAGE_PATH": os.path.join(self.tmp, "uploads"),
            "DATABASE_PATH": os.path.join(self.tmp, "uploads.db"),
            "CHUNK_SIZE_MB": "1",
            "LOG_LEVEL": "debug",
        })
        for k, v in self.overrides.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = str(v)
        return env

    # -- lifecycle
    def start(self, wait=True):
        require_binary()
        assert self.proc is None, "server already running"
        with open(self.log_path, "ab") as logf:
            logf.write(("\n=== start %s %s ===\n" % (time.strftime("%H:%M:%S"), " ".join(self.args))).encode())
            logf.flush()
            self.proc = subprocess.Popen([BINARY] + self.args, cwd=self.tmp, env=self.env(),
                                         stdin=subprocess.DEVNULL, stdout=logf,
                                         stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=15):
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self.proc = None
                self.check_sanitizers()
                raise AssertionError("server exited with status %s during startup\n%s"
                                     % (rc, self.log_tail()))
            try:
                r = http_request(self.port, "GET", "/health", timeout=2)
                if r.status == 200:
                    return
                last = r
            except (OSError, http.client.HTTPException) as e:
                last = e
            time.sleep(0.05)
        raise AssertionError("server not ready within %ss (last: %r)\n%s"
                             % (timeout, last, self.log_tail()))

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=10):
        """SIGTERM, wait, assert exit status 0 and a sanitizer-clean log."""
        if self.proc is None:
            return
        proc = self.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                self.proc = None
                self.check_sanitizers()
                raise AssertionError("server did not exit within %ss after SIGTERM\n%s"
                                     % (timeout, self.log_tail()))
        self.proc = None
        self.check_sanitizers()
        if proc.returncode != 0:
            raise AssertionError("server exit status after SIGTERM is %s, expected 0\n%s"
                                 % (proc.returncode, self.log_tail()))

    def kill9(self):
        if self.proc is None:
            return
        try:
            self.proc.send_signal(signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.proc = None
        self.check_sanitizers()

    def restart(self, wait=True):
        if self.proc is not None:
            self.stop()
        return self.start(wait)

    def check_sanitizers(self):
        text = self.log_text()
        for marker in SANITIZER_MARKERS:
            if marker in text:
                i = text.index(marker)
                raise AssertionError("sanitizer report (%r) in server log:\n%s"
                                     % (marker, text[max(0, i - 2000):i + 6000]))

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, n=60):
        lines = self.log_text().splitlines()
        return "\n".join(lines[-n:])

    def destroy(self):
        if self.proc is not None:
            try:
                self.proc.kill()
                self.proc.wait(5)
            except Exception:
                pass
            self.proc = None
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- HTTP
    def request(self, method, path, body=None, headers=None, timeout=30):
        return http_request(self.port, method, path, body, headers, timeout)

    def api_headers(self, extra=None):
        h = {"X-API-Key": self.api_key}
        h.update(extra or {})
        return h

    def init(self, filename, total_size, headers=None, **extra):
        body = {"filename": filename, "total_size": total_size}
        body.update(extra)
        return self.request("POST", "/upload/init", body, self.api_headers(headers))

    def put_part(self, file_id, n, token, data, headers=None, timeout=60):
        h = {"Content-Type": "application/octet-stream"}
        if token is not None:
            h["Authorization"] = "Bearer " + token
        h.update(headers or {})
        return self.request("PUT", "/upload/%s/part/%s" % (file_id, n), bytes(data), h, timeout)

    def put_part_raw(self, file_id, n, token, data, headers=None, early_wait=0.0):
        """A part PUT that tolerates early refusals (see raw_request); returns a Response."""
        h = {"Content-Type": "application/octet-stream"}
        if token is not None:
            h["Authorization"] = "Bearer " + token
        h.update(headers or {})
        r, _ = raw_request(self.port, "PUT", "/upload/%s/part/%s" % (file_id, n), h, bytes(data),
                           early_wait=early_wait)
        return r

    def status(self, file_id, headers=None):
        return self.request("GET", "/upload/%s/status" % file_id, None,
                            self.api_headers() if headers is None else headers)

    def complete(self, file_id, headers=None, timeout=60):
        return self.request("POST", "/upload/%s/complete" % file_id, None,
                            self.api_headers() if headers is None else headers, timeout)

    def cancel(self, file_id, headers=None):
        return self.request("DELETE", "/upload/%s" % file_id, None,
                            self.api_headers() if headers is None else headers)


# ----------------------------------------------------------------------------- test case

class ServerTestCase(unittest.TestCase):
    maxDiff = 4000

    def run(self, result=None):
        self._log_tails = []
        if result is None:
            return super().run(result)
        before = len(result.failures) + len(result.errors)
        out = super().run(result)
        if len(result.failures) + len(result.errors) > before and self._log_tails:
            for label, tail in self._log_tails:
                sys.stderr.write("\n----- server log tail (%s) -----\n%s\n----- end of log -----\n"
                                 % (label, tail))
            sys.stderr.flush()
        return out

    def start_server(self, env=None, args=(), wait=True, tmpdir=None, port=None):
        srv = Server(env=env, args=args, tmpdir=tmpdir, port=port)
        self.addCleanup(self._cleanup_server, srv)
        srv.start(wait=wait)
        return srv

    def run_binary(self, env=None, args=(), timeout=5, tmpdir=None, files=None):
        """Run the binary to its exit (start-up errors, --help, --version) with the
        harness environment; stdout and stderr captured apart. Returns (rc, out, err, tmp)."""
        require_binary()
        srv = Server(env=env, tmpdir=tmpdir)
        self.addCleanup(shutil.rmtree, srv.tmp, True)
        for name, text in (files or {}).items():
            with open(os.path.join(srv.tmp, name), "w") as f:
                f.write(text)
        p = subprocess.Popen([BINARY] + list(args), cwd=srv.tmp, env=srv.env(), stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            raise AssertionError("%s %s did not exit within %ss\nstdout: %s\nstderr: %s"
                                 % (BINARY, " ".join(args), timeout, out[-3000:], err[-3000:]))
        out, err = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
        for marker in SANITIZER_MARKERS:
            if marker in out + err:
                raise AssertionError("sanitizer report (%r):\n%s" % (marker, err[-8000:]))
        return p.returncode, out, err, srv.tmp

    def _cleanup_server(self, srv):
        try:
            if srv.running():
                srv.stop()
            elif srv.proc is not None:
                srv.stop()  # exited on its own: still check status and sanitizers
        finally:
            if not hasattr(self, "_log_tails"):
                self._log_tails = []
            self._log_tails.append((srv.tmp, srv.log_tail(80)))
            srv.destroy()

    # -- assertions
    def assertJsonContentType(self, r):
        ct = r.headers.get("content-type", "")
        self.assertTrue(ct.lower().startswith("application/json"),
                        "Content-Type is %r, expected application/json (%r)" % (ct, r))

    def assertError(self, r, status, contains=None, allow_extra=False):
        """status is an int or a tuple of allowed ints."""
        allowed = status if isinstance(status, (tuple, list, set)) else (status,)
        self.assertIn(r.status, allowed, "expected HTTP %s, got %r" % (status, r))
        self.assertJsonContentType(r)
        j = r.json
        self.assertIsInstance(j, dict, "error body is not an object: %r" % (r,))
        if not allow_extra:
            self.assertEqual(set(j.keys()), {"error", "status"},
                             "error body must be exactly {error, status}: %r" % (j,))
        self.assertIsInstance(j.get("error"), str, "error field must be a string: %r" % (j,))
        self.assertTrue(j["error"], "error message is empty: %r" % (j,))
        self.assertIs(type(j.get("status")), int, "status field must be an int: %r" % (j,))
        self.assertEqual(j["status"], r.status, "status field differs from HTTP status: %r" % (r,))
        if contains is not None:
            self.assertIn(contains.lower(), j["error"].lower(),
                          "error message %r does not mention %r" % (j["error"], contains))
        return j

    def assertOk(self, r, msg=""):
        self.assertEqual(r.status, 200, "expected 200, got %r %s" % (r, msg))
        self.assertJsonContentType(r)
        return r.json

    def assertRfc3339(self, s):
        self.assertIsInstance(s, str)
        self.assertRegex(s, RFC3339_Z_RE)

    def assertIntField(self, d, key, value=None):
        self.assertIn(key, d)
        self.assertIs(type(d[key]), int, "%s must be an int: %r" % (key, d))
        if value is not None:
            self.assertEqual(d[key], value, "%s: %r" % (key, d))

    # -- common flows
    def init_ok(self, srv, filename, data_or_size, **extra):
        size = data_or_size if isinstance(data_or_size, int) else len(data_or_size)
        r = srv.init(filename, size, **extra)
        j = self.assertOk(r, "(init %r, %d bytes)" % (filename, size))
        self.assertEqual(j.get("total_parts"), (size + CHUNK - 1) // CHUNK, "total_parts: %r" % (j,))
        return j

    def upload_all(self, srv, init_reply, data, threads=4, shuffle=True, skip=()):
        """Upload every part (parallel, optionally shuffled); assert each answers 200."""
        parts = split_parts(data)
        tokens = {p["part"]: p["token"] for p in init_reply["parts"]}
        order = [n for n in range(len(parts)) if n not in skip]
        if shuffle:
            random.shuffle(order)
        fid = init_reply["file_id"]

        def one(n):
            return n, srv.put_part(fid, n, tokens[n], parts[n])

        results = {}
        with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as ex:
            for n, r in ex.map(one, order):
                results[n] = r
        for n in order:
            j = self.assertOk(results[n], "(part %d)" % n)
            self.assertEqual(j["checksum_sha256"], sha256_hex(parts[n]), "part %d checksum" % n)
        return results

    def status_parts(self, srv, file_id):
        j = self.assertOk(srv.status(file_id))
        return {p["part"]: (p["status"], p["checksum_sha256"]) for p in j["parts"]}

    def complete_ok(self, srv, file_id, data):
        j = self.assertOk(srv.complete(file_id))
        self.assertEqual(j["status"], "complete")
        path = srv.resolve(j["final_path"])
        self.assertTrue(os.path.isfile(path), "final file missing: %s" % path)
        self.assertEqual(file_sha256(path), sha256_hex(data), "final file differs from source")
        return j
