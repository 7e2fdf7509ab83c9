#!/usr/bin/python3
"""Benchmark tus uploads: chunked-uploader against @tus/server and nginx, in one run.

Run from the repo root after `make` and `make test-servers` (tus-js-client, @tus/server and
@tus/file-store come from tests/js/node_modules; nginx with http_dav_module and curl from the
system, as for bench/bench.sh):

    bench/tus_bench.py

Environment:
  BENCH_ROUNDS=3          rounds; each runs every variant once, in turn
  BENCH_SIZE_MB=1024      size of the file uploaded
  BENCH_CHUNK_MB=50       tus-js-client's chunkSize for every tus variant, and nginx's part size
  BENCH_DURABILITY=fsync  ours: DURABILITY (fsync, as by default, or none)
  BENCH_BIN=path          server binary (default build/chunked-uploader)
  BENCH_WORK_DIR=/var/tmp where storage, @tus/file-store's directory and nginx's root go
                          (a filesystem with reflinks, xfs or btrfs, makes ours's assembly of a
                          parallel upload a reflink instead of an in-kernel copy)

Variants, each uploading the same random file with the same client settings:
  ours_1     tus-js-client, one stream, to chunked-uploader (local storage)
  tusnode_1  tus-js-client, one stream, to @tus/server with @tus/file-store
  ours_4     tus-js-client, parallelUploads: 4 (partial uploads and a final one), to ours
  nginx_4    the reference of bench/bench.sh: the file's parts PUT 4 at a time with curl to
             nginx (dav_methods PUT, bench/nginx-put.conf)
Goals: tusnode_1 / ours_1 >= 3, ours_4 / nginx_4 <= 1.25. Times are the client's (tus-js-client's
own clock from start to success; for nginx the wall time of the parallel curls). Every stored
file is checked for its size, and its SHA-256 in the first round. Storage, nginx's root and
@tus/file-store's directory are on real disk (/var/tmp); the source is in /dev/shm when it has
room. The machine may be shared: the report says how many cores it has, and medians are used.
"""
import concurrent.futures
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BENCH_BIN") or os.path.join(REPO, "build", "chunked-uploader")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SIZE = int(os.environ.get("BENCH_SIZE_MB", "1024")) * 1048576
CHUNK = int(os.environ.get("BENCH_CHUNK_MB", "50")) * 1048576
DURABILITY = os.environ.get("BENCH_DURABILITY", "fsync")
DRIVER = os.path.join(REPO, "tests", "js", "tus_upload.js")
NODE_SERVER = os.path.join(REPO, "bench", "tus_node_server.mjs")
API_KEY = "bench-api-key-0123456789"


