"""Shared harness for the chunked-uploader integration tests.

Starts the real server binary in a private temp dir on a free loopback port with a clean
environment, talks to it over real HTTP (http.client, or raw sockets where the test needs
byte-level control), and checks every shutdown for a clean exit and sanitizer reports.

Environment:
  CU_BINARY     absolute path of the server binary (default <repo>/build/chunked-uploader)
  CU_SEEDS_DIR  the seeds folder (default <repo>/../shared/seeds)
"""

import base64
import collections
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
import threading
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


def read_log(path):
    """A log file's text ("" when it does not exist yet)."""
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""

def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def proc_stat(pid):
    """(state, ppid, process group) of a process from /proc/<pid>/stat; None once it is gone."""
    try:
        with open("/proc/%s/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[2])


def live_processes():
    """(pid, ppid, process group) of every process that has not exited (zombies left out)."""
    for name in os.listdir("/proc"):
        st = proc_stat(name) if name.isdigit() else None
        if st and st[0] != "Z":
            yield int(name), st[1], st[2]


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


def http_request(port, method, path, body=None, headers=None, timeout=30, source=None):
    """One request on a new connection (from the loopback address source, when given)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout,
                                      source_address=(source, 0) if source else None)
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


class Trickler(object):
    """Sends one byte on a RawConn every `interval` seconds from a thread of its own (a
    client that is never quite idle but makes no real progress), until stop()."""

    def __init__(self, conn, interval=0.2):
        self.conn, self.interval = conn, interval
        self.stopped = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopped.wait(self.interval):
            if not self.conn.try_send(b"t"):
                return
            self.sent += 1

    def stop(self):
        self.stopped.set()
        self.thread.join(5)

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
        return read_log(self.log_path)

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


# ----------------------------------------------------------------------------- SMB (Samba)

SMB_TOOL_PATH = "/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/sbin:/usr/local/bin"
SMB_SHARE = "uploads"
SMB_USER = "root"  # an existing unix account, added to the private passdb only
SMB_PASS = "it-smb-pass-7c3e1a"


def smb_tool(name):
    """Absolute path of a Samba tool; a missing one fails the test with what to install."""
    p = shutil.which(name, path=os.environ.get("PATH", "") + ":" + SMB_TOOL_PATH)
    if not p:
        raise AssertionError("%s not found: the SMB tests need Samba (apt-get install samba smbclient)" % name)
    return p


def _die_with_parent():
    """In the child before exec: SIGKILL when the test process (the thread that started it)
    dies, so an aborted run leaves no smbd behind (its children follow their parent)."""
    import ctypes
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class SmbServer(object):
    """A private Samba smbd for the SMB backend tests.

    Runs as root in the foreground in its own session (so its process group is its pid),
    with a private smb.conf in a temp dir: every state/lock/cache/pid/private directory is
    under that dir, it listens on a free high port on 127.0.0.1 only, NetBIOS off, SMB2+,
    no printing, a tdbsam passdb of its own holding one user (SMB_USER, an existing unix
    account, so no system user is created) and one share [uploads] at <tmp>/share.
    The share's files are read back straight from <tmp>/share; smbclient is the
    independent check that the server is up and serving."""

    def __init__(self, tmpdir=None, port=None, password=SMB_PASS, share=SMB_SHARE, user=SMB_USER):
        if os.geteuid() != 0:
            raise AssertionError("the SMB tests start smbd, which must run as root (euid is %d)" % os.geteuid())
        self.smbd = smb_tool("smbd")
        self.smbpasswd = smb_tool("smbpasswd")
        self.smbclient_bin = smb_tool("smbclient")
        self.tmp = tmpdir or tempfile.mkdtemp(prefix="cu-smb-")
        self.port = port or free_port()
        self.password = password
        self.share = share
        self.user = user
        self.host = "127.0.0.1"
        self.share_dir = os.path.join(self.tmp, "share")
        self.conf = os.path.join(self.tmp, "smb.conf")
        self.log_path = os.path.join(self.tmp, "smbd.log")
        self.proc = None
        self.pgid = None
        try:
            self._write_conf()
            self._add_user()
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise

    # -- setup
    def _write_conf(self):
        d = {}
        for name in ("private", "lock", "state", "cache", "pid", "ncalrpc", "log", "usershares",
                     "winbindd", "binddns", "ntp_signd", "share"):
            d[name] = os.path.join(self.tmp, name)
            os.makedirs(d[name], exist_ok=True)
        os.chmod(d["usershares"], 0o1770)
        lines = [
            "[global]",
            "server role = standalone server",
            "workgroup = CUTEST",
            "netbios name = CUTEST%d" % (self.port % 10000),
            "smb ports = %d" % self.port,
            "interfaces = 127.0.0.1",
            "bind interfaces only = yes",
            "disable netbios = yes",
            "server min protocol = SMB2",
            "security = user",
            "map to guest = never",
            "passdb backend = tdbsam:%s" % os.path.join(d["private"], "passdb.tdb"),
            "smb passwd file = %s" % os.path.join(d["private"], "smbpasswd"),
            "private dir = %s" % d["private"],
            "lock directory = %s" % d["lock"],
            "state directory = %s" % d["state"],
            "cache directory = %s" % d["cache"],
            "pid directory = %s" % d["pid"],
            "ncalrpc dir = %s" % d["ncalrpc"],
            "usershare path = %s" % d["usershares"],
            "usershare max shares = 0",
            "winbindd socket directory = %s" % d["winbindd"],
            "binddns dir = %s" % d["binddns"],
            "ntp signd socket directory = %s" % d["ntp_signd"],
            "log file = %s" % os.path.join(d["log"], "log.%m"),
            "max log size = 0",
            "load printers = no",
            "printing = bsd",
            "printcap name = /dev/null",
            "disable spoolss = yes",
            # Counts SMB2 requests (smbstatus --profile): how the server's writes arrive.
            "smbd profiling level = count",
            "",
            "[%s]" % self.share,
            "path = %s" % self.share_dir,
            "read only = no",
            "browseable = yes",
            "valid users = %s" % self.user,
            "force user = %s" % self.user,
            "create mask = 0644",
            "directory mask = 0755",
            "",
        ]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines))

    def _add_user(self):
        env = dict(base_env(), PATH=SMB_TOOL_PATH)
        p = subprocess.run([self.smbpasswd, "-c", self.conf, "-a", "-s", self.user],
                           input=("%s\n%s\n" % (self.password, self.password)).encode(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, timeout=30)
        if p.returncode != 0:
            raise AssertionError("smbpasswd -a %s failed (%d): %s"
                                 % (self.user, p.returncode, p.stdout.decode("utf-8", "replace")))

    # -- lifecycle
    def start(self, timeout=20):
        assert self.proc is None, "smbd already running"
        with open(self.log_path, "ab") as logf:
            logf.write(("\n=== smbd start %s port %d ===\n" % (time.strftime("%H:%M:%S"), self.port)).encode())
            logf.flush()
            self.proc = subprocess.Popen(
                [self.smbd, "--foreground", "--no-process-group", "--debug-stdout", "-d", "1",
                 "-s", self.conf],
                cwd=self.tmp, env=dict(base_env(), PATH=SMB_TOOL_PATH), stdin=subprocess.DEVNULL,
                stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_die_with_parent)
        self.pgid = self.proc.pid
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=20):
        deadline = time.time() + timeout
        last = "port closed"
        while time.time() < deadline:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self.proc = None
                self._kill_group()
                raise AssertionError("smbd exited with status %s during startup\n%s" % (rc, self.log_tail()))
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
            except OSError as e:
                last = "port: %s" % e
                time.sleep(0.05)
                continue
            rc, out = self.smbclient("ls", timeout=10)
            if rc == 0:
                return
            last = "smbclient (%d): %s" % (rc, out[-500:])
            time.sleep(0.1)
        raise AssertionError("smbd not serving //%s:%d/%s within %ss (last: %s)\n%s"
                             % (self.host, self.port, self.share, timeout, last, self.log_tail()))

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def group_members(self):
        """Pids still in smbd's process group (the daemon and its children)."""
        if self.pgid is None:
            return []
        return [pid for pid, _, pgrp in live_processes() if pgrp == self.pgid]

    def _kill_group(self, wait=10):
        if self.pgid is None:
            return
        deadline = time.time() + wait
        while self.group_members():
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except ProcessLookupError:
                break
            if time.time() > deadline:
                raise AssertionError("smbd processes survive SIGKILL: %r" % self.group_members())
            time.sleep(0.02)
        left = self.group_members()
        if left:
            raise AssertionError("smbd processes left: %r" % left)

    def stop(self, timeout=10):
        """SIGTERM to smbd, wait for it, then make sure none of its children remain."""
        if self.proc is None:
            self._kill_group()
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self._kill_group()
        if proc.poll() is None:
            proc.wait(5)

    def kill(self):
        """kill -9 of smbd and all its children: every client connection drops at once."""
        proc, self.proc = self.proc, None
        self._kill_group()
        if proc is not None:
            proc.wait(5)

    def restart(self, hard=True, timeout=20):
        """Kill smbd (and so every connection to it) and start it again on the same port."""
        if hard:
            self.kill()
        else:
            self.stop()
        return self.start(timeout)

    def destroy(self):
        try:
            self.stop()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def log_text(self):
        return read_log(self.log_path)

    def log_tail(self, n=40):
        return "\n".join(self.log_text().splitlines()[-n:])

    # -- independent client
    def smbclient(self, command, user=None, password=None, share=None, timeout=30, cwd=None):
        """Run smbclient -c command against the share; returns (rc, combined output)."""
        args = [self.smbclient_bin, "-p", str(self.port), "//%s/%s" % (self.host, share or self.share),
                "-U", "%s%%%s" % (user or self.user, self.password if password is None else password),
                "-c", command]
        try:
            p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                               env=dict(base_env(), PATH=SMB_TOOL_PATH), cwd=cwd or self.tmp,
                               stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return -1, "smbclient timed out after %ss" % timeout
        return p.returncode, p.stdout.decode("utf-8", "replace")

    def profile(self, settle=1.5):
        """smbd's request counters (smbstatus --profile; smb.conf has them counted), as
        {name: int}: smb2_write_count, smb2_write_inbytes, smb2_ioctl_count, ... Each smbd
        publishes its counters one second after a request, hence the wait (settle s)."""
        time.sleep(settle)
        p = subprocess.run([smb_tool("smbstatus"), "-s", self.conf, "--profile"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30,
                           env=dict(base_env(), PATH=SMB_TOOL_PATH), stdin=subprocess.DEVNULL)
        out = p.stdout.decode("utf-8", "replace")
        if p.returncode != 0:
            raise AssertionError("smbstatus --profile failed (%d): %s" % (p.returncode, out[-1000:]))
        counts = {}
        for line in out.splitlines():
            name, sep, value = line.partition(":")
            if sep and value.strip().isdigit():
                counts[name.strip()] = int(value)
        return counts

    def fetch(self, remote_path):
        """A file's bytes read back over SMB with smbclient (not from the disk)."""
        local = os.path.join(self.tmp, "fetch-%d" % random.randrange(1 << 30))
        remote = remote_path.replace("/", "\\")
        rc, out = self.smbclient('get "%s" "%s"' % (remote, local))
        if rc != 0:
            raise AssertionError("smbclient get %s failed (%d): %s" % (remote_path, rc, out[-1000:]))
        try:
            with open(local, "rb") as f:
                return f.read()
        finally:
            os.unlink(local)

    # -- paths on the share
    def path(self, *rel):
        """A path on the share's directory on disk (rel parts joined below the share root)."""
        rel = [r.strip("/") for r in rel if r and r.strip("/")]
        return os.path.join(self.share_dir, *rel)

    def url(self, *rel):
        """The smb:// URL the server reports for rel: smb://<host>/<share>/<rel...>."""
        rel = [r.strip("/") for r in rel if r and r.strip("/")]
        return "smb://%s/%s/%s" % (self.host, self.share, "/".join(rel))

    def url_to_path(self, url):
        prefix = "smb://%s/%s/" % (self.host, self.share)
        if not url.startswith(prefix):
            raise AssertionError("%r does not start with %r" % (url, prefix))
        return self.path(url[len(prefix):])

    def files_under(self, *rel):
        """Regular files below a directory of the share (recursively), as absolute paths."""
        top = self.path(*rel)
        return sorted(os.path.join(d, f) for d, _, fs in os.walk(top) for f in fs)

    def server_env(self, smb_path="", **extra):
        """Environment overrides for a chunked-uploader Server using this share."""
        env = {
            "STORAGE_BACKEND": "smb",
            "SMB_HOST": self.host,
            "SMB_PORT": str(self.port),
            "SMB_USER": self.user,
            "SMB_PASS": self.password,
            "SMB_SHARE": self.share,
            "SMB_PATH": smb_path if smb_path else None,
        }
        env.update(extra)
        return env


class SmbLatencyProxy(object):
    """A TCP proxy in front of an smbd that holds back every reply by `delay` seconds (a NAS
    a few network hops away, as far as the client can tell) and watches the SMB2 requests go
    by: it counts WRITE requests in flight, from the moment the whole request has reached
    the proxy until the moment its final reply is passed on, over every connection together.
    A client that makes one SMB call at a time never has more than one in flight.

    SMB2 as smbd speaks it here: each message in a 4-byte length frame (RFC 1002 session
    message), a 64-byte header starting b"\\xfeSMB" (command at byte 12, status at 8, flags at
    16, next command at 20, message id at 24), signed at session setup only and not
    encrypted, so headers are plain. An interim reply (STATUS_PENDING) does not end a
    request."""

    SMB2_WRITE = 0x0009
    STATUS_PENDING = 0x00000103
    FLAG_RESPONSE = 0x00000001

    def __init__(self, target_port, delay=0.1, host="127.0.0.1", hold_first_write=0.0):
        self.target = (host, target_port)
        self.delay = delay
        # The first WRITE request of all is held this long before smbd sees it (a write
        # stuck on the network), the others pass at once.
        self.hold_first_write = hold_first_write
        self.first_write_seen = threading.Event()
        self.lock = threading.Lock()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.sockets = []
        self.closed = False
        self.reset()
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self):
        """Starts counting afresh (writes still in flight stay counted)."""
        with self.lock:
            self.in_flight = getattr(self, "in_flight", 0)
            self.max_in_flight = self.in_flight
            self.writes = 0
            self.connections_writing = set()

    def stats(self):
        with self.lock:
            return {"max_writes_in_flight": self.max_in_flight, "writes": self.writes,
                    "connections_writing": len(self.connections_writing)}

    def close(self):
        self.closed = True
        for s in [self.listener] + self.sockets:
            try:
                s.close()
            except OSError:
                pass

    # -- internals
    @staticmethod
    def _frames(buf):
        """Splits whole frames off buf (a bytearray); returns them as a list."""
        out = []
        while len(buf) >= 4:
            n = int.from_bytes(buf[1:4], "big")
            if len(buf) < 4 + n:
                break
            out.append(bytes(buf[:4 + n]))
            del buf[:4 + n]
        return out

    @classmethod
    def _headers(cls, frame):
        """(command, status, flags, message id) of each SMB2 header in a frame."""
        body, at = frame[4:], 0
        while at + 64 <= len(body) and body[at:at + 4] == b"\xfeSMB":
            h = body[at:at + 64]
            yield (int.from_bytes(h[12:14], "little"), int.from_bytes(h[8:12], "little"),
                   int.from_bytes(h[16:20], "little"), int.from_bytes(h[24:32], "little"))
            nxt = int.from_bytes(h[20:24], "little")
            if not nxt:
                break
            at += nxt

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            self.sockets += [client, server]
            conn = {"id": len(self.sockets), "writes": set()}
            threading.Thread(target=self._requests, args=(client, server, conn), daemon=True).start()
            threading.Thread(target=self._replies, args=(server, client, conn), daemon=True).start()

    @classmethod
    def _frames_from(cls, sock):
        """Yields the frames read from sock, each once it is whole, until sock closes."""
        buf = bytearray()
        while True:
            data = sock.recv(1 << 20)
            if not data:
                return
            buf += data
            yield from cls._frames(buf)

    def _requests(self, src, dst, conn):
        try:
            for frame in self._frames_from(src):
                hold = 0.0
                for cmd, _, flags, mid in self._headers(frame):
                    if cmd == self.SMB2_WRITE and not flags & self.FLAG_RESPONSE:
                        if not self.first_write_seen.is_set():
                            self.first_write_seen.set()
                            hold = self.hold_first_write
                        with self.lock:
                            conn["writes"].add(mid)
                            self.in_flight += 1
                            self.writes += 1
                            self.connections_writing.add(conn["id"])
                            self.max_in_flight = max(self.max_in_flight, self.in_flight)
                if hold:
                    time.sleep(hold)
                dst.sendall(frame)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _replies(self, src, dst, conn):
        queue, cond, done = collections.deque(), threading.Condition(), []

        def sender():
            try:
                while True:
                    with cond:
                        while not queue and not done:
                            cond.wait()
                        if not queue:
                            return
                        due, frame, ends = queue.popleft()
                    pause = due - time.time()
                    if pause > 0:
                        time.sleep(pause)
                    if ends:  # counted out before the client can see the reply
                        with self.lock:
                            self.in_flight -= ends
                    dst.sendall(frame)
            except OSError:
                pass

        t = threading.Thread(target=sender, daemon=True)
        t.start()
        try:
            for frame in self._frames_from(src):
                ends = 0
                for cmd, status, _, mid in self._headers(frame):
                    if cmd == self.SMB2_WRITE and status != self.STATUS_PENDING:
                        with self.lock:
                            if mid in conn["writes"]:
                                conn["writes"].discard(mid)
                                ends += 1
                with cond:
                    queue.append((time.time() + self.delay, frame, ends))
                    cond.notify()
        except OSError:
            pass
        finally:
            with cond:
                done.append(True)
                cond.notify()
            t.join(self.delay + 5)
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


# ----------------------------------------------------------------------------- S3 (s3rver behind tests/s3/launcher.js)

S3_TOOLS = os.path.join(REPO, "tests", "s3")  # launcher.js, check.js, package.json, package-lock.json
S3_BUCKET = "it-uploads"
S3_ACCESS_KEY = "AKIACUTEST5F1C9A7E3B"
S3_SECRET_KEY = "it-s3-secret/9d2e4b6a8c0f1e3d+Q"
S3_REGION = "us-east-1"
S3_CHUNK = 5 * 1024 * 1024  # CHUNK_SIZE_MB=5, the smallest S3 allows
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def s3_node():
    """Absolute path of node; installs tests/s3/node_modules with `npm ci` once if missing."""
    node = shutil.which("node")
    if not node:
        raise AssertionError("node not found: the S3 tests need Node.js 20+ and npm")
    if not os.path.isdir(os.path.join(S3_TOOLS, "node_modules", "s3rver")):
        npm = shutil.which("npm")
        if not npm:
            raise AssertionError("npm not found: the S3 tests need it to install tests/s3 (npm ci)")
        import fcntl
        with open(os.path.join(tempfile.gettempdir(), "cu-s3-npm-ci.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one install even with tests run in parallel
            if not os.path.isdir(os.path.join(S3_TOOLS, "node_modules", "s3rver")):
                p = subprocess.run([npm, "ci", "--silent", "--no-audit", "--no-fund"], cwd=S3_TOOLS,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
                if p.returncode != 0:
                    raise AssertionError("npm ci in %s failed (%d):\n%s"
                                         % (S3_TOOLS, p.returncode, p.stdout.decode("utf-8", "replace")[-4000:]))
    return node


class S3Server(object):
    """s3rver 3.7.1 behind tests/s3/launcher.js (SigV4 verified with AWS's signer, plus
    ListMultipartUploads / ListParts / AbortMultipartUpload) on a free loopback port, with
    one bucket, its data in a temp dir. slow_ms delays every UploadPart answer; the first
    fail_parts UploadPart requests are answered 503 SlowDown; session_token, when set, must
    come with every request; long_etags gives parts ETags of that many characters; the first
    cut_gets GetObject answers break off after 1 MiB."""

    def __init__(self, tmpdir=None, port=None, bucket=S3_BUCKET, access_key=S3_ACCESS_KEY,
                 secret=S3_SECRET_KEY, region=S3_REGION, slow_ms=0, session_token=None, fail_parts=0,
                 long_etags=0, cut_gets=0):
        self.tmp = tmpdir or tempfile.mkdtemp(prefix="cu-s3-")
        self.session_token = session_token
        self.fail_parts = fail_parts
        self.long_etags = long_etags
        self.cut_gets = cut_gets
        self.port = port or free_port()
        self.bucket, self.access_key, self.secret, self.region = bucket, access_key, secret, region
        self.slow_ms = slow_ms
        self.data_dir = os.path.join(self.tmp, "s3data")
        self.log_path = os.path.join(self.tmp, "launcher.log")
        self.proc = None

    @property
    def endpoint(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self, timeout=30):
        node = s3_node()
        assert self.proc is None, "launcher already running"
        args = [node, os.path.join(S3_TOOLS, "launcher.js"), "--port", str(self.port), "--dir", self.data_dir,
                "--bucket", self.bucket, "--access-key", self.access_key, "--secret", self.secret,
                "--region", self.region]
        if self.slow_ms:
            args += ["--slow-ms", str(self.slow_ms)]
        if self.session_token is not None:
            args += ["--session-token", self.session_token]
        if self.fail_parts:
            args += ["--fail-parts", str(self.fail_parts)]
        if self.long_etags:
            args += ["--long-etags", str(self.long_etags)]
        if self.cut_gets:
            args += ["--cut-gets", str(self.cut_gets)]
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(args, cwd=self.tmp, env=dict(base_env(), NODE_NO_WARNINGS="1"),
                                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=logf)
        deadline = time.time() + timeout
        line = b""
        while time.time() < deadline and not line.endswith(b"\n"):
            r, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if r:
                b = os.read(self.proc.stdout.fileno(), 1)
                if not b:
                    break
                line += b
        if line.strip() != b"ready":
            self.stop(check=False)
            raise AssertionError("S3 launcher did not become ready (got %r)\n%s" % (line, self.log_tail()))
        return self

    def stop(self, check=True, timeout=10):
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                if check:
                    raise AssertionError("S3 launcher ignored SIGTERM\n%s" % self.log_tail())
        proc.stdout.close()
        if check and proc.returncode != 0:
            raise AssertionError("S3 launcher exit status %s\n%s" % (proc.returncode, self.log_tail()))

    def destroy(self):
        try:
            self.stop(check=False)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def log_tail(self, n=40):
        try:
            with open(self.log_path, "rb") as f:
                return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-n:])
        except OSError:
            return ""

    def stats(self):
        """{"accepted", "connections", "requests"}: TCP connections the launcher accepted, those
        of them that carried S3 requests, and the S3 requests (this call is none of them)."""
        r = http_request(self.port, "GET", "/_launcher/stats")
        if r.status != 200:
            raise AssertionError("launcher stats: %r" % (r,))
        return json.loads(r.body)

    def server_env(self, **extra):
        """Environment overrides for a chunked-uploader Server using this bucket."""
        env = {
            "STORAGE_BACKEND": "s3",
            "S3_ENDPOINT": self.endpoint,
            "S3_BUCKET": self.bucket,
            "S3_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_SESSION_TOKEN": self.session_token,
            "CHUNK_SIZE_MB": "5",
        }
        env.update(extra)
        return env

    def client(self, **kw):
        return S3Client(self.endpoint, kw.get("access_key", self.access_key), kw.get("secret", self.secret),
                        kw.get("region", self.region), kw.get("session_token", self.session_token))


class S3Error(AssertionError):
    def __init__(self, code, status, message):
        super().__init__("S3 error %s (HTTP %s): %s" % (code, status, message))
        self.code, self.status, self.message = code, status, message


class S3Client(object):
    """An S3 client independent of the server: the AWS SDK for JavaScript v3 (tests/s3/check.js)."""

    def __init__(self, endpoint, access_key, secret, region=S3_REGION, session_token=None):
        self.endpoint, self.access_key, self.secret, self.region = endpoint, access_key, secret, region
        self.session_token = session_token

    def call(self, cmd, *args, timeout=60):
        token = ["--session-token", self.session_token] if self.session_token is not None else []
        p = subprocess.run([s3_node(), os.path.join(S3_TOOLS, "check.js"), "--endpoint", self.endpoint,
                            "--access-key", self.access_key, "--secret", self.secret, "--region", self.region]
                           + token + [cmd] + [str(a) for a in args],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                           env=dict(base_env(), NODE_NO_WARNINGS="1"))
        out = p.stdout.decode("utf-8", "replace")
        if p.returncode == 1:
            j = json.loads(out)
            raise S3Error(j.get("error"), j.get("status"), j.get("message"))
        if p.returncode != 0:
            raise AssertionError("check.js %s failed (%d): %s %s" % (cmd, p.returncode, out, p.stderr.decode()[-3000:]))
        return json.loads(out)

    def get_object(self, bucket, key):
        fd, path = tempfile.mkstemp(prefix="cu-s3-get-")
        os.close(fd)
        try:
            self.call("get-object", bucket, key, path)
            with open(path, "rb") as f:
                return f.read()
        finally:
            os.unlink(path)

    def head_object(self, bucket, key):
        return self.call("head-object", bucket, key)

    def put_object(self, bucket, key, data):
        with tempfile.NamedTemporaryFile(prefix="cu-s3-put-") as f:
            f.write(data)
            f.flush()
            return self.call("put-object", bucket, key, f.name)

    def list_objects(self, bucket, prefix=""):
        return self.call("list-objects", bucket, prefix)

    def list_multipart_uploads(self, bucket, prefix=""):
        return self.call("list-multipart-uploads", bucket, prefix)

    def create_multipart_upload(self, bucket, key):
        return self.call("create-multipart-upload", bucket, key)["UploadId"]

    def upload_part(self, bucket, key, upload_id, number, data):
        with tempfile.NamedTemporaryFile(prefix="cu-s3-part-") as f:
            f.write(data)
            f.flush()
            return self.call("upload-part", bucket, key, upload_id, number, f.name)["ETag"]

    def list_parts(self, bucket, key, upload_id):
        return self.call("list-parts", bucket, key, upload_id)

    def complete_multipart_upload(self, bucket, key, upload_id, etags):
        return self.call("complete-multipart-upload", bucket, key, upload_id, ",".join(etags))

    def abort_multipart_upload(self, bucket, key, upload_id):
        return self.call("abort-multipart-upload", bucket, key, upload_id)


def s3_curl(endpoint, method, path, access_key, secret, region=S3_REGION, body=b"", headers=None,
            payload_hash=None, timeout=30):
    """One request signed by curl's own SigV4 (--aws-sigv4); path already URI-encoded.
    Returns (status, body bytes)."""
    curl = shutil.which("curl")
    if not curl:
        raise AssertionError("curl not found")
    with tempfile.TemporaryDirectory(prefix="cu-s3-curl-") as d:
        out, inp = os.path.join(d, "out"), os.path.join(d, "in")
        with open(inp, "wb") as f:
            f.write(body or b"")
        args = [curl, "-s", "-o", out, "-w", "%{http_code}", "-X", method, "--aws-sigv4", "aws:amz:%s:s3" % region,
                "--user", "%s:%s" % (access_key, secret),
                "-H", "x-amz-content-sha256: %s" % (payload_hash or hashlib.sha256(body or b"").hexdigest())]
        if body:
            args += ["--data-binary", "@" + inp]
        for k, v in (headers or {}).items():
            args += ["-H", "%s: %s" % (k, v)]
        p = subprocess.run(args + [endpoint + path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
        if p.returncode != 0:
            raise AssertionError("curl failed (%d): %s" % (p.returncode, p.stderr.decode()))
        with open(out, "rb") as f:
            return int(p.stdout.decode()), f.read()


def sigv4_sign(method, path, query, headers, payload_hash, access_key, secret, region=S3_REGION, when=None):
    """A third SigV4 signer, straight from AWS's documentation (S3 flavour: path segments
    URI-encoded once). path is decoded ("/bucket/my key"), query a list of decoded (name,
    value) pairs, headers a dict (all signed). Returns the Authorization header value and
    sets x-amz-date and x-amz-content-sha256 in headers."""
    from urllib.parse import quote
    enc = lambda s: quote(s, safe="-_.~")  # noqa: E731
    when = when or time.gmtime()
    amz_date, day = time.strftime("%Y%m%dT%H%M%SZ", when), time.strftime("%Y%m%d", when)
    headers["x-amz-date"] = amz_date
    headers["x-amz-content-sha256"] = payload_hash
    canon_headers = sorted((k.lower(), " ".join(str(v).split())) for k, v in headers.items())
    signed = ";".join(k for k, _ in canon_headers)
    canonical = "\n".join([
        method,
        "/".join(enc(s) for s in path.split("/")),
        "&".join("%s=%s" % (enc(k), enc(v)) for k, v in sorted(query)),
        "".join("%s:%s\n" % kv for kv in canon_headers),
        signed,
        payload_hash])
    scope = "%s/%s/s3/aws4_request" % (day, region)
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s" % (access_key, scope, signed, sig)


def s3_error_code(body):
    m = re.search(rb"<Code>([^<]*)</Code>", body or b"")
    return m.group(1).decode() if m else None


class S3TestCase(ServerTestCase):
    """ServerTestCase with an S3 backend: start_s3() for the fake S3, start_s3_server() for a
    chunked-uploader on it (TEMP_STORAGE_PATH=<server tmp>/spool), checks via S3Client."""

    def start_s3(self, **kw):
        s3 = S3Server(**kw)
        self.addCleanup(self._cleanup_s3, s3)
        s3.start()
        return s3

    def _cleanup_s3(self, s3):
        try:
            s3.stop()
        finally:
            if not hasattr(self, "_log_tails"):
                self._log_tails = []
            self._log_tails.append(("S3 launcher " + s3.tmp, s3.log_tail(30)))
            s3.destroy()

    def start_s3_server(self, s3, env=None, wait=True, tmpdir=None, port=None):
        tmp = tmpdir or tempfile.mkdtemp(prefix="cu-it-s3-")
        spool = os.path.join(tmp, "spool")
        os.makedirs(spool, exist_ok=True)
        srv = self.start_server(env=s3.server_env(TEMP_STORAGE_PATH=spool, **(env or {})), wait=wait,
                                tmpdir=tmp, port=port)
        srv.spool = spool
        return srv

    def spool_files(self, srv):
        return sorted(os.path.join(d, f) for d, _, fs in os.walk(srv.spool) for f in fs)

    def assertSpoolEmpty(self, srv, msg="", wait=0.0):
        deadline = time.time() + wait
        left = self.spool_files(srv)
        while left and time.time() < deadline:
            time.sleep(0.05)
            left = self.spool_files(srv)
        self.assertEqual(left, [], "spool (TEMP_STORAGE_PATH) not empty %s" % msg)

    def s3_key(self, init_reply, filename, prefix=""):
        """<S3_PREFIX/><dir>/<file_id>_<name> for a filename given at init."""
        d, _, name = filename.rpartition("/")
        parts = [p for p in (prefix.strip("/"), d) if p]
        return "/".join(parts + ["%s_%s" % (init_reply["file_id"], name)])

    def s3_init_ok(self, srv, filename, data_or_size, **extra):
        size = data_or_size if isinstance(data_or_size, int) else len(data_or_size)
        j = self.assertOk(srv.init(filename, size, **extra), "(init %r, %d bytes)" % (filename, size))
        self.assertEqual(j.get("chunk_size"), S3_CHUNK, "chunk_size: %r" % (j,))
        self.assertEqual(j.get("total_parts"), (size + S3_CHUNK - 1) // S3_CHUNK, "total_parts: %r" % (j,))
        return j

    def s3_upload_all(self, srv, init_reply, data, threads=4, shuffle=True, skip=()):
        parts = split_parts(data, S3_CHUNK)
        tokens = {p["part"]: p["token"] for p in init_reply["parts"]}
        order = [n for n in range(len(parts)) if n not in skip]
        if shuffle:
            random.shuffle(order)
        fid = init_reply["file_id"]
        with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as ex:
            results = dict(ex.map(lambda n: (n, srv.put_part(fid, n, tokens[n], parts[n], timeout=120)), order))
        for n in order:
            j = self.assertOk(results[n], "(part %d)" % n)
            self.assertEqual(j["checksum_sha256"], sha256_hex(parts[n]), "part %d checksum" % n)
        return results

    def s3_complete_ok(self, srv, s3, init_reply, filename, data, prefix=""):
        """complete answers 200 with s3://<bucket>/<key>, and the object is the data, byte for byte."""
        fid = init_reply["file_id"]
        j = self.assertOk(srv.complete(fid, timeout=120))
        key = self.s3_key(init_reply, filename, prefix)
        self.assertEqual(j["status"], "complete")
        self.assertEqual(j["storage_backend"], "s3")
        self.assertEqual(j["final_path"], "s3://%s/%s" % (s3.bucket, key))
        self.assertIntField(j, "total_size", len(data))
        self.assertS3Object(s3, key, data)
        return j

    def assertS3Object(self, s3, key, data):
        c = s3.client()
        got = c.get_object(s3.bucket, key)
        self.assertEqual(len(got), len(data), "object %s has %d bytes, expected %d" % (key, len(got), len(data)))
        self.assertTrue(got == data, "object %s differs from the uploaded data (sha256 %s, expected %s)"
                        % (key, sha256_hex(got), sha256_hex(data)))
        self.assertEqual(c.head_object(s3.bucket, key)["ContentLength"], len(data))

    def assertNoMultipartUploads(self, s3, prefix="", msg=""):
        left = s3.client().list_multipart_uploads(s3.bucket, prefix)
        self.assertEqual(left, [], "multipart uploads left behind %s" % msg)


# ----------------------------------------------------------------------------- browser

BROWSER_DIR = os.path.join(REPO, "tests", "browser")  # runners, lib/, pages/ (docs/ARCHITECTURE.md)
JS_TOOLS = os.path.join(REPO, "tests", "js", "node_modules")


def browser_run(script, config, timeout=120):
    """Runs a browser test runner (tests/browser/<script>: Node driving headless Chromium) with
    config as JSON on its stdin and returns the JSON line it writes; its stderr (the pages'
    console) goes into the failure message."""
    node = shutil.which("node")
    if not node:
        raise AssertionError("node not found: the browser tests need Node.js 20+")
    if not os.path.isdir(os.path.join(JS_TOOLS, "playwright-core")):
        raise AssertionError("%s has no playwright-core: run `make test-servers`" % JS_TOOLS)
    try:
        p = subprocess.run([node, os.path.join(BROWSER_DIR, script)], input=json.dumps(config).encode(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                           env=dict(base_env(), NODE_NO_WARNINGS="1"), cwd=BROWSER_DIR)
    except subprocess.TimeoutExpired as e:
        raise AssertionError("%s did not finish within %ss\n%s"
                             % (script, timeout, (e.stderr or b"").decode("utf-8", "replace")[-4000:]))
    err = p.stderr.decode("utf-8", "replace")
    if p.returncode != 0:
        raise AssertionError("%s failed (%d):\n%s" % (script, p.returncode, err[-6000:]))
    lines = p.stdout.decode("utf-8", "replace").strip().splitlines()
    if not lines:
        raise AssertionError("%s wrote nothing\n%s" % (script, err[-4000:]))
    return json.loads(lines[-1])
