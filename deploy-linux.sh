#!/usr/bin/env bash
# deploy-linux.sh — run chunked-uploader as a systemd service that starts on boot and
# restarts when it stops.
#
#   sudo ./deploy-linux.sh              build (make), write .env if missing (init.sh), install
#                                       /etc/systemd/system/chunked-uploader.service, enable
#                                       and (re)start it
#   sudo ./deploy-linux.sh --no-build   the same without running make (uses the built binary)
#   sudo ./deploy-linux.sh --uninstall  stop, disable and remove the service (keeps .env,
#                                       uploads and logs)
#   ./deploy-linux.sh --print-unit      print the unit file it would install, change nothing
#   ./deploy-linux.sh --run [ARGS...]   what the service runs: wait for the storage mount,
#                                       then exec build/chunked-uploader ARGS...
#
# The service runs in this directory (so the server reads .env here) as the user who ran
# sudo (root if run as root without sudo); its output is appended to
# chunked-uploader.stdout.log and chunked-uploader.stderr.log here.
#
# --run: when LOCAL_STORAGE_PATH, TEMP_STORAGE_PATH or the directory of DATABASE_PATH
# (environment first, then .env, as the server reads them) lies under /mnt/ or /media/,
# it waits until a filesystem is mounted there, polling for up to CU_MOUNT_WAIT_SECONDS
# (default 300), so the server never writes into the empty mount-point directory on the
# root disk. If the time runs out it exits 1, and systemd tries again 5 seconds later.
#
# Overrides (mostly for testing): CU_BINARY (server binary), CU_MOUNT_WAIT_SECONDS,
# CU_MOUNT_POLL_SECONDS, DEPLOY_UNIT_DIR (default /etc/systemd/system), DEPLOY_SYSTEMCTL
# (default systemctl), DEPLOY_SERVICE_USER (user the service runs as; root or empty: root).
set -euo pipefail

SERVICE_NAME=chunked-uploader
REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
SCRIPT="$REPO_DIR/deploy-linux.sh"
CU_BINARY=${CU_BINARY:-$REPO_DIR/build/chunked-uploader}
UNIT_DIR=${DEPLOY_UNIT_DIR:-/etc/systemd/system}
UNIT_FILE="$UNIT_DIR/$SERVICE_NAME.service"
SYSTEMCTL=${DEPLOY_SYSTEMCTL:-systemctl}
STDOUT_LOG="$REPO_DIR/$SERVICE_NAME.stdout.log"
STDERR_LOG="$REPO_DIR/$SERVICE_NAME.stderr.log"
prog=deploy-linux.sh

die() {
    echo "$prog: $*" >&2
    exit 1
}

usage() {
    echo "usage: sudo ./deploy-linux.sh [--no-build] | --uninstall | --print-unit | --run [ARGS...]"
}

# ---------------------------------------------------------------------------------------
# --run

