#!/usr/bin/python3
"""Fault loops: uploads under fire, then finished and checked.

Each round runs several uploads at once (parts in parallel, as real clients send them)
against the real server binary while a fault strikes at a random moment, then recovers,
resumes every upload from its status, completes it and compares the file with its source.
Across every round:
  - nothing acknowledged is ever lost: a part answered 200 is reported uploaded, with the
    same SHA-256, by every later status, whatever happened in between;
  - every upload can be finished;
  - every error a client saw was JSON {"error", "status"} with a status that fits the fault.

Scenarios (--scenario, default all):
  kill      the server is killed with SIGKILL mid-upload and started again
  diskfull  storage and database on a small tmpfs that a filler fills mid-upload (507),
            then frees
  s3        the S3 server is stopped mid-part (502) and started again
  smb       smbd is restarted mid-part

  tests/faults/fault_loop.py [--rounds N] [--scenario kill,diskfull,s3,smb] [--seed S]

`make test` runs a short form (tests/integration/test_fault_loop.py); `make faults` runs
FAULT_ROUNDS rounds of every scenario.
"""
import argparse
import concurrent.futures
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import harness  # noqa: E402

MIB = 1 << 20
# The statuses each fault may cause; anything else is a finding.
# 409 everywhere: a part stored just before the fault, sent again; a full disk is 507; a
# storage server gone is 502 (it failed) or 503 (try again shortly).
EXPECTED = {
    "kill": {409},
    "diskfull": {409, 507},
    "s3": {409, 502, 503},
    "smb": {409, 502, 503},
}


class Finding(Exception):
    pass


class Progress:
    """Counts acknowledged parts across uploads; `reached` is set at the threshold."""

    def __init__(self, threshold):
        self.lock = threading.Lock()
        self.count = 0
        self.threshold = threshold
        self.reached = threading.Event()
        if threshold == 0:
            self.reached.set()

    def ack(self):
        with self.lock:
            self.count += 1
            if self.count >= self.threshold:
                self.reached.set()


class Uploader:
    """One upload of random bytes, sent part by part, resumable, keeping what was acked."""

    def __init__(self, name, size, rng):
        self.name = name
        self.data = rng.randbytes(size)
        self.init = None
        self.acked = {}  # part -> sha256 the server acknowledged
        self.errors = []  # (status, body) of every non-2xx answer seen
        self.progress = None

    def parts(self):
        chunk = self.init["chunk_size"]
        return [self.data[i:i + chunk] for i in range(0, len(self.data), chunk)]

    def check_error(self, r):
        """A refusal must be JSON {"error", "status"} matching the HTTP status."""
        try:
            j = json.loads(r.body)
        except ValueError:
            raise Finding("%s: a %d that is not JSON: %r" % (self.name, r.status, r.body[:200]))
        if set(j) != {"error", "status"} or j["status"] != r.status or not j["error"]:
            raise Finding("%s: a malformed error body: %r" % (self.name, r.body[:200]))
        self.errors.append((r.status, j["error"]))

    def send(self, srv, n, parts):
        try:
            r = srv.put_part(self.init["file_id"], n, self.init["parts"][n]["token"], parts[n],
                             timeout=30)
        except OSError:
            return False  # the connection went with the fault: not an answer
        except Exception:
            return False
        if r.status == 200:
            self.acked[n] = hashlib.sha256(parts[n]).hexdigest()
            if self.progress:
                self.progress.ack()
            return True
        self.check_error(r)
        return False

    def run(self, srv, stop):
        """Sends the parts not acknowledged yet, in random order, until done or stopped."""
        parts = self.parts()
        order = [n for n in range(len(parts)) if n not in self.acked]
        random.shuffle(order)
        for n in order:
            if stop.is_set():
                return
            self.send(srv, n, parts)

    def verify_acked(self, srv):
        """Every acknowledged part is still reported uploaded, with its checksum."""
        r = srv.status(self.init["file_id"])
        if r.status != 200:
            raise Finding("%s: status answered %d: %r" % (self.name, r.status, r.body[:200]))
        got = {p["part"]: p for p in json.loads(r.body)["parts"]}
        for n, digest in self.acked.items():
            p = got.get(n)
            if not p or p["status"] != "uploaded" or p["checksum_sha256"] != digest:
                raise Finding("%s: acknowledged part %d was lost: %r" % (self.name, n, p))
        return got

    def finish(self, srv):
        """Sends what is missing (with retries), completes, and checks the file."""
        parts = self.parts()
        for attempt in range(20):
            got = self.verify_acked(srv)
            missing = [n for n in range(len(parts)) if got[n]["status"] != "uploaded"]
            if not missing:
                break
            for n in missing:
                self.send(srv, n, parts)
            time.sleep(0.2)
        else:
            raise Finding("%s: parts %s never stored" % (self.name, missing))
        for attempt in range(20):
            r = srv.complete(self.init["file_id"], timeout=120)
            if r.status == 200:
                break
            self.check_error(r)
            time.sleep(0.5)
        else:
            raise Finding("%s: complete kept failing: %r" % (self.name, r.body[:200]))
        return json.loads(r.body)


