#!/usr/bin/env bash
# deploy-mac.sh — run chunked-uploader on macOS as a launchd LaunchAgent that starts at
# login and restarts when it stops.
#
#   ./deploy-mac.sh               build (make), write .env if missing (init.sh), write
#                                 ~/Library/LaunchAgents/com.grace.chunked-uploader.plist
#                                 and (re)load it
#   ./deploy-mac.sh --no-build    the same without running make (uses the built binary)
#   ./deploy-mac.sh --uninstall   unload and remove the agent (keeps .env, uploads, logs)
#   ./deploy-mac.sh --print-plist print the plist it would write, change nothing
#   ./deploy-mac.sh --run [ARGS]  what launchd runs: wait for the storage volume, then
#                                 exec build/chunked-uploader ARGS
#
# The agent runs in this directory (so the server reads .env here); its output goes to
# chunked-uploader.stdout.log and chunked-uploader.stderr.log here.
#
# --run: when LOCAL_STORAGE_PATH, TEMP_STORAGE_PATH or the directory of DATABASE_PATH
# (environment first, then .env, as the server reads them) lies on an external volume
# (/Volumes/NAME/...), it waits until /Volumes/NAME is mounted, polling for up to
# CU_MOUNT_WAIT_SECONDS (default 300), so the server never writes into a stale folder on
# the boot disk. If the time runs out it exits 1 and launchd (KeepAlive) starts it again.
#
# launchd runs this with /bin/bash 3.2: keep to bash 3.2 features.
# Overrides (mostly for testing): CU_BINARY, CU_MOUNT_WAIT_SECONDS, CU_MOUNT_POLL_SECONDS,
# DEPLOY_AGENT_DIR (default ~/Library/LaunchAgents), DEPLOY_LAUNCHCTL (default launchctl).
set -euo pipefail

LABEL=com.grace.chunked-uploader
REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
SCRIPT="$REPO_DIR/deploy-mac.sh"
CU_BINARY=${CU_BINARY:-$REPO_DIR/build/chunked-uploader}
AGENT_DIR=${DEPLOY_AGENT_DIR:-$HOME/Library/LaunchAgents}
PLIST="$AGENT_DIR/$LABEL.plist"
LAUNCHCTL=${DEPLOY_LAUNCHCTL:-launchctl}
STDOUT_LOG="$REPO_DIR/chunked-uploader.stdout.log"
STDERR_LOG="$REPO_DIR/chunked-uploader.stderr.log"
prog=deploy-mac.sh

die() {
    echo "$prog: $*" >&2
    exit 1
}

