#!/usr/bin/python3
"""Helpers for bench/bench.sh (standard library only).

Subcommands:
  freeport                          print a free TCP port on 127.0.0.1
  init-parse INIT_JSON PARTLIST OUT
                                    check an /upload/init reply against the expected
                                    parts (PARTLIST: lines "n size file"), write OUT
                                    lines "n token file", print the file_id
  field JSON KEY                    print one top-level field of a JSON file
  summary RESULTS                   print the report for a results file
  smbd DIR                          run the integration tests' private smbd (SmbServer) in
                                    DIR, print "ready PORT USER PASSWORD SHARE SHARE_DIR",
                                    stop it and remove DIR on SIGTERM
"""
import json
import os
import signal
import socket
import statistics
import sys
import time


def die(msg):
    print("benchlib: " + msg, file=sys.stderr)
    sys.exit(1)


def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        die("%s: not valid JSON (%s)" % (path, e))


def cmd_freeport():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])


def cmd_init_parse(init_path, partlist, out):
    reply = load(init_path)
    parts = []
    with open(partlist, encoding="utf-8") as f:
        for line in f:
            n, size, path = line.split(None, 2)
            parts.append((int(n), int(size), path.strip()))
    for key in ("file_id", "total_parts", "chunk_size", "parts"):
        if key not in reply:
            die("init reply lacks %r: %s" % (key, json.dumps(reply)[:300]))
    if reply["total_parts"] != len(parts) or len(reply["parts"]) != len(parts):
        die("init reply: total_parts=%r, %d tokens, expected %d parts"
            % (reply["total_parts"], len(reply["parts"]), len(parts)))
    tokens = {}
    for p in reply["parts"]:
        tokens[p["part"]] = p["token"]
    with open(out, "w", encoding="utf-8") as f:
        for n, _size, path in parts:
            if n not in tokens:
                die("init reply has no token for part %d" % n)
            f.write("%d %s %s\n" % (n, tokens[n], path))
    print(reply["file_id"])


def cmd_field(path, key):
    v = load(path).get(key)
    print("" if v is None else v)


def cmd_smbd(directory):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                    "tests", "integration"))
    from harness import SmbServer  # the tests' smbd: same smb.conf, same checks
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
    smb = SmbServer(tmpdir=directory)
    try:
        smb.start()
        print("ready %d %s %s %s %s" % (smb.port, smb.user, smb.password, smb.share, smb.share_dir),
              flush=True)
        while not stopping and smb.running():
            time.sleep(0.2)
        if not smb.running():
            die("smbd exited: %s" % smb.log_tail(10))
    finally:
        smb.destroy()


def read_results(path):
    res = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split(None, 1)
            if len(parts) == 2:
                res.setdefault(parts[0], []).append(parts[1].strip())
    return res