def log(msg):
    print("[tus-bench %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def die(msg):
    print("tus-bench: error: " + msg, file=sys.stderr)
    sys.exit(1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            die("%s exited at start (status %s)" % (what, proc.returncode))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    die("%s did not listen on %d" % (what, port))


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def peak_rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class Bench(object):
    def __init__(self):
        self.work = tempfile.mkdtemp(prefix="cu-tus-bench-", dir=os.environ.get("BENCH_WORK_DIR", "/var/tmp"))
        shm_free = shutil.disk_usage("/dev/shm").free if os.path.isdir("/dev/shm") else 0
        self.src_dir = tempfile.mkdtemp(prefix="cu-tus-bench-src-",
                                        dir="/dev/shm" if shm_free > 2 * SIZE + (256 << 20) else "/var/tmp")
        self.procs = []
        self.nginx_pidfile = None
        self.results = {}
        self.checked = set()

    # -- setup
    def make_source(self):
        log("creating a %d MiB random source in %s" % (SIZE >> 20, self.src_dir))
        self.src = os.path.join(self.src_dir, "source.bin")
        self.parts = []
        h = hashlib.sha256()
        with open(self.src, "wb") as f:
            left, n = SIZE, 0
            while left:
                piece = os.urandom(min(CHUNK, left))
                f.write(piece)
                h.update(piece)
                part = os.path.join(self.src_dir, "part.%d" % n)
                with open(part, "wb") as p:
                    p.write(piece)
                self.parts.append((n, len(piece), part))
                left -= len(piece)
                n += 1
        self.src_sha = h.hexdigest()

    def start_ours(self):
        self.ours_port = free_port()
        self.ours_dir = os.path.join(self.work, "ours")
        os.makedirs(self.ours_dir)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "API_KEY": API_KEY,
               "JWT_SECRET": "bench-jwt-secret-0123456789abcdef", "SERVER_HOST": "127.0.0.1",
               "SERVER_PORT": str(self.ours_port), "LOCAL_STORAGE_PATH": os.path.join(self.ours_dir, "store"),
               "DATABASE_PATH": os.path.join(self.ours_dir, "uploads.db"), "DURABILITY": DURABILITY,
               "LOG_LEVEL": "warn"}
        logf = open(os.path.join(self.work, "ours.log"), "wb")
        self.ours = subprocess.Popen([BIN], env=env, cwd=self.ours_dir, stdout=logf, stderr=subprocess.STDOUT)
        self.procs.append(self.ours)
        wait_port(self.ours_port, self.ours, "chunked-uploader")

    def start_tusnode(self):
        self.tusnode_port = free_port()
        self.tusnode_dir = os.path.join(self.work, "tusnode")
        os.makedirs(self.tusnode_dir)
        logf = open(os.path.join(self.work, "tusnode.log"), "wb")
        p = subprocess.Popen(["node", NODE_SERVER, str(self.tusnode_port), self.tusnode_dir],
                             stdout=logf, stderr=subprocess.STDOUT, env=dict(os.environ, NODE_NO_WARNINGS="1"))
        self.procs.append(p)
        wait_port(self.tusnode_port, p, "@tus/server")

    def start_nginx(self):
        if not shutil.which("nginx") or "--with-http_dav_module" not in subprocess.run(
                ["nginx", "-V"], stderr=subprocess.PIPE, stdout=subprocess.PIPE).stderr.decode():
            die("nginx with http_dav_module is needed (bench/bench.sh installs it as root)")
        prefix = os.path.join(self.work, "nginx")
        self.nginx_root = os.path.join(self.work, "nginx-root")
        for d in ("logs", "tmp"):
            os.makedirs(os.path.join(prefix, d))
        os.makedirs(self.nginx_root)
        os.makedirs(os.path.join(self.work, "nginx-body"))
        self.nginx_port = free_port()
        with open(os.path.join(REPO, "bench", "nginx-put.conf")) as f:
            conf = f.read()
        for k, v in {"USER_LINE": "user root;" if os.geteuid() == 0 else "", "PREFIX": prefix,
                     "BODY_DIR": os.path.join(self.work, "nginx-body"), "PORT": str(self.nginx_port),
                     "ROOT": self.nginx_root}.items():
            conf = conf.replace("@%s@" % k, v)
        with open(os.path.join(prefix, "nginx.conf"), "w") as f:
            f.write(conf)
        self.nginx_pidfile = os.path.join(prefix, "nginx.pid")
        subprocess.run(["nginx", "-e", os.path.join(prefix, "logs", "error.log"), "-c",
                        os.path.join(prefix, "nginx.conf"), "-p", prefix + "/"], check=True)
        wait_port(self.nginx_port, None, "nginx")

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        if self.nginx_pidfile and os.path.exists(self.nginx_pidfile):
            with open(self.nginx_pidfile) as f:
                pid = int(f.read().strip())
            os.kill(pid, signal.SIGTERM)
            for _ in range(50):
                if not os.path.exists(self.nginx_pidfile):
                    break
                time.sleep(0.1)
        shutil.rmtree(self.work, ignore_errors=True)
        shutil.rmtree(self.src_dir, ignore_errors=True)

    # -- runs
    def tus_run(self, port, parallel, extra=None):
        opts = {"endpoint": "http://127.0.0.1:%d/files/" % port, "file": self.src, "chunkSize": CHUNK,
                "parallelUploads": parallel, "metadata": {"filename": "bench.bin"}, "buffer": True}
        opts.update(extra or {})
        subprocess.run(["sync"])
        p = subprocess.run(["node", DRIVER, json.dumps(opts)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=dict(os.environ, NODE_NO_WARNINGS="1"), timeout=3600)
        try:
            res = json.loads(p.stdout.decode().strip().splitlines()[-1])
        except (IndexError, ValueError):
            die("tus-js-client printed nothing: %s" % p.stderr.decode()[-2000:])
        if not res["ok"]:
            die("tus-js-client failed: %r" % res)
        return res

    def check(self, variant, path):
        size = os.path.getsize(path)
        if size != SIZE:
            die("%s: stored %d bytes, expected %d" % (variant, size, SIZE))
        if variant not in self.checked:
            if sha256_file(path) != self.src_sha:
                die("%s: stored file differs from the source" % variant)
            self.checked.add(variant)
        os.unlink(path)

    def ours_file(self, url):
        fid = url.rsplit("/", 1)[1]
        found = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(self.ours_dir, "store", "files"))
                 for f in fs if f.startswith(fid)]
        if len(found) != 1:
            die("ours: no single stored file for %s: %r" % (fid, found))
        return found[0]

    def run_ours(self, parallel):
        res = self.tus_run(self.ours_port, parallel, {"apiKey": API_KEY})
        self.check("ours_%d" % parallel, self.ours_file(res["url"]))
        return res["seconds"]

    def run_tusnode(self):
        res = self.tus_run(self.tusnode_port, 1)
        path = os.path.join(self.tusnode_dir, res["url"].rsplit("/", 1)[1])
        self.check("tusnode_1", path)
        os.unlink(path + ".json")
        return res["seconds"]

    def run_nginx(self):
        shutil.rmtree(os.path.join(self.nginx_root, "up"), ignore_errors=True)
        subprocess.run(["sync"])
        url = "http://127.0.0.1:%d/up/part.%%d" % self.nginx_port

        def put(part):
            n, _, path = part
            r = subprocess.run(["curl", "-sS", "--fail-with-body", "-o", "/dev/null", "-T", path, url % n])
            if r.returncode != 0:
                die("nginx: PUT of part %d failed" % n)

        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as ex:
            list(ex.map(put, self.parts))
        took = time.monotonic() - t0
        joined = os.path.join(self.work, "nginx-joined")
        with open(joined, "wb") as out:
            for n, size, _ in self.parts:
                part = os.path.join(self.nginx_root, "up", "part.%d" % n)
                if os.path.getsize(part) != size:
                    die("nginx: part %d has the wrong size" % n)
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
                os.unlink(part)
        self.check("nginx_4", joined)
        return took

    def run(self):
        if not os.access(BIN, os.X_OK):
            die("%s not built (make)" % BIN)
        for p in (DRIVER, os.path.join(REPO, "tests", "js", "node_modules", "@tus", "server")):
            if not os.path.exists(p):
                die("%s missing (make test-servers)" % p)
        self.make_source()
        self.start_ours()
        self.start_tusnode()
        self.start_nginx()
        variants = [("ours_1", lambda: self.run_ours(1)), ("tusnode_1", self.run_tusnode),
                    ("ours_4", lambda: self.run_ours(4)), ("nginx_4", self.run_nginx)]
        for r in range(1, ROUNDS + 1):
            for name, fn in variants:
                t = fn()
                self.results.setdefault(name, []).append(t)
                log("round %d/%d %-9s %.2f s (%.0f MiB/s)" % (r, ROUNDS, name, t, SIZE / 1048576 / t))
        self.rss = peak_rss_kib(self.ours.pid)
        self.report()

    def report(self):
        med = {k: statistics.median(v) for k, v in self.results.items()}
        mib = SIZE / 1048576
        print("tus uploads of %d MiB, tus-js-client chunkSize %d MiB, %d rounds (medians); ours with "
              "DURABILITY=%s" % (mib, CHUNK >> 20, ROUNDS, DURABILITY))
        fs = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "-T", self.work], stdout=subprocess.PIPE).stdout
        print("machine: %d cores, Linux %s; storage on %s (the machine may be shared: figures vary "
              "between runs)" % (os.cpu_count(), os.uname().release, fs.decode().strip() or "?"))
        for name in ("ours_1", "tusnode_1", "ours_4", "nginx_4"):
            print("  %-10s %7.2f s  %6.0f MiB/s   (%s)" % (name, med[name], mib / med[name],
                                                       " ".join("%.2f" % t for t in self.results[name])))
        speedup = med["tusnode_1"] / med["ours_1"]
        ratio = med["ours_4"] / med["nginx_4"]
        print("  @tus/server / ours, one stream:       %.2fx  (goal >= 3)  %s" % (speedup, "ok" if speedup >= 3 else "MISSED"))
        print("  ours parallelUploads 4 / nginx 4 PUTs: %.2f   (goal <= 1.25) %s" % (ratio, "ok" if ratio <= 1.25 else "MISSED"))
        if self.rss:
            print("  ours peak RSS over the run: %.1f MiB" % (self.rss / 1024))


def main():
    b = Bench()
    try:
        b.run()
    finally:
        b.stop()


if __name__ == "__main__":
    main()