# The value of setting $1 as the server reads it (src/core/config.c): the environment wins
# over .env; in .env a later line wins; `export ` prefix, matching quotes and (unquoted)
# a trailing ` # comment` are stripped; an empty value means the default, $2.
setting() {
    local name=$1 default=$2 value="" line key
    if ! value=$(printenv "$name"); then
        value=""
        if [[ -r $REPO_DIR/.env ]]; then
            while IFS= read -r line || [[ -n $line ]]; do
                line=${line#"${line%%[![:space:]]*}"}
                line=${line#export }
                [[ $line == \#* || $line != *=* ]] && continue
                key=${line%%=*}
                key=${key%"${key##*[![:space:]]}"}
                [[ $key == "$name" ]] || continue
                line=${line#*=}
                line=${line#"${line%%[![:space:]]*}"}
                line=${line%"${line##*[![:space:]]}"}
                if [[ ${#line} -ge 2 && ( $line == \"*\" || $line == \'*\' ) ]]; then
                    line=${line:1:${#line}-2}
                elif [[ $line == *" #"* ]]; then
                    line=${line%%" #"*}
                    line=${line%"${line##*[![:space:]]}"}
                fi
                value=$line
            done <"$REPO_DIR/.env"
        fi
    fi
    printf '%s\n' "${value:-$default}"
}

# Mount point (as findmnt names it) of the filesystem holding $1, an existing path.
mount_of() {
    if command -v findmnt >/dev/null 2>&1; then
        findmnt -n -o TARGET -T "$1" 2>/dev/null
    else
        stat -c %d "$1" 2>/dev/null # device number: enough to tell two filesystems apart
    fi
}

# True when the deepest existing ancestor of path $1 is on another filesystem than $2
# (/mnt or /media), i.e. something is mounted between them.
mounted_below() {
    local path=$1 root=$2 here there
    while [[ ! -e $path ]]; do
        path=${path%/*}
        path=${path:-/}
    done
    here=$(mount_of "$path") || return 1
    there=$(mount_of "$root") || return 1
    [[ -n $here && $here != "$there" ]]
}

wait_for_mount() {
    local what=$1 path=$2 root waited=0
    local limit=${CU_MOUNT_WAIT_SECONDS:-300} poll=${CU_MOUNT_POLL_SECONDS:-2}
    [[ $path == /* ]] || path="$REPO_DIR/$path"
    path=$(realpath -m -- "$path" 2>/dev/null || printf '%s\n' "$path")
    case $path in
        /mnt/*) root=/mnt ;;
        /media/*) root=/media ;;
        *) return 0 ;;
    esac
    if mounted_below "$path" "$root"; then
        return 0
    fi
    echo "$prog: $what is $path: waiting up to ${limit}s for a filesystem to be mounted under $root"
    until mounted_below "$path" "$root"; do
        if ((waited >= limit)); then
            echo "$prog: nothing mounted at $path after ${limit}s (is the disk or share connected?); exiting" >&2
            exit 1
        fi
        sleep "$poll"
        waited=$((waited + poll))
    done
    echo "$prog: $path is mounted (after about ${waited}s)"
}

run_server() {
    local db
    cd "$REPO_DIR"
    wait_for_mount LOCAL_STORAGE_PATH "$(setting LOCAL_STORAGE_PATH ./uploads)"
    local temp
    temp=$(setting TEMP_STORAGE_PATH "")
    [[ -z $temp ]] || wait_for_mount TEMP_STORAGE_PATH "$temp"
    db=$(setting DATABASE_PATH ./uploads.db)
    [[ $db == */* ]] || db="./$db"
    db=${db%/*}
    wait_for_mount "DATABASE_PATH's directory" "${db:-/}"
    [[ -x $CU_BINARY ]] || die "$CU_BINARY not found or not executable; build it with: make -C $REPO_DIR"
    exec "$CU_BINARY" "$@"
}

# ---------------------------------------------------------------------------------------
# Install / uninstall

# The user the service runs as; empty for root.
service_user() {
    local user
    if [[ -n ${DEPLOY_SERVICE_USER+x} ]]; then
        user=$DEPLOY_SERVICE_USER
    elif [[ -n ${SUDO_USER:-} ]]; then
        user=$SUDO_USER
    else
        user=$(id -un)
    fi
    [[ $user == root ]] && user=""
    if [[ -n $user ]] && ! id -u "$user" >/dev/null 2>&1; then
        die "no such user: $user"
    fi
    printf '%s\n' "$user"
}

# Runs a command as the service user (so build/ and .env stay theirs), or as is.
as_user() {
    local user=$1 home
    shift
    if [[ -n $user && $EUID -eq 0 && $(id -un) != "$user" ]]; then
        home=$(getent passwd "$user" | cut -d: -f6)
        runuser -u "$user" -- env HOME="${home:-/}" "$@"
    else
        "$@"
    fi
}

print_unit() {
    local user=$1
    # systemd would expand % and $ and split on blanks; refuse such paths rather than escape them.
    case $REPO_DIR in
        *[[:space:]%\$\"\'\\]*) die "the repository path '$REPO_DIR' contains a blank, %, \$, a quote or a backslash; move it elsewhere" ;;
    esac
    cat <<EOF
# Installed by $SCRIPT; remove with: sudo $SCRIPT --uninstall
[Unit]
Description=chunked-uploader (resumable chunked upload server)
Wants=network-online.target
After=network-online.target remote-fs.target
StartLimitIntervalSec=0

[Service]
Type=simple
EOF
    if [[ -n $user ]]; then
        echo "User=$user"
        echo "Group=$(id -gn "$user")"
    fi
    cat <<EOF
WorkingDirectory=$REPO_DIR
ExecStart=$SCRIPT --run
Restart=always
RestartSec=5
LimitNOFILE=65536
StandardOutput=append:$STDOUT_LOG
StandardError=append:$STDERR_LOG

[Install]
WantedBy=multi-user.target
EOF
}

# $1: the option to repeat in the hint, if any.
need_root() {
    if [[ $EUID -ne 0 && ! -w $UNIT_DIR ]]; then
        die "writing $UNIT_DIR needs root; run: sudo $SCRIPT${1:+ $1}"
    fi
}

check_systemd() {
    if [[ $SYSTEMCTL == systemctl && ! -d /run/systemd/system ]]; then
        die "systemd is not running on this machine$1"
    fi
}

install_service() {
    local build=$1 user log tmp
    if ((build)); then need_root; else need_root --no-build; fi
    user=$(service_user)
    print_unit "$user" >/dev/null # validates the path before anything is changed

    if [[ ! -e $REPO_DIR/.env ]]; then
        as_user "$user" "$REPO_DIR/init.sh" --quiet
    fi
    if ((build)); then
        echo "Building (make)..."
        as_user "$user" make -C "$REPO_DIR" ||
            die "build failed (missing packages? run: sudo $REPO_DIR/scripts/install-deps.sh)"
    fi
    [[ -x $CU_BINARY ]] || die "$CU_BINARY not found after the build"

    # systemd creates the logs as root; make them the service user's so they can be rotated.
    for log in "$STDOUT_LOG" "$STDERR_LOG"; do
        [[ -e $log ]] || : >"$log"
        if [[ -n $user && $EUID -eq 0 ]]; then chown "$user:$(id -gn "$user")" "$log"; fi
    done

    mkdir -p "$UNIT_DIR"
    tmp=$(mktemp "$UNIT_DIR/.$SERVICE_NAME.service.XXXXXX")
    trap 'rm -f "$tmp"' EXIT
    print_unit "$user" >"$tmp"
    chmod 644 "$tmp"
    mv -f "$tmp" "$UNIT_FILE"
    trap - EXIT
    echo "Wrote $UNIT_FILE (runs as ${user:-root})"

    check_systemd "; the unit is written but not started"
    "$SYSTEMCTL" daemon-reload
    "$SYSTEMCTL" enable --quiet "$SERVICE_NAME"
    "$SYSTEMCTL" restart "$SERVICE_NAME"
    sleep 2
    if "$SYSTEMCTL" is-active --quiet "$SERVICE_NAME"; then
        echo "Service $SERVICE_NAME is enabled and running."
    else
        echo "Warning: $SERVICE_NAME is not active; see: sudo systemctl status $SERVICE_NAME; tail $STDERR_LOG" >&2
    fi
    cat <<EOF

Manage it with:
  sudo systemctl status $SERVICE_NAME     # status
  sudo systemctl restart $SERVICE_NAME    # restart (e.g. after editing .env or rebuilding)
  sudo systemctl stop $SERVICE_NAME       # stop
  sudo systemctl start $SERVICE_NAME      # start
  sudo systemctl disable $SERVICE_NAME    # do not start on boot
  sudo $SCRIPT --uninstall   # remove the service
Logs:
  tail -f $STDOUT_LOG
  tail -f $STDERR_LOG
  sudo journalctl -u $SERVICE_NAME -f     # systemd's own messages (starts, restarts)
EOF
}

uninstall_service() {
    need_root --uninstall
    check_systemd ""
    if [[ -e $UNIT_FILE ]]; then
        "$SYSTEMCTL" disable --now --quiet "$SERVICE_NAME" || true
        rm -f "$UNIT_FILE"
        "$SYSTEMCTL" daemon-reload
        "$SYSTEMCTL" reset-failed "$SERVICE_NAME" 2>/dev/null || true
        echo "Stopped, disabled and removed $UNIT_FILE."
    else
        echo "$UNIT_FILE is not installed; nothing to do."
    fi
    echo "Kept: $REPO_DIR/.env, the uploads, the database and the logs."
}

# ---------------------------------------------------------------------------------------

if [[ ${1:-} == --run ]]; then
    shift
    run_server "$@"
fi
if (($# > 1)); then
    usage >&2
    exit 2
fi
case ${1:-} in
    "") install_service 1 ;;
    --no-build) install_service 0 ;;
    --uninstall) uninstall_service ;;
    --print-unit)
        user=$(service_user)
        print_unit "$user"
        ;;
    -h | --help) usage ;;
    *)
        usage >&2
        exit 2
        ;;
esac
