#!/usr/bin/python3
"""Request rates and slow clients: chunked-uploader's HTTP front against nginx, in one run.

  bench/http_bench.py [--binary build/chunked-uploader] [--rounds 3] [--seconds 5]
                      [--slow 1000]

1. Rates (wrk -t2 -c64 on loopback, rounds alternating): nginx answering `return 200`
   (the reference), our GET /health, and our GET /upload/{id}/status of a small upload (the
   API key checked, a database read, a JSON reply). Goals: /health at least 0.5 × nginx,
   status at least 0.25 ×.
2. Slow clients: N connections (from many loopback addresses, 8 each) that send a header
   block one byte at a time, every 2 s; while they are held, /health is timed from another
   address, and the server's resident memory and threads are read from /proc. Then the
   same for N idle keep-alive connections (one request each, then silence). Finally, with a
   short HEADER_TIMEOUT_SECONDS, the slow ones are shown to be cut (408) on time.

Prints a table; exits non-zero only when something did not work (not for a missed goal).
"""
import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = "bench-key-0123456789"


def log(msg):
    print("[http-bench %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("nothing listens on %d" % port)


class Nginx:
    def __init__(self, work):
        self.dir = os.path.join(work, "nginx")
        os.makedirs(os.path.join(self.dir, "logs"))
        self.port = free_port()
        with open(os.path.join(self.dir, "nginx.conf"), "w") as f:
            f.write("worker_processes 2;\npid %s/nginx.pid;\nerror_log %s/logs/error.log;\n"
                    "events { worker_connections 4096; }\n"
                    "http { access_log off;\n server { listen 127.0.0.1:%d;\n"
                    "  location / { return 200 '{\"status\":\"ok\"}'; } } }\n"
                    % (self.dir, self.dir, self.port))
        subprocess.run(["nginx", "-c", os.path.join(self.dir, "nginx.conf"), "-p", self.dir],
                       check=True)
        wait_port(self.port)

    def stop(self):
        subprocess.run(["nginx", "-c", os.path.join(self.dir, "nginx.conf"), "-p", self.dir,
                        "-s", "stop"], stderr=subprocess.DEVNULL)


class Server:
    def __init__(self, binary, work, **env):
        self.dir = tempfile.mkdtemp(dir=work)
        self.port = free_port()
        e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "API_KEY": KEY,
             "JWT_SECRET": "bench-jwt-secret-0123456789", "SERVER_HOST": "127.0.0.1",
             "SERVER_PORT": str(self.port), "LOG_LEVEL": "warn", "DURABILITY": "none",
             # wrk is one client asking far more than any honest one: a limit it never reaches,
             # so that every request still goes through the rate limiter's bucket.
             "RATE_LIMIT_PER_MINUTE": "60000000", "RATE_LIMIT_BURST": "1000000"}
        e.update({k: str(v) for k, v in env.items()})
        self.log = open(os.path.join(self.dir, "server.log"), "wb")
        self.proc = subprocess.Popen([binary], cwd=self.dir, env=e, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        wait_port(self.port)

    def status(self):
        """VmRSS (KiB) and Threads of the server process."""
        out = {}
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "Threads"):
                    out[k] = int(v.split()[0])
        return out

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def wrk(url, seconds, headers=()):
    cmd = ["wrk", "-t2", "-c64", "-d%ds" % seconds]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run(cmd + [url], stdout=subprocess.PIPE, check=True).stdout.decode()
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if not m or bad:
        raise SystemExit("wrk failed on %s:\n%s" % (url, out))
    return float(m.group(1))


def request(port, method, path, body=None, headers=None, source=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10,
                                   source_address=(source, 0) if source else None)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def rates(binary, work, rounds, seconds):
    nginx = Nginx(work)
    srv = Server(binary, work)
    try:
        status, body = request(srv.port, "POST", "/upload/init",
                               json.dumps({"filename": "bench.bin", "total_size": 100}),
                               {"X-API-Key": KEY, "Content-Type": "application/json"})
        fid = json.loads(body)["file_id"]
        res = {"nginx": [], "health": [], "status": []}
        for r in range(rounds):
            res["nginx"].append(wrk("http://127.0.0.1:%d/" % nginx.port, seconds))
            res["health"].append(wrk("http://127.0.0.1:%d/health" % srv.port, seconds))
            res["status"].append(wrk("http://127.0.0.1:%d/upload/%s/status" % (srv.port, fid),
                                     seconds, ["X-API-Key: " + KEY]))
            log("round %d: nginx %.0f, /health %.0f, status %.0f requests/s"
                % (r + 1, res["nginx"][-1], res["health"][-1], res["status"][-1]))
        return {k: statistics.median(v) for k, v in res.items()}
    finally:
        srv.stop()
        nginx.stop()


