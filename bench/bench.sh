#!/usr/bin/env bash
# Benchmark chunked-uploader against nginx's WebDAV PUT as the reference.
#
# Run as root from the repo root after `make` (binary: build/chunked-uploader):
#     bench/bench.sh
#
# Environment:
#   BENCH_ROUNDS=3        rounds of nginx / ours(fsync) / ours(none), medians reported
#   BENCH_SIZE_MB=1024    size of the throughput test file in MiB (parts of 50 MiB)
#   BENCH_SKIP_4G=1       skip the 4 GiB `complete` latency measurement
#   BENCH_NGINX_ONLY=1    only the nginx reference (no server binary needed)
#   BENCH_BIN=path        server binary (default build/chunked-uploader)
#   BENCH_SKIP_S3=1       skip the S3 section (4.-5. below)
#   BENCH_S3_ONLY=1       only the S3 section (skips 1.-3. and 6.)
#   BENCH_SKIP_SMB=1      skip the SMB section (6. below)
#   BENCH_SMB_ONLY=1      only the SMB section (skips 1.-5.)
#   BENCH_SMB_BEFORE=path another server binary (an older build) timed in the same SMB
#                         rounds, for before/after figures on a machine others share
#   BENCH_SKIP_DOWNLOAD=1 skip the download section (7. below)
#   BENCH_DOWNLOAD_ONLY=1 only the download section (skips 1.-6.)
#   BENCH_DL_ROUNDS=7     rounds of the download section (nginx / ours alternating)
#
# Measures:
#   1. wall time of uploading BENCH_SIZE_MB in 50 MiB parts, 4 curl PUTs at a time, to
#      nginx (dav_methods PUT) and to chunked-uploader (init + parts + complete) with
#      DURABILITY=fsync and DURABILITY=none; goals ours_fsync/nginx <= 1.25, ours_none/nginx <= 1.0
#   2. peak RSS (VmHWM) of a fresh server after 16 parallel 50 MiB parts; goal < 64 MiB
#   3. latency of POST complete for 1 GiB and 4 GiB uploads; goal equal, < 50 ms
#   4. S3: wall time of the same upload straight to s3rver (CreateMultipartUpload, UploadPart
#      4 at a time with curl --aws-sigv4, CompleteMultipartUpload) and through
#      chunked-uploader with STORAGE_BACKEND=s3 against the same s3rver, rounds alternating;
#      s3rver runs plain (bench/s3rver.js, tests/s3/node_modules; `npm ci` there if missing),
#      data on real disk under /var/tmp
#   5. S3: latency of POST complete for 1 GiB and 4 GiB uploads, beside s3rver's own
#      CompleteMultipartUpload time for the same upload sent directly
#   6. SMB: wall time of `smbclient put` of the whole file to a private smbd (the integration
#      tests' smb.conf, share on real disk under /var/tmp) and of the same upload through
#      chunked-uploader with STORAGE_BACKEND=smb to the same smbd, rounds alternating
#      (bench/smb.sh); goal ours/smbclient <= 1.2
#   7. download: wall time of `curl -o /dev/null` fetching the BENCH_SIZE_MB file from nginx
#      (a static GET of the file, sendfile on) and from chunked-uploader (GET /api/files/{id},
#      local storage: sendfile too), the same bytes on the same file system, warm in the page
#      cache, rounds alternating; goal ours/nginx <= 1.1; and the server's peak RSS after
#      them
# Every upload's result is checked (size; SHA-256 of the whole file once per variant).
set -Eeuo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=$REPO/bench
PY=/usr/bin/python3
LIB=$BENCH_DIR/benchlib.py
BIN=${BENCH_BIN:-$REPO/build/chunked-uploader}
ROUNDS=${BENCH_ROUNDS:-3}
SIZE_MB=${BENCH_SIZE_MB:-1024}
SKIP_4G=${BENCH_SKIP_4G:-0}
NGINX_ONLY=${BENCH_NGINX_ONLY:-0}
SKIP_S3=${BENCH_SKIP_S3:-0}
S3_ONLY=${BENCH_S3_ONLY:-0}
SKIP_SMB=${BENCH_SKIP_SMB:-0}
SMB_ONLY=${BENCH_SMB_ONLY:-0}
SMB_BEFORE=${BENCH_SMB_BEFORE:-}
SKIP_DOWNLOAD=${BENCH_SKIP_DOWNLOAD:-0}
DOWNLOAD_ONLY=${BENCH_DOWNLOAD_ONLY:-0}
DL_ROUNDS=${BENCH_DL_ROUNDS:-7}
[[ $NGINX_ONLY == 1 ]] && SKIP_S3=1 && SKIP_SMB=1 && SKIP_DOWNLOAD=1
[[ $S3_ONLY == 1 ]] && SKIP_SMB=1
[[ $SMB_ONLY == 1 ]] && SKIP_S3=1
[[ $S3_ONLY == 1 || $SMB_ONLY == 1 ]] && SKIP_DOWNLOAD=1
[[ $DOWNLOAD_ONLY == 1 ]] && SKIP_S3=1 && SKIP_SMB=1

CHUNK_MB=50
CHUNK=$((CHUNK_MB * 1048576))
PAR=4
SIZE=$((SIZE_MB * 1048576))
GIB=1073741824

WORK=""        # on real disk: nginx prefix/root/body temp, server storage + db
SRC_DIR=""     # source parts (/dev/shm when it has room)
NGX_PIDFILE=""
SRV_PID=""
RESULTS=""
RUN_T=""
FINAL_PATH=""
S3_PID=""      # plain s3rver (node bench/s3rver.js)
S3_DIR=""
S3_BUCKET=bench
S3_REGION=us-east-1
S3_KEY_ID=BENCHACCESSKEY
S3_SECRET=""
S3C=()         # curl command line for signed requests to s3rver

