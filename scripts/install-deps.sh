#!/usr/bin/env bash
# install-deps.sh — install the Debian (bookworm) packages needed to build chunked-uploader.
#
# Idempotent: asks dpkg-query which of the packages are missing and installs only
# those; runs `apt-get update` only when something is missing. Quiet: prints nothing
# when everything is installed, one line naming what it installs otherwise (apt's own
# output is shown only if apt fails).
#
# Usage: scripts/install-deps.sh [--test] [--fuzz] [--bench]
#   --test   also what only the tests need  (TEST_PKGS, and FUZZ_PKGS for the corpus tests)
#   --fuzz   also what the fuzz targets need (FUZZ_PKGS)
#   --bench  also what only the benchmarks need (BENCH_PKGS)
# Must run as root (or via sudo) when something is missing.
set -euo pipefail

# Needed to build and run the server. Node.js's npm fetches Swagger UI from the npm registry
# for the API docs page, which the build compiles into the server (web/package.json).
BUILD_PKGS=(
    build-essential cmake pkg-config
    libmicrohttpd-dev libsqlite3-dev libjansson-dev libjwt-dev libssl-dev
    libcurl4-openssl-dev libidn2-dev libcmocka-dev uuid-dev libsmbclient-dev libmagic-dev
    zlib1g-dev nodejs python3 python3-requests curl ca-certificates
)
# Needed only by the tests: real servers started on loopback (Samba's smbd for the SMB
# backend; the S3 test server, s3rver, runs on Node.js, installed from the npm registry by
# `make test`) and smbclient as an independent SMB client; Chromium for the browser tests
# (driven by playwright-core from the npm registry, tests/js); strace to see that downloads
# from local disk go out with sendfile.
TEST_PKGS=(samba smbclient chromium strace)
# Needed by the fuzz targets (tests/fuzz): clang, and its runtimes for libFuzzer, ASan and
# UBSan. `make fuzz` fuzzes with them; `make test` runs each target over its corpus.
FUZZ_PKGS=(clang libclang-rt-14-dev)
# Needed only by the benchmarks (nginx is the reference server; wrk makes request load).
BENCH_PKGS=(nginx-light wrk)

prog=${0##*/}

usage() {
    echo "usage: $prog [--test] [--fuzz] [--bench]"
}

wanted=("${BUILD_PKGS[@]}")
# Debian's nodejs leaves npm to a package of its own; builds of nodejs that bundle npm
# conflict with that package, so ask for it only when npm is missing.
command -v npm >/dev/null 2>&1 || wanted+=(npm)
for arg in "$@"; do
    case $arg in
        --test) wanted+=("${TEST_PKGS[@]}" "${FUZZ_PKGS[@]}") ;;
        --fuzz) wanted+=("${FUZZ_PKGS[@]}") ;;
        --bench) wanted+=("${BENCH_PKGS[@]}") ;;
        -h | --help) usage; exit 0 ;;
        *) echo "$prog: unknown argument: $arg" >&2; usage >&2; exit 2 ;;
    esac
done

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    echo "$prog: dpkg-query/apt-get not found: this script is for Debian (bookworm)" >&2
    exit 1
fi

is_installed() {
    local status
    status=$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) || return 1
    [[ $status == "install ok installed" ]]
}

# Missing packages, each once, in the order given.
missing=()
declare -A seen=()
for pkg in "${wanted[@]}"; do
    [[ -n ${seen[$pkg]:-} ]] && continue
    seen[$pkg]=1
    is_installed "$pkg" || missing+=("$pkg")
done

((${#missing[@]} == 0)) && exit 0

if ((EUID != 0)); then
    echo "$prog: missing packages: ${missing[*]}" >&2
    echo "$prog: installing them needs root; run: sudo $0 $*" >&2
    exit 1
fi

echo "$prog: installing ${missing[*]}"

export DEBIAN_FRONTEND=noninteractive
log=$(mktemp "${TMPDIR:-/tmp}/install-deps.XXXXXX")
trap 'rm -f "$log"' EXIT

# Runs apt-get quietly; on failure shows its output and stops.
apt_quiet() {
    if ! apt-get "$@" >"$log" 2>&1; then
        cat "$log" >&2
        echo "$prog: 'apt-get $*' failed" >&2
        exit 1
    fi
}

apt_quiet update -q
apt_quiet install -y -q --no-install-recommends "${missing[@]}"

# apt-get can succeed without installing a package (e.g. a virtual name); check.
still=()
for pkg in "${missing[@]}"; do
    is_installed "$pkg" || still+=("$pkg")
done
if ((${#still[@]} > 0)); then
    echo "$prog: still not installed after apt-get: ${still[*]}" >&2
    exit 1
fi
