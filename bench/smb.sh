# shellcheck shell=bash
# The SMB section of bench/bench.sh (sourced by it; uses its helpers and variables).
#
# A private smbd (the integration tests' SmbServer from tests/integration/harness.py, run by
# benchlib.py smbd: its own smb.conf on a free loopback port, one share on real disk under
# $WORK) receives the same BENCH_SIZE_MB file, rounds alternating:
#   - smbclient put of the whole file (Samba's own client: the reference), and
#   - chunked-uploader STORAGE_BACKEND=smb: init + 50 MiB parts 4 at a time + complete
#     (and the same with BENCH_SMB_BEFORE, an older build, when given).
# Both go to the same share; every result is checked on the share's directory: its size, and
# its SHA-256 in the first round.

SMBD_PID=""   # benchlib.py smbd (it stops smbd and removes its directory on SIGTERM)
SMBD_DIR=""
SMB_PORT=""
SMB_USER=""
SMB_PASS=""
SMB_SHARE=""
SMB_SHARE_DIR=""
SMB_WHOLE=""  # the source as one file, for smbclient put

smb_setup_deps() {
    local need=0 tool
    for tool in smbd smbpasswd smbclient; do
        command -v "$tool" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin command -v "$tool" >/dev/null 2>&1 || need=1
    done
    ((need)) || return 0
    [[ $EUID -eq 0 ]] || die "samba and smbclient are needed for the SMB section (or set BENCH_SKIP_SMB=1)"
    log "installing samba, smbclient"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq samba smbclient >/dev/null
}

stop_smbd() { stop_child SMBD_PID; }

smbd_version() { echo "Samba $(PATH=$PATH:/usr/sbin smbd --version | sed 's/^Version //')"; }

start_smbd() {
    local i word
    [[ $EUID -eq 0 ]] || die "the SMB section starts smbd, which must run as root (or set BENCH_SKIP_SMB=1)"
    SMBD_DIR=$WORK/smbd
    mkdir -p "$SMBD_DIR"
    : >"$WORK/smbd.out"
    "$PY" "$LIB" smbd "$SMBD_DIR" >"$WORK/smbd.out" 2>"$WORK/smbd.err" &
    SMBD_PID=$!
    for ((i = 0; i < 300; i++)); do
        kill -0 "$SMBD_PID" 2>/dev/null || { SMBD_PID=""; die "smbd did not start: $(tail -n 5 "$WORK/smbd.err")"; }
        if read -r word SMB_PORT SMB_USER SMB_PASS SMB_SHARE SMB_SHARE_DIR <"$WORK/smbd.out" &&
            [[ $word == ready && -n $SMB_SHARE_DIR ]]; then
            break
        fi
        sleep 0.1
    done
    ((i < 300)) || die "smbd did not print ready within 30 s: $(tail -n 5 "$WORK/smbd.err")"
    log "$(smbd_version) on 127.0.0.1:$SMB_PORT, share in $SMB_SHARE_DIR"
}

# smbclient_run ROUND VERIFY_SHA -> sets RUN_T
smbclient_run() {
    local name=direct-$1.bin t0 t1 out
    sync
    t0=$EPOCHREALTIME
    out=$(smbclient -p "$SMB_PORT" "//127.0.0.1/$SMB_SHARE" -U "$SMB_USER%$SMB_PASS" \
        -c "put \"$SMB_WHOLE\" $name" 2>&1) || die "smbclient put failed: $out"
    t1=$EPOCHREALTIME
    check_file "$SMB_SHARE_DIR/$name" "$SIZE" "$2" die
    rm -f -- "$SMB_SHARE_DIR/$name"
    RUN_T=$(elapsed "$t0" "$t1")
}

# ours_smb_run VERIFY_SHA [BINARY] -> sets RUN_T and COMPLETE_TIME
ours_smb_run() {
    local verify=$1 BIN=${2:-$BIN} path  # start_server runs $BIN
    start_server fsync srv-smb STORAGE_BACKEND=smb SMB_HOST=127.0.0.1 SMB_PORT="$SMB_PORT" \
        SMB_USER="$SMB_USER" SMB_PASS="$SMB_PASS" SMB_SHARE="$SMB_SHARE" SMB_PATH=bench
    timed_upload "$SRV_DIR/run"
    path=$("$PY" -I -S "$LIB" field "$SRV_DIR/run/complete.json" final_path)
    [[ $path == "smb://127.0.0.1/$SMB_SHARE/bench/"?* ]] || server_fail "final_path '$path' is not on the share"
    path=$SMB_SHARE_DIR/${path#"smb://127.0.0.1/$SMB_SHARE/"}
    check_file "$path" "$SIZE" "$verify" server_fail
    rm -f -- "$path"
    stop_server
    grep -E '^[^ ]+ (WARN|ERROR) ' "$SRV_DIR/server.log" 2>/dev/null | sed 's/^/[srv-smb] /' \
        >>"$WORK/smb-problems.log" || true
    rm -rf "$SRV_DIR"
}

smb_section() {
    local r verify n f
    start_smbd
    result smbd_version "$(smbd_version)"
    SMB_WHOLE=$SRC_DIR/whole.bin
    while read -r _ _ f; do cat "$f"; done <"$MAIN_LIST" >"$SMB_WHOLE"
    : >"$WORK/smb-problems.log"
    for ((r = 1; r <= ROUNDS; r++)); do
        verify=0
        ((r == 1)) && verify=1
        smbclient_run "$r" "$verify"
        result smb_direct "$RUN_T"
        log "round $r/$ROUNDS smbclient put: $RUN_T s"
        if [[ -n $SMB_BEFORE ]]; then
            ours_smb_run "$verify" "$SMB_BEFORE"
            result smb_before "$RUN_T"
            log "round $r/$ROUNDS SMB before:    $RUN_T s"
        fi
        ours_smb_run "$verify"
        result smb_ours "$RUN_T"
        result smb_ours_complete "$COMPLETE_TIME"
        log "round $r/$ROUNDS SMB ours:      $RUN_T s (complete $(awk -v t="$COMPLETE_TIME" 'BEGIN { printf "%.0f", t * 1000 }') ms)"
    done
    n=$(wc -l <"$WORK/smb-problems.log")
    result smb_server_problems "$n"
    if ((n > 0)); then
        log "chunked-uploader logged $n WARN/ERROR line(s) in the SMB runs:"
        sed 's/^/  | /' "$WORK/smb-problems.log" | head -n 20 >&2
    fi
    rm -f -- "$SMB_WHOLE"
    stop_smbd
}
