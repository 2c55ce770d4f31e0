#!/usr/bin/env bash
# Fuzzes each decoder a peer can reach for SECONDS each (default 30): the logging-channel codec
# (decode: vmm::ft::record), the FT control channel (control: ft-control) and the control
# socket's request reader (api: vmm::api):
#     fuzz/run.sh 60            every target
#     fuzz/run.sh 60 control    one target
# Installs cargo-fuzz first if it is missing. Only the stable toolchain is needed: cargo fuzz
# passes nightly-only flags (-Zsanitizer=address, sancov), which RUSTC_BOOTSTRAP=1 unlocks.
# Exits non-zero if the target crashes; the input that crashed it is left in
# fuzz/artifacts/TARGET/ (replay: RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz TARGET FILE).
set -euo pipefail

secs="${1:-30}"
case "$secs" in
    '' | *[!0-9]* | 0) echo "usage: $0 SECONDS (a positive integer)" >&2; exit 2 ;;
esac
here="$(cd "$(dirname "$0")" && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --version 0.13.2 --locked
fi

cd "$here"   # cargo fuzz wants to start inside a cargo project
targets="${2:-decode control api}"
for target in $targets; do
    mkdir -p "$here/corpus/$target" "$here/target"
    log="$here/target/$target-run.log"   # not in artifacts/: cargo fuzz lists every file there
    echo "fuzzing $target for ${secs}s (log: $log)"
    status=0
    # -malloc_limit_mb: any single allocation above 16 MiB is a crash. Inputs are at most
    # 4 KiB, so only a length taken on trust from the input could ask for that much.
    cargo fuzz run --fuzz-dir "$here" "$target" "$here/corpus/$target" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=16 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    # libFuzzer reports every new input and its dictionary; show the build, the summary or the crash.
    grep -v -E '^(#[0-9]+[[:space:]]+(NEW|REDUCE|pulse)|".*" # Uses: [0-9]+$|###### )' "$log" | tail -n 30
    if [ "$status" -ne 0 ]; then
        echo "fuzz/run.sh: the $target target FAILED (exit $status); see $log" >&2
        exit "$status"
    fi
    echo "fuzz/run.sh: $target: no crash in ${secs}s"
done