def cmd_summary(path):
    res = read_results(path)
    one = lambda k, d="": res.get(k, [d])[-1]
    nums = lambda k: [float(x) for x in res.get(k, [])]
    size = int(one("size_bytes", "0"))
    nparts = one("parts", "?")
    rounds = one("rounds", "?")
    mib = size / 1048576

    def fmt_t(vals):
        if not vals:
            return None, "n/a"
        med = statistics.median(vals)
        return med, "%.2f s (%.0f MiB/s)" % (med, mib / med if med > 0 else 0)

    ngx, ngx_s = fmt_t(nums("nginx"))
    fs, fs_s = fmt_t(nums("ours_fsync"))
    no, no_s = fmt_t(nums("ours_none"))

    def ok(b):
        return "PASS" if b else "FAIL"

    has_s3 = bool(nums("s3_direct") or nums("s3_ours"))
    has_smb = bool(nums("smb_direct") or nums("smb_ours"))
    has_dl = bool(nums("dl_nginx") or nums("dl_ours"))
    only_other = has_s3 or has_smb or has_dl  # a run of the S3, SMB or download section alone
    print()
    if ngx is not None or not only_other:
        print("Raw runs (wall seconds, rounds alternate nginx / fsync / none):")
        for k in ("nginx", "ours_fsync", "ours_none"):
            print("  %-11s %s" % (k, " ".join("%.3f" % v for v in nums(k)) or "n/a"))
    lat1, lat4 = nums("complete_1g"), nums("complete_4g")
    if lat1 or lat4:
        print("  complete 1 GiB (ms): %s" % " ".join("%.1f" % (v * 1000) for v in lat1))
        print("  complete 4 GiB (ms): %s" % (" ".join("%.1f" % (v * 1000) for v in lat4) or "skipped"))
    ms_list = lambda k: " ".join("%.1f" % (v * 1000) for v in nums(k)) or "n/a"
    if has_dl:
        print("Downloads (wall seconds, rounds alternate nginx / ours):")
        for k in ("dl_nginx", "dl_ours"):
            print("  %-11s %s" % (k, " ".join("%.3f" % v for v in nums(k)) or "n/a"))
    if has_s3:
        print("S3 (%s), rounds alternate direct / ours:" % one("s3rver_version"))
        for k in ("s3_direct", "s3_ours"):
            print("  %-11s %s" % (k, " ".join("%.3f" % v for v in nums(k)) or "n/a"))
        print("  CompleteMultipartUpload in those rounds, direct (ms): %s" % ms_list("s3_direct_cmu"))
        print("  complete in those rounds, ours (ms):                  %s" % ms_list("s3_ours_complete"))
        for key, name in (("1g", "1 GiB"), ("4g", "4 GiB")):
            if nums("complete_s3_" + key):
                print("  S3 complete %s, ours (ms):                     %s" % (name, ms_list("complete_s3_" + key)))
                print("  S3 CompleteMultipartUpload %s, direct (ms):    %s" % (name, ms_list("s3_direct_complete_" + key)))
        print("  chunked-uploader WARN/ERROR log lines in the S3 runs: %s" % one("s3_server_problems", "?"))
    if has_smb:
        before = nums("smb_before")
        print("SMB (%s), rounds alternate smbclient put / %sours:"
              % (one("smbd_version"), "before / " if before else ""))
        for k in ("smb_direct", "smb_before", "smb_ours"):
            if k != "smb_before" or before:
                print("  %-11s %s" % (k, " ".join("%.3f" % v for v in nums(k)) or "n/a"))
        print("  complete in those rounds, ours (ms): %s" % ms_list("smb_ours_complete"))
        print("  chunked-uploader WARN/ERROR log lines in the SMB runs: %s" % one("smb_server_problems", "?"))
    print()
    print("%s, %s, %s; source %s, target %s"
          % (one("machine"), one("kernel"), one("nginx_version"), one("src_fs"), one("dst_fs")))
    print()
    print("| Measurement | Result | Goal | |")
    print("|---|---|---|---|")
    label = "%.0f MiB in %s parts of 50 MiB, 4 parallel curl PUTs, median of %s" % (mib, nparts, rounds)
    if ngx is not None or not only_other:
        print("| nginx `dav_methods PUT` (reference), %s | %s | | |" % (label, ngx_s))
    if fs is not None or no is not None:
        for name, val, val_s, goal in (("fsync", fs, fs_s, 1.25), ("none", no, no_s, 1.0)):
            if val is None or not ngx:
                print("| chunked-uploader `DURABILITY=%s` | %s | ≤ %.2f × nginx | |" % (name, val_s, goal))
                continue
            r = val / ngx
            print("| chunked-uploader `DURABILITY=%s`, init + parts + complete | %s = **%.2f × nginx** | ≤ %.2f × nginx | %s |"
                  % (name, val_s, r, goal, ok(r <= goal)))
    rss = one("peak_rss_kib")
    if rss:
        r = int(rss) / 1024
        print("| Peak RSS (VmHWM), 16 × 50 MiB parts uploaded at once | %.1f MiB | < 64 MiB | %s |" % (r, ok(r < 64)))
    m1 = statistics.median(lat1) * 1000 if lat1 else None
    m4 = statistics.median(lat4) * 1000 if lat4 else None
    if m1 is not None:
        print("| `complete` latency, 1 GiB upload (median of 3) | %.1f ms | < 50 ms | %s |" % (m1, ok(m1 < 50)))
    if m4 is not None:
        # "equal within noise": within 5 ms or 50 % of the 1 GiB figure, whichever is larger
        same = m1 is not None and abs(m4 - m1) <= max(5.0, 0.5 * m1)
        print("| `complete` latency, 4 GiB upload (median of 3) | %.1f ms | = 1 GiB within noise, < 50 ms | %s |"
              % (m4, ok(m4 < 50 and same)))
    s3d, s3d_s = fmt_t(nums("s3_direct"))
    s3o, s3o_s = fmt_t(nums("s3_ours"))
    if has_s3:
        s3label = ("%.0f MiB in %s parts of 50 MiB, 4 parts in parallel, median of %s"
                   % (mib, nparts, rounds))
        print("| S3 reference: straight to s3rver with curl `--aws-sigv4` (CreateMultipartUpload, "
              "UploadPart, CompleteMultipartUpload), %s | %s | | |" % (s3label, s3d_s))
        if s3o is not None and s3d:
            print("| chunked-uploader `STORAGE_BACKEND=s3` to the same s3rver, init + parts + complete "
                  "| %s = **%.2f × direct** | | |" % (s3o_s, s3o / s3d))
        else:
            print("| chunked-uploader `STORAGE_BACKEND=s3` to the same s3rver | %s | | |" % s3o_s)
        for key, name in (("1g", "1 GiB"), ("4g", "4 GiB")):
            ours_l, direct_l = nums("complete_s3_" + key), nums("s3_direct_complete_" + key)
            if not ours_l:
                continue
            mo = statistics.median(ours_l) * 1000
            ref = ("; s3rver's own CompleteMultipartUpload sent directly: %.1f ms"
                   % (statistics.median(direct_l) * 1000)) if direct_l else ""
            print("| `complete` latency on S3, %s upload (median of %d) | %.1f ms%s | | |"
                  % (name, len(ours_l), mo, ref))
    smbd, smbd_s = fmt_t(nums("smb_direct"))
    smbo, smbo_s = fmt_t(nums("smb_ours"))
    smbb, smbb_s = fmt_t(nums("smb_before"))
    if has_smb:
        print("| SMB reference: `smbclient put` of the whole file to a private smbd, %.0f MiB, median of %s "
              "| %s | | |" % (mib, rounds, smbd_s))
        if smbb is not None and smbd:
            print("| `BENCH_SMB_BEFORE` (an older build), `STORAGE_BACKEND=smb`, the same rounds "
                  "| %s = **%.2f × smbclient** | | |" % (smbb_s, smbb / smbd))
        if smbo is not None and smbd:
            r = smbo / smbd
            print("| chunked-uploader `STORAGE_BACKEND=smb` to the same smbd, init + %s parts of 50 MiB "
                  "(4 parallel curl PUTs) + complete | %s = **%.2f × smbclient** | ≤ 1.20 × smbclient | %s |"
                  % (nparts, smbo_s, r, ok(r <= 1.2)))
        else:
            print("| chunked-uploader `STORAGE_BACKEND=smb` to the same smbd | %s | ≤ 1.20 × smbclient | |" % smbo_s)
    dln, dln_s = fmt_t(nums("dl_nginx"))
    dlo, dlo_s = fmt_t(nums("dl_ours"))
    if has_dl:
        print("| Download reference: nginx static GET (`sendfile on`), %.0f MiB to `curl -o /dev/null`, "
              "warm page cache, median of %d | %s | | |" % (mib, len(nums("dl_nginx")), dln_s))
        if dlo is not None and dln:
            r = dlo / dln
            print("| chunked-uploader `GET /api/files/{id}` of the same bytes, local storage (sendfile) "
                  "| %s = **%.2f × nginx** | ≤ 1.10 × nginx | %s |" % (dlo_s, r, ok(r <= 1.1)))
        dl_rss = one("dl_peak_rss_kib")
        if dl_rss:
            r = int(dl_rss) / 1024
            print("| Peak RSS (VmHWM) of that server after its upload and the downloads | %.1f MiB | < 64 MiB | %s |"
                  % (r, ok(r < 64)))
    print()
    if dln and dlo:
        print("ours_download/nginx = %.3f   (goal ≤ 1.1)" % (dlo / dln))
    if ngx and (fs or no):
        print("ours_fsync/nginx = %s   (goal ≤ 1.25)" % ("%.3f" % (fs / ngx) if fs else "n/a"))
        print("ours_none/nginx  = %s   (goal ≤ 1.0)" % ("%.3f" % (no / ngx) if no else "n/a"))
    if s3d and s3o:
        print("ours_s3/direct_s3 = %.3f" % (s3o / s3d))
    if smbd and smbb:
        print("before_smb/smbclient = %.3f" % (smbb / smbd))
    if smbd and smbo:
        print("ours_smb/smbclient = %.3f   (goal ≤ 1.2)" % (smbo / smbd))


def main(argv):
    if len(argv) < 2:
        die("usage: benchlib.py freeport|init-parse|field|summary|smbd ...")
    cmd, args = argv[1], argv[2:]
    table = {
        "freeport": (cmd_freeport, 0),
        "init-parse": (cmd_init_parse, 3),
        "field": (cmd_field, 2),
        "summary": (cmd_summary, 1),
        "smbd": (cmd_smbd, 1),
    }
    if cmd not in table or len(args) != table[cmd][1]:
        die("bad arguments: %s" % " ".join(argv[1:]))
    table[cmd][0](*args)


if __name__ == "__main__":
    main(sys.argv)