class Fault:
    """A scenario: its server, the fault, and the recovery."""

    def __init__(self, name, work, rng):
        self.name, self.work, self.rng = name, work, rng
        self.srv = self.s3 = self.smb = None
        self.mount = None
        env = {"CHUNK_SIZE_MB": "1", "LOG_LEVEL": "info", "MAX_RESERVED_BYTES": "0"}
        if name == "diskfull":
            self.mount = os.path.join(work, "small")
            os.makedirs(self.mount)
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", self.mount],
                           check=True)
            env.update({"LOCAL_STORAGE_PATH": os.path.join(self.mount, "store"),
                        "DATABASE_PATH": os.path.join(self.mount, "uploads.db")})
        elif name == "s3":
            self.s3 = harness.S3Server()
            self.s3.start()
            spool = os.path.join(work, "spool")
            os.makedirs(spool)
            env.update(self.s3.server_env(TEMP_STORAGE_PATH=spool, CHUNK_SIZE_MB="5"))
        elif name == "smb":
            self.smb = harness.SmbServer()
            self.smb.start()
            env.update({k: v for k, v in self.smb.server_env().items() if v is not None})
        self.srv = harness.Server(env=env, tmpdir=tempfile.mkdtemp(dir=work))
        self.srv.start()

    def part_size(self):
        return 5 * MIB if self.name == "s3" else MIB

    def strike(self):
        """The fault itself, at the moment the round chose."""
        if self.name == "kill":
            self.srv.kill9()
        elif self.name == "diskfull":
            filler = os.path.join(self.mount, "filler")
            with open(filler, "wb") as f:  # until the file system says no
                try:
                    while True:
                        f.write(b"\0" * MIB)
                        f.flush()
                except OSError:
                    pass
        elif self.name == "s3":
            self.s3.stop(check=False)
        elif self.name == "smb":
            self.smb.restart(hard=True)

    def recover(self):
        if self.name == "kill":
            self.srv.start()
        elif self.name == "diskfull":
            os.unlink(os.path.join(self.mount, "filler"))
        elif self.name == "s3":
            self.s3.start()

    def close(self):
        for thing in (self.srv, self.s3, self.smb):
            if thing:
                try:
                    thing.destroy()
                except Exception:
                    pass
        if self.mount:
            subprocess.run(["umount", "-l", self.mount])


def run_round(fault, rng, uploads=3):
    srv = fault.srv
    ups = []
    for i in range(uploads):
        size = rng.randrange(3, 9) * fault.part_size() + rng.randrange(0, 1000)
        u = Uploader("%s-%d" % (fault.name, i), size, rng)
        r = srv.init("faults/%s.bin" % u.name, size)
        if r.status != 200:
            raise Finding("init answered %d: %r" % (r.status, r.body[:300]))
        u.init = json.loads(r.body)
        ups.append(u)
    # The fault strikes once a random share of the parts is acknowledged, so that it lands
    # mid-upload however fast the machine is; the senders go on until told to stop.
    total = sum(len(u.init["parts"]) for u in ups)
    progress = Progress(rng.randrange(0, total // 2 + 1))
    for u in ups:
        u.progress = progress
    stop = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(len(ups) * 2) as ex:
        futures = [ex.submit(u.run, srv, stop) for u in ups for _ in range(2)]
        progress.reached.wait(60)
        fault.strike()
        time.sleep(rng.uniform(0.2, 0.8))
        stop.set()
        for f in futures:
            f.result()
    fault.recover()
    expected = EXPECTED[fault.name]
    for u in ups:
        bad = [(s, e) for s, e in u.errors if s not in expected]
        if bad:
            raise Finding("%s: statuses the fault does not explain: %r" % (u.name, bad[:5]))
        done = u.finish(srv)
        if done["total_size"] != len(u.data):
            raise Finding("%s: completed with %d bytes" % (u.name, done["total_size"]))
        if fault.name in ("kill", "diskfull"):
            final = srv.resolve(done["final_path"])
            with open(final, "rb") as f:
                if hashlib.sha256(f.read()).digest() != hashlib.sha256(u.data).digest():
                    raise Finding("%s: the final file differs from its source" % u.name)
            os.unlink(final)  # room for the next round on the small disk
        elif fault.name == "s3":
            key = done["final_path"].split("/", 3)[3]
            got = fault.s3.client().get_object(fault.s3.bucket, key)
            if got != u.data:
                raise Finding("%s: the S3 object differs from its source" % u.name)
        elif fault.name == "smb":
            got = fault.smb.fetch(done["final_path"].split("/", 4)[4])
            if got != u.data:
                raise Finding("%s: the file on the share differs from its source" % u.name)
    seen = {}
    for u in ups:
        for status, _ in u.errors:
            seen[status] = seen.get(status, 0) + 1
    return seen, sum(len(u.acked) for u in ups)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("FAULT_ROUNDS", "5")))
    ap.add_argument("--scenario", default="kill,diskfull,s3,smb")
    ap.add_argument("--seed", type=int, default=int(time.time()))
    a = ap.parse_args(argv)
    rng = random.Random(a.seed)
    random.seed(a.seed)
    print("fault loop: seed %d, %d round(s) of %s" % (a.seed, a.rounds, a.scenario), flush=True)
    for name in a.scenario.split(","):
        work = tempfile.mkdtemp(prefix="cu-faults-")
        fault = Fault(name, work, rng)
        try:
            errors, acked = {}, 0
            for i in range(a.rounds):
                seen, k = run_round(fault, rng)
                for status, count in seen.items():
                    errors[status] = errors.get(status, 0) + count
                acked += k
            fault.srv.check_sanitizers()
            print("%-8s %d round(s): every upload finished and checked; %d parts acknowledged, "
                  "refusals by status %s, all JSON" % (name, a.rounds, acked,
                                                      json.dumps(errors, sort_keys=True)), flush=True)
        except Finding as f:
            print("FINDING in %s (seed %d): %s\n--- server log ---\n%s" % (
                name, a.seed, f, fault.srv.log_tail(80)), flush=True)
            return 1
        finally:
            fault.close()
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