usage() {
    echo "usage: ./deploy-mac.sh [--no-build] | --uninstall | --print-plist | --run [ARGS...]"
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

# True when volume $1 (/Volumes/NAME) is mounted: df names it as its own mount point.
# (An unmounted volume's folder is usually gone, but can linger as a plain folder.)
volume_mounted() {
    local vol=$1 mnt
    [[ -L $vol ]] && return 0 # e.g. "/Volumes/Macintosh HD" -> /
    [[ -d $vol ]] || return 1
    mnt=$(df -P "$vol" 2>/dev/null | tail -n 1 | sed 's/^.*% //') || return 1
    [[ $mnt == "$vol" ]]
}

wait_for_volume() {
    local what=$1 path=$2 vol rest waited=0
    local limit=${CU_MOUNT_WAIT_SECONDS:-300} poll=${CU_MOUNT_POLL_SECONDS:-2}
    [[ $path == /* ]] || path="$REPO_DIR/$path"
    case $path in
        /Volumes/?*) ;;
        *) return 0 ;;
    esac
    rest=${path#/Volumes/}
    vol="/Volumes/${rest%%/*}"
    if volume_mounted "$vol"; then
        return 0
    fi
    echo "$prog: $what is $path: waiting up to ${limit}s for $vol to be mounted"
    until volume_mounted "$vol"; do
        if ((waited >= limit)); then
            echo "$prog: $vol is not mounted after ${limit}s (is the disk or share connected?); exiting" >&2
            exit 1
        fi
        sleep "$poll"
        waited=$((waited + poll))
    done
    echo "$prog: $vol is mounted (after about ${waited}s)"
}

run_server() {
    local temp db
    cd "$REPO_DIR"
    wait_for_volume LOCAL_STORAGE_PATH "$(setting LOCAL_STORAGE_PATH ./uploads)"
    temp=$(setting TEMP_STORAGE_PATH "")
    [[ -z $temp ]] || wait_for_volume TEMP_STORAGE_PATH "$temp"
    db=$(setting DATABASE_PATH ./uploads.db)
    [[ $db == */* ]] || db="./$db"
    db=${db%/*}
    wait_for_volume "DATABASE_PATH's directory" "${db:-/}"
    [[ -x $CU_BINARY ]] || die "$CU_BINARY not found or not executable; build it with: make -C $REPO_DIR"
    exec "$CU_BINARY" ${1+"$@"}
}

# ---------------------------------------------------------------------------------------
# Install / uninstall

xml_escape() {
    printf '%s\n' "$1" | sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g'
}

print_plist() {
    local dir script out err
    dir=$(xml_escape "$REPO_DIR")
    script=$(xml_escape "$SCRIPT")
    out=$(xml_escape "$STDOUT_LOG")
    err=$(xml_escape "$STDERR_LOG")
    cat <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
    <key>Label</key>
    <string>$LABEL</string>
    <key>ProgramArguments</key>
    <array>
        <string>$script</string>
        <string>--run</string>
    </array>
    <key>WorkingDirectory</key>
    <string>$dir</string>
    <key>RunAtLoad</key>
    <true/>
    <key>KeepAlive</key>
    <true/>
    <key>StandardOutPath</key>
    <string>$out</string>
    <key>StandardErrorPath</key>
    <string>$err</string>
</dict>
</plist>
EOF
}

check_platform() {
    if [[ $EUID -eq 0 ]]; then
        die "run this as yourself, not with sudo: a LaunchAgent belongs to the logged-in user"
    fi
    if [[ $LAUNCHCTL == launchctl && $(uname -s) != Darwin ]]; then
        die "this is for macOS; on Linux use: sudo ./deploy-linux.sh"
    fi
}

install_agent() {
    local build=$1 tmp
    check_platform
    if [[ ! -e $REPO_DIR/.env ]]; then
        "$REPO_DIR/init.sh" --quiet
    fi
    if ((build)); then
        echo "Building (make)..."
        make -C "$REPO_DIR" || die "build failed; see the errors above"
    fi
    [[ -x $CU_BINARY ]] || die "$CU_BINARY not found after the build"

    mkdir -p "$AGENT_DIR"
    tmp=$(mktemp "$AGENT_DIR/.$LABEL.plist.XXXXXX")
    trap 'rm -f "$tmp"' EXIT
    print_plist >"$tmp"
    chmod 644 "$tmp"
    if command -v plutil >/dev/null 2>&1; then
        plutil -lint -s "$tmp" || die "generated plist is invalid"
    fi
    "$LAUNCHCTL" unload "$PLIST" 2>/dev/null || true
    mv -f "$tmp" "$PLIST"
    trap - EXIT
    echo "Wrote $PLIST"
    "$LAUNCHCTL" load -w "$PLIST"
    sleep 2
    if "$LAUNCHCTL" list "$LABEL" >/dev/null 2>&1; then
        echo "Agent $LABEL is loaded (it restarts if it stops, and starts at login)."
    else
        echo "Warning: $LABEL does not appear in 'launchctl list'; see $STDERR_LOG" >&2
    fi
    cat <<EOF

Manage it with:
  launchctl list | grep chunked-uploader    # status (PID, last exit code)
  launchctl unload "$PLIST"    # stop
  launchctl load "$PLIST"      # start
  "$SCRIPT" --uninstall    # remove the agent
Logs:
  tail -f "$STDOUT_LOG"
  tail -f "$STDERR_LOG"
EOF
}

uninstall_agent() {
    check_platform
    if [[ -e $PLIST ]]; then
        "$LAUNCHCTL" unload -w "$PLIST" 2>/dev/null || true
        rm -f "$PLIST"
        echo "Unloaded and removed $PLIST."
    else
        echo "$PLIST is not installed; nothing to do."
    fi
    echo "Kept: $REPO_DIR/.env, the uploads, the database and the logs."
}

# ---------------------------------------------------------------------------------------

if [[ ${1:-} == --run ]]; then
    shift
    run_server ${1+"$@"}
fi
if (($# > 1)); then
    usage >&2
    exit 2
fi
case ${1:-} in
    "") install_agent 1 ;;
    --no-build) install_agent 0 ;;
    --uninstall) uninstall_agent ;;
    --print-plist) print_plist ;;
    -h | --help) usage ;;
    *)
        usage >&2
        exit 2
        ;;
esac