# shellcheck source=bench/smb.sh
source "$BENCH_DIR/smb.sh"

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- cleanup

# Stops the child whose pid is in the variable named $1 (TERM, KILL after 5 s) and clears it.
stop_child() {
    local -n pid_var=$1
    local pid=$pid_var i
    [[ -n $pid ]] || return 0
    pid_var=""
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

stop_server() { stop_child SRV_PID; }

stop_nginx() {
    local pid i
    [[ -n $NGX_PIDFILE && -s $NGX_PIDFILE ]] || return 0
    pid=$(<"$NGX_PIDFILE")
    kill -TERM "$pid" 2>/dev/null || true
    # nginx removes its pid file on exit (the master is not our child: no wait)
    for ((i = 0; i < 50; i++)); do
        if [[ ! -e $NGX_PIDFILE ]] || ! kill -0 "$pid" 2>/dev/null; then break; fi
        sleep 0.1
    done
    if [[ -e $NGX_PIDFILE ]]; then kill -KILL "$pid" 2>/dev/null || true; fi
    NGX_PIDFILE=""
}

stop_s3rver() { stop_child S3_PID; }

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_server
    stop_nginx
    stop_s3rver
    stop_smbd
    [[ -n $WORK && -d $WORK ]] && rm -rf -- "$WORK"
    [[ -n $SRC_DIR && -d $SRC_DIR ]] && rm -rf -- "$SRC_DIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- helpers

# elapsed T0 T1 -> seconds with 3 decimals
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

result() { printf '%s %s\n' "$1" "$2" >>"$RESULTS"; }

free_port() { "$PY" "$LIB" freeport; }

avail_bytes() { df -B1 --output=avail "$1" | tail -n 1 | tr -d ' '; }

# gen_partlist TOTAL OUT: "n size file" lines covering TOTAL bytes, reusing the source's
# full parts (content does not matter where this is used, only sizes).
gen_partlist() {
    local total=$1 out=$2 full rem n tail
    full=$((total / CHUNK))
    rem=$((total % CHUNK))
    : >"$out"
    for ((n = 0; n < full; n++)); do
        printf '%d %d %s\n' "$n" "$CHUNK" "${FULL_POOL[n % ${#FULL_POOL[@]}]}" >>"$out"
    done
    if ((rem > 0)); then
        tail=$SRC_DIR/tail.$rem
        [[ -f $tail ]] || head -c "$rem" "${FULL_POOL[0]}" >"$tail"
        printf '%d %d %s\n' "$full" "$rem" "$tail" >>"$out"
    fi
}

# show_failures DIR: print the error replies saved by failed part uploads
show_failures() {
    local f
    for f in "$1"/resp.*; do
        [[ -s $f ]] || continue
        if ! grep -q '"status": *"uploaded"' "$f" 2>/dev/null; then
            printf '  %s: %s\n' "${f##*/}" "$(head -c 300 "$f")" >&2
        fi
    done
}

# ---------------------------------------------------------------- setup

install_deps() {
    local need=0
    if ! command -v nginx >/dev/null 2>&1 || ! nginx -V 2>&1 | grep -q -- '--with-http_dav_module'; then
        need=1
    fi
    command -v curl >/dev/null 2>&1 || need=1
    [[ -x $PY ]] || need=1
    ((need)) || return 0
    [[ $EUID -eq 0 ]] || die "nginx (with http_dav_module), curl or /usr/bin/python3 missing; run as root to install them"
    log "installing nginx, curl, python3"
    # keep the package from starting the system nginx service
    local policy=/usr/sbin/policy-rc.d added=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq nginx-light curl python3 >/dev/null 2>&1 ||
        apt-get install -y -qq nginx curl python3 >/dev/null
    ((added)) && rm -f "$policy"
    nginx -V 2>&1 | grep -q -- '--with-http_dav_module' || die "installed nginx lacks http_dav_module"
}

make_source() {
    local need shm_avail n f
    need=$((2 * SIZE + 256 * 1048576))
    shm_avail=$(avail_bytes /dev/shm 2>/dev/null || echo 0)
    if ((shm_avail > need)); then
        SRC_DIR=$(mktemp -d /dev/shm/cu-bench-src.XXXXXX)
    else
        SRC_DIR=$(mktemp -d "$WORK/../cu-bench-src.XXXXXX")
    fi
    log "creating ${SIZE_MB} MiB random source in $SRC_DIR"
    head -c "$SIZE" /dev/urandom >"$SRC_DIR/source.bin"
    SRC_SHA=$(sha256sum "$SRC_DIR/source.bin" | cut -d' ' -f1)
    (cd "$SRC_DIR" && split -b "$CHUNK" -d -a 4 source.bin part.)
    rm -f "$SRC_DIR/source.bin"
    NPARTS=$(((SIZE + CHUNK - 1) / CHUNK))
    MAIN_LIST=$SRC_DIR/main.list
    : >"$MAIN_LIST"
    FULL_POOL=()
    for ((n = 0; n < NPARTS; n++)); do
        f=$SRC_DIR/part.$(printf '%04d' "$n")
        [[ -f $f ]] || die "split produced no $f"
        mv "$f" "$SRC_DIR/part.$n"
        f=$SRC_DIR/part.$n
        printf '%d %d %s\n' "$n" "$(stat -c %s "$f")" "$f" >>"$MAIN_LIST"
        (($(stat -c %s "$f") == CHUNK)) && FULL_POOL+=("$f")
    done
    if ((${#FULL_POOL[@]} == 0)); then
        head -c "$CHUNK" /dev/urandom >"$SRC_DIR/full.0"
        FULL_POOL=("$SRC_DIR/full.0")
    fi
    log "source: $NPARTS parts, sha256 $SRC_SHA"
}

# ---------------------------------------------------------------- nginx

start_nginx() {
    local prefix=$WORK/nginx user_line=""
    NGX_ROOT=$WORK/nginx-root
    mkdir -p "$prefix/logs" "$prefix/tmp" "$NGX_ROOT" "$WORK/nginx-body"
    NGX_PORT=$(free_port)
    [[ $EUID -eq 0 ]] && user_line="user root;"
    sed -e "s|@USER_LINE@|$user_line|" -e "s|@PREFIX@|$prefix|g" -e "s|@BODY_DIR@|$WORK/nginx-body|" \
        -e "s|@PORT@|$NGX_PORT|" -e "s|@ROOT@|$NGX_ROOT|" "$BENCH_DIR/nginx-put.conf" >"$prefix/nginx.conf"
    NGX_PIDFILE=$prefix/nginx.pid
    nginx -e "$prefix/logs/error.log" -c "$prefix/nginx.conf" -p "$prefix/" ||
        die "nginx failed to start: $(tail -n 5 "$prefix/logs/error.log" 2>/dev/null)"
    local i
    for ((i = 0; i < 50; i++)); do
        [[ -s $NGX_PIDFILE ]] && curl -s -o /dev/null "http://127.0.0.1:$NGX_PORT/" && break
        sleep 0.1
    done
    ((i < 50)) || die "nginx did not come up on port $NGX_PORT"
    log "nginx $(nginx -v 2>&1 | sed 's/.*\///') on 127.0.0.1:$NGX_PORT"
}

# nginx_run VERIFY_SHA -> sets RUN_T (wall seconds); no subshell, so cleanup sees all state
nginx_run() {
    local verify=$1 dir=$WORK/nginx-run t0 t1 n size f got
    rm -rf "$NGX_ROOT/up" "$dir"
    mkdir -p "$dir"
    sync
    t0=$EPOCHREALTIME
    # shellcheck disable=SC2016  # expanded by the per-part sh
    if ! U="http://127.0.0.1:$NGX_PORT/up" D=$dir xargs -P "$PAR" -L 1 \
        sh -c 'curl -sS --fail-with-body -o "$D/resp.$1" -T "$3" "$U/part.$1" || exit 255' sh <"$MAIN_LIST"; then
        show_failures "$dir"
        die "nginx upload failed"
    fi
    t1=$EPOCHREALTIME
    # verify: every part stored with its size; whole content once
    while read -r n size f; do
        got=$(stat -c %s "$NGX_ROOT/up/part.$n" 2>/dev/null || echo missing)
        [[ $got == "$size" ]] || die "nginx: part $n has size $got, expected $size"
    done <"$MAIN_LIST"
    if ((verify)); then
        got=$(for ((n = 0; n < NPARTS; n++)); do cat "$NGX_ROOT/up/part.$n"; done | sha256sum | cut -d' ' -f1)
        [[ $got == "$SRC_SHA" ]] || die "nginx: uploaded content sha256 $got != source $SRC_SHA"
    fi
    rm -rf "$NGX_ROOT/up"
    RUN_T=$(elapsed "$t0" "$t1")
}

# ---------------------------------------------------------------- chunked-uploader

# start_server DURABILITY NAME [VAR=VALUE...]: fresh storage + database under $WORK/NAME,
# extra environment from the remaining arguments
start_server() {
    local durability=$1 name=$2 i rc
    shift 2
    SRV_DIR=$WORK/$name
    rm -rf "$SRV_DIR"
    mkdir -p "$SRV_DIR"
    SRV_PORT=$(free_port)
    API_KEY=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    (cd "$SRV_DIR" && exec env -i PATH="$PATH" HOME="${HOME:-/root}" \
        API_KEY="$API_KEY" \
        JWT_SECRET="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" \
        SERVER_HOST=127.0.0.1 SERVER_PORT="$SRV_PORT" \
        LOCAL_STORAGE_PATH="$SRV_DIR/storage" DATABASE_PATH="$SRV_DIR/uploads.db" \
        CHUNK_SIZE_MB="$CHUNK_MB" DURABILITY="$durability" "$@" \
        "$BIN" >"$SRV_DIR/server.log" 2>&1) &
    SRV_PID=$!
    SRV_URL=http://127.0.0.1:$SRV_PORT
    for ((i = 0; i < 100; i++)); do
        if ! kill -0 "$SRV_PID" 2>/dev/null; then
            wait "$SRV_PID" 2>/dev/null && rc=0 || rc=$?
            SRV_PID=""
            die "server exited at start (status $rc): $(tail -n 5 "$SRV_DIR/server.log")"
        fi
        curl -sf -o /dev/null "$SRV_URL/health" && return 0
        sleep 0.1
    done
    die "server did not answer /health on $SRV_URL within 10 s: $(tail -n 5 "$SRV_DIR/server.log")"
}

# server_state: "running", or how the server process ended
server_state() {
    local rc
    [[ -n $SRV_PID ]] || { echo "not started"; return; }
    if kill -0 "$SRV_PID" 2>/dev/null; then echo "running"; return; fi
    wait "$SRV_PID" 2>/dev/null && rc=0 || rc=$?
    SRV_PID=""
    if ((rc > 128)); then echo "DIED: killed by signal $((rc - 128)) ($(kill -l $((rc - 128)) 2>/dev/null))"
    else echo "DIED: exited with status $rc"; fi
}

# server_fail MSG: die with the server's state and last log lines
server_fail() {
    printf 'bench: server %s; last log lines:\n' "$(server_state)" >&2
    tail -n 8 "$SRV_DIR/server.log" | sed 's/^/  | /' >&2
    die "$1"
}

# server_init TOTAL PARTLIST OUTDIR: POST /upload/init, write tokens; sets FILE_ID
server_init() {
    local total=$1 list=$2 dir=$3 code
    code=$(curl -sS -o "$dir/init.json" -w '%{http_code}' -X POST \
        -H "X-API-Key: $API_KEY" -H 'Content-Type: application/json' \
        -d "{\"filename\":\"bench/source.bin\",\"total_size\":$total}" "$SRV_URL/upload/init") ||
        server_fail "init: curl failed"
    [[ $code == 200 ]] || server_fail "init answered $code: $(head -c 300 "$dir/init.json")"
    FILE_ID=$("$PY" -I -S "$LIB" init-parse "$dir/init.json" "$list" "$dir/tokens") ||
        die "init reply unusable"
}

# server_parts PARALLEL OUTDIR: PUT every part listed in OUTDIR/tokens
server_parts() {
    local par=$1 dir=$2
    # shellcheck disable=SC2016  # expanded by the per-part sh
    if ! U="$SRV_URL/upload/$FILE_ID/part" D=$dir xargs -P "$par" -L 1 \
        sh -c 'curl -sS --fail-with-body -o "$D/resp.$1" -H "Authorization: Bearer $2" -T "$3" "$U/$1" || exit 255' sh \
        <"$dir/tokens"; then
        show_failures "$dir"
        server_fail "part upload to chunked-uploader failed"
    fi
}

# server_complete OUTDIR: POST complete; sets COMPLETE_TIME (curl time_total)
server_complete() {
    local dir=$1 out code
    out=$(curl -sS -o "$dir/complete.json" -w '%{http_code} %{time_total}' -X POST \
        -H "X-API-Key: $API_KEY" "$SRV_URL/upload/$FILE_ID/complete") || server_fail "complete: curl failed"
    code=${out%% *}
    COMPLETE_TIME=${out#* }
    [[ $code == 200 ]] || server_fail "complete answered $code: $(head -c 300 "$dir/complete.json")"
}

# check_file PATH TOTAL VERIFY_SHA FAIL: PATH has TOTAL bytes (and, with VERIFY_SHA, the
# source's content); FAIL (die or server_fail) says what is wrong otherwise
check_file() {
    local path=$1 total=$2 verify=$3 fail=$4 got
    [[ -f $path ]] || "$fail" "final file '$path' does not exist"
    got=$(stat -c %s "$path")
    [[ $got == "$total" ]] || "$fail" "final file $path has $got bytes, expected $total"
    if ((verify)); then
        got=$(sha256sum "$path" | cut -d' ' -f1)
        [[ $got == "$SRC_SHA" ]] || "$fail" "final file $path sha256 $got != source $SRC_SHA"
    fi
}

# verify_final OUTDIR TOTAL VERIFY_SHA: sets FINAL_PATH
verify_final() {
    local dir=$1 total=$2 verify=$3 status path
    status=$("$PY" -I -S "$LIB" field "$dir/complete.json" status)
    [[ $status == complete ]] || server_fail "complete reply status '$status': $(head -c 300 "$dir/complete.json")"
    path=$("$PY" -I -S "$LIB" field "$dir/complete.json" final_path)
    [[ $path == /* ]] || path=$SRV_DIR/$path
    check_file "$path" "$total" "$verify" server_fail
    FINAL_PATH=$path
}

# timed_upload OUTDIR: the source through the running server (init, parts PAR at a time,
# complete), timed; sets RUN_T (wall seconds) and COMPLETE_TIME
timed_upload() {
    local dir=$1 t0 t1
    mkdir -p "$dir"
    sync
    t0=$EPOCHREALTIME
    server_init "$SIZE" "$MAIN_LIST" "$dir"
    server_parts "$PAR" "$dir"
    server_complete "$dir"
    t1=$EPOCHREALTIME
    RUN_T=$(elapsed "$t0" "$t1")
}

# ours_run DURABILITY VERIFY_SHA -> sets RUN_T (wall seconds)
ours_run() {
    local durability=$1 verify=$2
    start_server "$durability" "srv-$durability"
    timed_upload "$SRV_DIR/run"
    verify_final "$SRV_DIR/run" "$SIZE" "$verify"
    stop_server
    rm -rf "$SRV_DIR"
}

peak_rss() {
    local dir list total=$((16 * CHUNK)) hwm idle
    start_server fsync srv-rss
    idle=$(awk '/^VmHWM:/ { print $2 }' "/proc/$SRV_PID/status")
    dir=$SRV_DIR/run
    list=$SRV_DIR/rss.list
    mkdir -p "$dir"
    gen_partlist "$total" "$list"
    server_init "$total" "$list" "$dir"
    server_parts 16 "$dir"
    server_complete "$dir"
    hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$SRV_PID/status")
    verify_final "$dir" "$total" 0
    stop_server
    rm -rf "$SRV_DIR"
    result rss_idle_kib "$idle"
    result peak_rss_kib "$hwm"
    log "peak RSS: $((hwm / 1024)) MiB (at start: $((idle / 1024)) MiB)"
}

complete_latency() {
    local key total i dir list
    start_server none srv-lat
    for key in 1g 4g; do
        if [[ $key == 4g ]]; then
            [[ $SKIP_4G == 1 ]] && continue
            total=$((4 * GIB))
        else
            total=$GIB
        fi
        list=$SRV_DIR/$key.list
        gen_partlist "$total" "$list"
        for ((i = 1; i <= 3; i++)); do
            dir=$SRV_DIR/$key-$i
            mkdir -p "$dir"
            server_init "$total" "$list" "$dir"
            server_parts "$PAR" "$dir"
            server_complete "$dir"
            verify_final "$dir" "$total" 0
            rm -f -- "$FINAL_PATH"
            rm -rf "$dir"
            result "complete_$key" "$COMPLETE_TIME"
            log "complete latency $key #$i: $(awk -v t="$COMPLETE_TIME" 'BEGIN { printf "%.1f", t * 1000 }') ms"
        done
    done
    stop_server
    rm -rf "$SRV_DIR"
}

# ---------------------------------------------------------------- S3 (s3rver)

s3_setup_deps() {
    command -v node >/dev/null 2>&1 || die "node (>= 20) is needed for the S3 section (or set BENCH_SKIP_S3=1)"
    if [[ ! -f $REPO/tests/s3/node_modules/s3rver/package.json ]]; then
        command -v npm >/dev/null 2>&1 || die "tests/s3/node_modules is missing and npm is not installed (or set BENCH_SKIP_S3=1)"
        log "installing the S3 test server (npm ci in tests/s3)"
        (cd "$REPO/tests/s3" && npm ci --no-audit --no-fund >/dev/null) || die "npm ci in tests/s3 failed"
    fi
}

# start_s3rver: plain s3rver on a free port, data under $WORK/s3rver (real disk)
start_s3rver() {
    local i word port=""
    S3_DIR=$WORK/s3rver
    rm -rf "$S3_DIR"
    mkdir -p "$S3_DIR/data"
    : >"$S3_DIR/out"
    S3_SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    node "$BENCH_DIR/s3rver.js" --dir "$S3_DIR/data" --bucket "$S3_BUCKET" \
        --access-key "$S3_KEY_ID" --secret "$S3_SECRET" >"$S3_DIR/out" 2>"$S3_DIR/err" &
    S3_PID=$!
    for ((i = 0; i < 150; i++)); do
        kill -0 "$S3_PID" 2>/dev/null || { S3_PID=""; die "s3rver exited at start: $(tail -n 5 "$S3_DIR/err")"; }
        if read -r word port <"$S3_DIR/out" && [[ $word == ready && -n $port ]]; then break; fi
        sleep 0.1
    done
    ((i < 150)) || die "s3rver did not print ready within 15 s: $(tail -n 5 "$S3_DIR/err")"
    S3_URL=http://127.0.0.1:$port
    S3C=(curl -sS --aws-sigv4 "aws:amz:$S3_REGION:s3" --user "$S3_KEY_ID:$S3_SECRET"
        -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD')
    log "s3rver $(sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' "$REPO/tests/s3/node_modules/s3rver/package.json") (node $(node --version)) on $S3_URL, data in $S3_DIR/data"
}

s3_fail() {
    local state=running
    kill -0 "$S3_PID" 2>/dev/null || state="DEAD"
    printf 'bench: s3rver %s; last stderr lines:\n' "$state" >&2
    tail -n 8 "$S3_DIR/err" 2>/dev/null | sed 's/^/  | /' >&2
    die "$1"
}

# s3_check_key KEY: keys go into URLs unencoded
s3_check_key() { [[ $1 =~ ^[A-Za-z0-9._/-]+$ ]] || die "unexpected S3 key '$1'"; }

# s3_verify_object KEY TOTAL VERIFY_SHA WHO: size by HEAD, content by GET once
s3_verify_object() {
    local key=$1 total=$2 verify=$3 who=$4 got
    s3_check_key "$key"
    got=$("${S3C[@]}" -I --fail "$S3_URL/$S3_BUCKET/$key" | tr -d '\r' |
        awk -F': *' 'tolower($1) == "content-length" { print $2 }') || got=""
    [[ $got == "$total" ]] || s3_fail "$who: object $key has size '${got:-missing}', expected $total"
    if ((verify)); then
        got=$("${S3C[@]}" --fail "$S3_URL/$S3_BUCKET/$key" | sha256sum | cut -d' ' -f1)
        [[ $got == "$SRC_SHA" ]] || s3_fail "$who: object $key sha256 $got != source $SRC_SHA"
        log "$who: object sha256 matches the source"
    fi
}

# s3_delete_object KEY; then no multipart upload may be left in the bucket
s3_delete_object() {
    local key=$1 code left
    code=$("${S3C[@]}" -o /dev/null -w '%{http_code}' -X DELETE "$S3_URL/$S3_BUCKET/$key") || code=curl-failed
    [[ $code == 204 || $code == 200 ]] || s3_fail "DELETE $key answered $code"
    left=$(find "$S3_DIR/data/$S3_BUCKET/._S3rver_uploads" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    ((left == 0)) || s3_fail "$left multipart upload(s) left in s3rver after a completed upload"
}

# s3_direct_upload KEY PARTLIST DIR: CreateMultipartUpload, UploadPart PAR at a time,
# CompleteMultipartUpload; sets RUN_T (wall seconds of all three) and COMPLETE_TIME
s3_direct_upload() {
    local key=$1 list=$2 dir=$3 t0 t1 upload_id n size f line etag out code
    s3_check_key "$key"
    rm -rf "$dir"
    mkdir -p "$dir"
    sync
    t0=$EPOCHREALTIME
    code=$("${S3C[@]}" -o "$dir/init.xml" -w '%{http_code}' -X POST "$S3_URL/$S3_BUCKET/$key?uploads") ||
        s3_fail "CreateMultipartUpload: curl failed"
    [[ $code == 200 ]] || s3_fail "CreateMultipartUpload answered $code: $(head -c 300 "$dir/init.xml")"
    upload_id=$(sed -n 's:.*<UploadId>\([^<]*\)</UploadId>.*:\1:p' "$dir/init.xml")
    [[ -n $upload_id ]] || s3_fail "CreateMultipartUpload reply has no UploadId: $(head -c 300 "$dir/init.xml")"
    # shellcheck disable=SC2016  # expanded by the per-part sh
    if ! U="$S3_URL/$S3_BUCKET/$key" ID=$upload_id D=$dir SIGV4="aws:amz:$S3_REGION:s3" \
        KEY="$S3_KEY_ID:$S3_SECRET" xargs -P "$PAR" -L 1 \
        sh -c 'curl -sS --aws-sigv4 "$SIGV4" --user "$KEY" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
            -D "$D/hdr.$1" -o "$D/resp.$1" --fail-with-body -T "$3" \
            "$U?partNumber=$(($1 + 1))&uploadId=$ID" || exit 255' sh <"$list"; then
        for f in "$dir"/resp.*; do
            [[ -s $f ]] && printf '  %s: %s\n' "${f##*/}" "$(head -c 300 "$f")" >&2
        done
        s3_fail "UploadPart straight to s3rver failed"
    fi
    {
        printf '<CompleteMultipartUpload>'
        while read -r n size f; do
            etag=""
            while IFS= read -r line; do
                line=${line%$'\r'}
                [[ ${line,,} == etag:* ]] && etag=${line#*:} && etag=${etag# }
            done <"$dir/hdr.$n"
            [[ -n $etag ]] || s3_fail "UploadPart $((n + 1)) answered without an ETag"
            etag=${etag//&/&amp;}
            printf '<Part><PartNumber>%d</PartNumber><ETag>%s</ETag></Part>' $((n + 1)) "${etag//</&lt;}"
        done <"$list"
        printf '</CompleteMultipartUpload>'
    } >"$dir/complete.req.xml"
    out=$("${S3C[@]}" -o "$dir/complete.xml" -w '%{http_code} %{time_total}' -X POST \
        -H 'Content-Type: application/xml' --data-binary @"$dir/complete.req.xml" \
        "$S3_URL/$S3_BUCKET/$key?uploadId=$upload_id") || s3_fail "CompleteMultipartUpload: curl failed"
    t1=$EPOCHREALTIME
    code=${out%% *}
    COMPLETE_TIME=${out#* }
    if [[ $code != 200 ]] || grep -q '<Error>' "$dir/complete.xml"; then
        s3_fail "CompleteMultipartUpload answered $code: $(head -c 300 "$dir/complete.xml")"
    fi
    RUN_T=$(elapsed "$t0" "$t1")
    rm -rf "$dir"
}

# start_s3_server NAME: chunked-uploader with STORAGE_BACKEND=s3 against the bench s3rver
start_s3_server() {
    mkdir -p "$WORK/s3-spool"
    start_server fsync "$1" STORAGE_BACKEND=s3 S3_ENDPOINT="$S3_URL" S3_BUCKET="$S3_BUCKET" \
        S3_REGION="$S3_REGION" AWS_ACCESS_KEY_ID="$S3_KEY_ID" AWS_SECRET_ACCESS_KEY="$S3_SECRET" \
        TEMP_STORAGE_PATH="$WORK/s3-spool"
}

# note_server_problems: keep the server log's WARN/ERROR lines (the log goes with SRV_DIR)
note_server_problems() {
    grep -E '^[^ ]+ (WARN|ERROR) ' "$SRV_DIR/server.log" 2>/dev/null | sed "s|^|[${SRV_DIR##*/}] |" \
        >>"$WORK/s3-problems.log" || true
}

# verify_final_s3 OUTDIR TOTAL VERIFY_SHA: sets FINAL_KEY
verify_final_s3() {
    local dir=$1 total=$2 verify=$3 status backend path
    status=$("$PY" -I -S "$LIB" field "$dir/complete.json" status)
    [[ $status == complete ]] || server_fail "complete reply status '$status': $(head -c 300 "$dir/complete.json")"
    backend=$("$PY" -I -S "$LIB" field "$dir/complete.json" storage_backend)
    [[ $backend == s3 ]] || server_fail "complete reply storage_backend '$backend', expected s3"
    path=$("$PY" -I -S "$LIB" field "$dir/complete.json" final_path)
    [[ $path == "s3://$S3_BUCKET/"?* ]] || server_fail "final_path '$path' is not in s3://$S3_BUCKET/"
    FINAL_KEY=${path#"s3://$S3_BUCKET/"}
    s3_verify_object "$FINAL_KEY" "$total" "$verify" "ours(s3)"
}

# ours_s3_run VERIFY_SHA -> sets RUN_T (wall seconds) and COMPLETE_TIME
ours_s3_run() {
    local verify=$1 dir t0 t1
    start_s3_server srv-s3
    dir=$SRV_DIR/run
    mkdir -p "$dir"
    sync
    t0=$EPOCHREALTIME
    server_init "$SIZE" "$MAIN_LIST" "$dir"
    server_parts "$PAR" "$dir"
    server_complete "$dir"
    t1=$EPOCHREALTIME
    verify_final_s3 "$dir" "$SIZE" "$verify"
    s3_delete_object "$FINAL_KEY"
    stop_server
    note_server_problems
    rm -rf "$SRV_DIR"
    RUN_T=$(elapsed "$t0" "$t1")
}

# direct_s3_run ROUND VERIFY_SHA -> sets RUN_T and COMPLETE_TIME
direct_s3_run() {
    local key=direct/source-$1.bin
    s3_direct_upload "$key" "$MAIN_LIST" "$WORK/s3-direct"
    s3_verify_object "$key" "$SIZE" "$2" "direct"
    s3_delete_object "$key"
}

s3_complete_latency() {
    local key total i dir list
    start_s3_server srv-s3-lat
    for key in 1g 4g; do
        if [[ $key == 4g ]]; then
            [[ $SKIP_4G == 1 ]] && continue
            total=$((4 * GIB))
        else
            total=$GIB
        fi
        list=$WORK/s3-$key.list
        gen_partlist "$total" "$list"
        for ((i = 1; i <= 3; i++)); do
            dir=$SRV_DIR/$key-$i
            mkdir -p "$dir"
            sync
            server_init "$total" "$list" "$dir"
            server_parts "$PAR" "$dir"
            server_complete "$dir"
            verify_final_s3 "$dir" "$total" 0
            s3_delete_object "$FINAL_KEY"
            rm -rf "$dir"
            result "complete_s3_$key" "$COMPLETE_TIME"
            log "S3 complete latency $key #$i: ours $(awk -v t="$COMPLETE_TIME" 'BEGIN { printf "%.1f", t * 1000 }') ms"
            # the same upload sent straight to s3rver: its own CompleteMultipartUpload time
            s3_direct_upload "direct/lat-$key-$i.bin" "$list" "$WORK/s3-direct"
            s3_verify_object "direct/lat-$key-$i.bin" "$total" 0 "direct"
            s3_delete_object "direct/lat-$key-$i.bin"
            result "s3_direct_complete_$key" "$COMPLETE_TIME"
            log "S3 complete latency $key #$i: direct CompleteMultipartUpload $(awk -v t="$COMPLETE_TIME" 'BEGIN { printf "%.1f", t * 1000 }') ms"
        done
        rm -f "$list"
    done
    stop_server
    note_server_problems
    rm -rf "$SRV_DIR"
}

s3_section() {
    local r verify n
    start_s3rver
    result s3rver_version "s3rver $(sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' "$REPO/tests/s3/node_modules/s3rver/package.json"), node $(node --version)"
    : >"$WORK/s3-problems.log"
    for ((r = 1; r <= ROUNDS; r++)); do
        verify=0
        ((r == 1)) && verify=1
        direct_s3_run "$r" "$verify"
        result s3_direct "$RUN_T"
        result s3_direct_cmu "$COMPLETE_TIME"
        log "round $r/$ROUNDS S3 direct:     $RUN_T s (CompleteMultipartUpload $(awk -v t="$COMPLETE_TIME" 'BEGIN { printf "%.0f", t * 1000 }') ms)"
        ours_s3_run "$verify"
        result s3_ours "$RUN_T"
        result s3_ours_complete "$COMPLETE_TIME"
        log "round $r/$ROUNDS S3 ours:       $RUN_T s (complete $(awk -v t="$COMPLETE_TIME" 'BEGIN { printf "%.0f", t * 1000 }') ms)"
    done
    log "S3 complete latency (1 GiB$([[ $SKIP_4G == 1 ]] || echo ' and 4 GiB'))"
    s3_complete_latency
    n=$(wc -l <"$WORK/s3-problems.log")
    result s3_server_problems "$n"
    if ((n > 0)); then
        log "chunked-uploader logged $n WARN/ERROR line(s) in the S3 runs:"
        sed 's/^/  | /' "$WORK/s3-problems.log" | head -n 20 >&2
    fi
    n=$(grep -c . "$S3_DIR/err" || true)
    if ((n > 0)); then
        log "s3rver wrote $n line(s) to stderr:"
        head -n 20 "$S3_DIR/err" | sed 's/^/  | /' >&2
    fi
    stop_s3rver
    rm -rf "$S3_DIR"
}

# ---------------------------------------------------------------- downloads

# timed_get URL [CURL ARGS...] -> sets RUN_T (curl's time_total); checks the size
timed_get() {
    local url=$1 out code size t
    shift
    out=$(curl -sS -o /dev/null -w '%{http_code} %{size_download} %{time_total}' "$@" "$url") ||
        die "download of $url failed"
    read -r code size t <<<"$out"
    [[ $code == 200 ]] || die "download of $url answered $code"
    [[ $size == "$SIZE" ]] || die "download of $url brought $size bytes, expected $SIZE"
    RUN_T=$t
}

download_section() {
    local dir url ngx_url sum r hwm
    start_nginx
    mkdir -p "$NGX_ROOT/dl"
    for ((r = 0; r < NPARTS; r++)); do cat "$SRC_DIR/part.$r"; done >"$NGX_ROOT/dl/source.bin"
    ngx_url=http://127.0.0.1:$NGX_PORT/dl/source.bin
    start_server none srv-dl
    dir=$SRV_DIR/run
    mkdir -p "$dir"
    server_init "$SIZE" "$MAIN_LIST" "$dir"
    server_parts "$PAR" "$dir"
    server_complete "$dir"
    verify_final "$dir" "$SIZE" 0
    url=$SRV_URL/api/files/$FILE_ID
    # Both the same bytes, both warm in the page cache before anything is timed.
    sum=$(curl -sS "$ngx_url" | sha256sum | cut -d' ' -f1)
    [[ $sum == "$SRC_SHA" ]] || die "nginx served sha256 $sum, expected $SRC_SHA"
    sum=$(curl -sS -H "X-API-Key: $API_KEY" "$url" | sha256sum | cut -d' ' -f1)
    [[ $sum == "$SRC_SHA" ]] || server_fail "GET /api/files/$FILE_ID served sha256 $sum, expected $SRC_SHA"
    # Who goes first changes every round, so neither always runs right after the other.
    local which
    for ((r = 1; r <= DL_ROUNDS; r++)); do
        for which in 0 1; do
            if (((which ^ (r % 2)) == 1)); then
                timed_get "$ngx_url"
                result dl_nginx "$RUN_T"
                log "round $r/$DL_ROUNDS download nginx: $RUN_T s"
            else
                timed_get "$url" -H "X-API-Key: $API_KEY"
                result dl_ours "$RUN_T"
                log "round $r/$DL_ROUNDS download ours:  $RUN_T s"
            fi
        done
    done
    hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$SRV_PID/status")
    result dl_peak_rss_kib "$hwm"
    stop_server
    stop_nginx
    rm -rf "$SRV_DIR" "$NGX_ROOT/dl"
}

# ---------------------------------------------------------------- main

[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive integer"
[[ $SIZE_MB =~ ^[1-9][0-9]*$ ]] || die "BENCH_SIZE_MB must be a positive integer"
[[ $S3_ONLY == 1 && $SKIP_S3 == 1 ]] && die "BENCH_S3_ONLY=1 with BENCH_SKIP_S3=1 (or BENCH_NGINX_ONLY=1) leaves nothing to run"
[[ $SMB_ONLY == 1 && $SKIP_SMB == 1 ]] && die "BENCH_SMB_ONLY=1 with BENCH_SKIP_SMB=1 (or BENCH_NGINX_ONLY=1, BENCH_S3_ONLY=1) leaves nothing to run"
install_deps
if [[ $NGINX_ONLY != 1 ]]; then
    [[ -x $BIN ]] || die "$BIN not found; run make first"
fi
[[ $SKIP_S3 == 1 ]] || s3_setup_deps
[[ $SKIP_SMB == 1 ]] || smb_setup_deps

WORK=$(mktemp -d /var/tmp/cu-bench.XXXXXX)
RESULTS=$WORK/results.txt
if [[ $NGINX_ONLY != 1 ]]; then
    # run a private copy: a rebuild during the bench must not change the binary under test
    cp "$BIN" "$WORK/chunked-uploader"
    BIN=$WORK/chunked-uploader
fi
if [[ -n $SMB_BEFORE && $SKIP_SMB != 1 ]]; then
    [[ -x $SMB_BEFORE ]] || die "BENCH_SMB_BEFORE: $SMB_BEFORE is not an executable"
    cp "$SMB_BEFORE" "$WORK/chunked-uploader-before"
    SMB_BEFORE=$WORK/chunked-uploader-before
fi
need=$((SIZE + 2 * CHUNK))
[[ $SKIP_4G == 1 ]] || need=$((4 * GIB + 2 * CHUNK))
((need < SIZE * 2)) && need=$((SIZE * 2))
if [[ $SKIP_S3 != 1 ]]; then
    # s3rver holds the parts and the assembled object at once when completing
    s3need=$((2 * SIZE + (PAR + 1) * CHUNK))
    [[ $SKIP_4G == 1 ]] || s3need=$((8 * GIB + (PAR + 1) * CHUNK))
    ((s3need > need)) && need=$s3need
fi
(($(avail_bytes "$WORK") > need + GIB)) || die "not enough free space under /var/tmp (need ~$((need / 1048576 + 1024)) MiB)"

make_source
result size_bytes "$SIZE"
result parts "$NPARTS"
result rounds "$ROUNDS"
result machine "$(nproc) cores $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(awk '/^MemTotal/ { printf "%.0f GiB RAM", $2 / 1048576 }' /proc/meminfo)"
result kernel "Linux $(uname -r)"
result nginx_version "$(nginx -v 2>&1 | sed 's/.*: //')"
result src_fs "$(findmnt -n -o FSTYPE -T "$SRC_DIR" 2>/dev/null || echo '?')"
result dst_fs "$(findmnt -n -o FSTYPE,SOURCE -T "$WORK" 2>/dev/null | tr -s ' ' || echo '?')"

if [[ $S3_ONLY != 1 && $SMB_ONLY != 1 && $DOWNLOAD_ONLY != 1 ]]; then
    start_nginx
    for ((r = 1; r <= ROUNDS; r++)); do
        verify=0
        ((r == 1)) && verify=1
        nginx_run "$verify"
        result nginx "$RUN_T"
        log "round $r/$ROUNDS nginx:       $RUN_T s"
        if [[ $NGINX_ONLY != 1 ]]; then
            ours_run fsync "$verify"
            result ours_fsync "$RUN_T"
            log "round $r/$ROUNDS ours(fsync): $RUN_T s"
            ours_run none "$verify"
            result ours_none "$RUN_T"
            log "round $r/$ROUNDS ours(none):  $RUN_T s"
        fi
    done
    stop_nginx

    if [[ $NGINX_ONLY != 1 ]]; then
        log "peak RSS: 16 parallel 50 MiB parts"
        peak_rss
        log "complete latency (DURABILITY=none)"
        complete_latency
    fi
fi

if [[ $SKIP_S3 != 1 ]]; then
    log "S3: straight to s3rver vs chunked-uploader STORAGE_BACKEND=s3, $ROUNDS rounds"
    s3_section
fi

if [[ $SKIP_SMB != 1 ]]; then
    log "SMB: smbclient put vs chunked-uploader STORAGE_BACKEND=smb, $ROUNDS rounds"
    smb_section
fi

if [[ $SKIP_DOWNLOAD != 1 ]]; then
    log "download: nginx static GET vs GET /api/files/{id}, $DL_ROUNDS rounds"
    download_section
fi

"$PY" "$LIB" summary "$RESULTS"
