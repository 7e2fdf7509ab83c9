#!/usr/bin/env bash
# fuzz.sh — run the libFuzzer targets of tests/fuzz, built by a CU_FUZZ tree (clang).
#
# Usage:
#   scripts/fuzz.sh run BUILD_DIR SECONDS [TARGET...]
#       Fuzzes each target (all by default) for SECONDS, one after the other, on one core.
#       It starts from its committed corpus (tests/fuzz/corpus/TARGET, read only) and the
#       inputs earlier runs found (BUILD_DIR/fuzz-corpus/TARGET, where new ones go); a crash,
#       leak, timeout or sanitizer report is kept in BUILD_DIR/fuzz-findings/TARGET/ and
#       makes the run fail, after every target has had its turn.
#   scripts/fuzz.sh regress BUILD_DIR TARGET
#       Runs TARGET once on every input of its committed corpus (what `make test` does).
set -euo pipefail

prog=${0##*/}
root=$(cd "$(dirname "$0")/.." && pwd)
corpus_root=$root/tests/fuzz/corpus

usage() {
    echo "usage: $prog run BUILD_DIR SECONDS [TARGET...] | regress BUILD_DIR TARGET" >&2
    exit 2
}

# The sanitizers' settings, whatever the caller's environment says: leaks count as findings,
# and any report stops the target.
export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS=suppressions=$root/tests/lsan.supp

target_bin() {
    local bin=$1/$2
    if [[ ! -x $bin ]]; then
        echo "$prog: $bin not built (make fuzz builds it)" >&2
        exit 1
    fi
    echo "$bin"
}

regress() {
    local bin corpus files
    bin=$(target_bin "$1" "$2")
    corpus=$corpus_root/$2
    files=()
    [[ -d $corpus ]] && mapfile -t files < <(find "$corpus" -type f | sort)
    if ((${#files[@]} == 0)); then
        echo "$prog: no corpus for $2 in $corpus" >&2
        exit 1
    fi
    # Given files rather than a directory, libFuzzer runs each once and fuzzes nothing.
    "$bin" "${files[@]}"
    echo "$2: ${#files[@]} corpus inputs, no finding"
}

# One line from a run's log: inputs run, their rate, and the coverage reached.
summary() {
    local runs rate cov
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$1")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$1")
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$1" | tail -n 1 || true)
    echo "${runs:-?} runs (${rate:-?}/s), ${cov:-no coverage line}, no finding"
}

run() {
    local build=$1 seconds=$2
    shift 2
    local targets=("$@") failed=() t
    if ((${#targets[@]} == 0)); then
        for t in "$root"/tests/fuzz/fuzz_*.c; do
            t=${t##*/}
            targets+=("${t%.c}")
        done
    fi
    for t in "${targets[@]}"; do
        local bin scratch findings log args
        bin=$(target_bin "$build" "$t")
        scratch=$build/fuzz-corpus/$t
        findings=$build/fuzz-findings/$t
        log=$build/fuzz-logs/$t.log
        mkdir -p "$scratch" "$findings" "$build/fuzz-logs"
        args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
              -artifact_prefix="$findings/")
        [[ -f $root/tests/fuzz/$t.dict ]] && args+=(-dict="$root/tests/fuzz/$t.dict")
        echo "$t: fuzzing for ${seconds}s (log: $log)"
        if "$bin" "${args[@]}" "$scratch" "$corpus_root/$t" >"$log" 2>&1; then
            echo "$t: $(summary "$log")"
        else
            failed+=("$t")
            echo "$t: FINDING; the report:" >&2
            grep -E -A 30 '^(==[0-9]+==ERROR|.*runtime error|.*invariant broken|.*Test unit written)' \
                "$log" | head -n 60 >&2 || tail -n 40 "$log" >&2
            ls -1 "$findings" | sed "s|^|  $findings/|" >&2
        fi
    done
    if ((${#failed[@]} > 0)); then
        echo "$prog: findings in: ${failed[*]} (reproduce: BUILD/TARGET FILE)" >&2
        exit 1
    fi
}

(($# >= 3)) || usage
case $1 in
    run) run "${@:2}" ;;
    regress) (($# == 3)) || usage; regress "$2" "$3" ;;
    *) usage ;;
esac
