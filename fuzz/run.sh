#!/usr/bin/env bash
# Runs the fuzz targets, each for SECONDS (default 60), one after another:
#   fuzz/run.sh [SECONDS] [TARGET...]        (no TARGET: all of them)
# New inputs go to fuzz/corpus/<target>/ (not committed), the committed seeds are
# read from fuzz/seeds/<target>/, crashes are written to fuzz/artifacts/<target>/ and
# make the script fail. Each run prints libFuzzer's final stats (executions, coverage).
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`) and a nightly compiler: the
# nightly toolchain if rustup has one, else the stable one with RUSTC_BOOTSTRAP=1
# (cargo-fuzz passes unstable -Z flags; no toolchain is downloaded).
# Targets are built without a sanitizer (-s none): the code under test forbids
# `unsafe`, so what the fuzzer looks for is panics, overflows (debug assertions are
# on) and the targets' own checks, and it runs several times faster that way.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(frame_decoder client_frame server_frame openers address vault_log keystore route_header)
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  fuzz=(cargo +nightly fuzz)
else
  echo "note: no nightly toolchain; using stable with RUSTC_BOOTSTRAP=1" >&2
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
fi
"${fuzz[@]}" build -s none
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "== $t: ${secs}s"
  "${fuzz[@]}" run -s none "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=2048 -timeout=10 2>&1 |
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE|==[0-9]+== ERROR|SUMMARY|thread .* panicked|.*Test unit written)' || true
  if compgen -G "artifacts/$t/*" >/dev/null; then
    echo "error: $t found a failing input: fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
