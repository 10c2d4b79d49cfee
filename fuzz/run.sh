#!/usr/bin/env bash
# Runs each fuzz target for a while with libFuzzer (needs a nightly toolchain and cargo-fuzz),
# starting from the committed corpus. New inputs go to fuzz/corpus-new/NAME (not committed);
# merge the interesting ones into fuzz/corpus/NAME with `cargo fuzz cmin` by hand.
# Usage: fuzz/run.sh [seconds per target, default 60] [target...]
# Without nightly, the stable replay runs instead: `cargo test --release --test resp --test http --test lines fuzz`.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(resp_decode http_decode len32_decode lines_decode)
if ! cargo +nightly --version >/dev/null 2>&1 || ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: needs a nightly toolchain and cargo-fuzz (cargo install cargo-fuzz)" >&2
    exit 2
fi
for t in "${targets[@]}"; do
    mkdir -p "corpus-new/$t"
    echo "== $t for ${secs}s"
    cargo +nightly fuzz run "$t" "corpus-new/$t" "corpus/$t" -- \
        -max_total_time="$secs" -max_len=4096 -print_final_stats=1
done