def health_latency(port, n=50, source="127.0.0.9"):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        status, _ = request(port, "GET", "/health", source=source)
        if status != 200:
            raise SystemExit("/health answered %d under load" % status)
        times.append(time.perf_counter() - t0)
    times.sort()
    return statistics.median(times) * 1000, times[int(len(times) * 0.99) - 1] * 1000


def open_clients(port, n, idle):
    """n connections from 127.1.x.y (8 per address); idle: one request each then silence,
    else a header block begun and left hanging."""
    socks = []
    for i in range(n):
        src = "127.1.%d.%d" % (i // 8 // 250, i // 8 % 250 + 1)
        s = socket.socket()
        s.bind((src, 0))
        s.connect(("127.0.0.1", port))
        if idle:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            s.recv(4096)
        else:
            s.sendall(b"GET /health HTTP/1.1\r\n")
        socks.append(s)
    return socks


def slow_clients(binary, work, n):
    out = {}
    srv = Server(binary, work, MAX_CONNECTIONS=n + 64, HEADER_TIMEOUT_SECONDS=600,
                 KEEPALIVE_TIMEOUT_SECONDS=600)
    try:
        base = srv.status()
        out["base_rss_kib"], out["base_threads"] = base["VmRSS"], base["Threads"]
        out["health_alone_ms"] = health_latency(srv.port)
        for kind in ("slow", "idle"):
            socks = open_clients(srv.port, n, idle=kind == "idle")
            deadline = time.time() + 20
            while kind == "slow" and time.time() < deadline:
                for s in socks:  # a byte every couple of seconds keeps a naive timer happy
                    s.send(b"X")
                st = srv.status()
                if st["Threads"] >= base["Threads"] + n:
                    break
                time.sleep(1)
            time.sleep(1)
            st = srv.status()
            out[kind + "_rss_kib"] = st["VmRSS"]
            out[kind + "_threads"] = st["Threads"]
            out[kind + "_health_ms"] = health_latency(srv.port)
            for s in socks:
                s.close()
            time.sleep(2)
    finally:
        srv.stop()
    # With the real deadline, the slow ones are cut on time and told why.
    srv = Server(binary, work, HEADER_TIMEOUT_SECONDS=2)
    try:
        socks = open_clients(srv.port, 50, idle=False)
        t0 = time.time()
        answered = 0
        for s in socks:
            s.settimeout(10)
            try:
                data = s.recv(4096)
                answered += data.startswith(b"HTTP/1.1 408")
            except OSError:
                pass
            s.close()
        out["cut_after_s"] = time.time() - t0
        out["cut_answered_408"] = answered
    finally:
        srv.stop()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(REPO, "build", "chunked-uploader"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--slow", type=int, default=1000)
    a = ap.parse_args()
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool):
            raise SystemExit("%s not found (scripts/install-deps.sh --bench)" % tool)
    work = tempfile.mkdtemp(prefix="cu-http-bench-")
    try:
        r = rates(a.binary, work, a.rounds, a.seconds)
        s = slow_clients(a.binary, work, a.slow)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    n = a.slow
    print("\nRequests/s (wrk -t2 -c64 -d%ds, median of %d rounds):" % (a.seconds, a.rounds))
    print("  nginx return 200          %8.0f" % r["nginx"])
    print("  GET /health               %8.0f = %.2f x nginx (goal >= 0.5)"
          % (r["health"], r["health"] / r["nginx"]))
    print("  GET /upload/{id}/status   %8.0f = %.2f x nginx (goal >= 0.25)"
          % (r["status"], r["status"] / r["nginx"]))
    print("\n%d clients held open (from %d addresses):" % (n, (n + 7) // 8))
    print("  nothing held:   RSS %6.1f MiB, %4d threads, /health p50 %.2f ms p99 %.2f ms"
          % (s["base_rss_kib"] / 1024, s["base_threads"], *s["health_alone_ms"]))
    for kind, what in (("slow", "slow headers"), ("idle", "idle keep-alive")):
        per = (s[kind + "_rss_kib"] - s["base_rss_kib"]) / n
        print("  %-15s RSS %6.1f MiB (%.0f KiB each), %4d threads, /health p50 %.2f ms p99 %.2f ms"
              % (what + ":", s[kind + "_rss_kib"] / 1024, per, s[kind + "_threads"],
                 *s[kind + "_health_ms"]))
    print("  with HEADER_TIMEOUT_SECONDS=2: 50 slow clients cut after %.1f s, %d told 408"
          % (s["cut_after_s"], s["cut_answered_408"]))


if __name__ == "__main__":
    main()
