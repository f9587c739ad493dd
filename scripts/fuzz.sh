#!/usr/bin/env bash
# Coverage-guided fuzzing of huddle_protocol's decoders and state machines (fuzz/): libFuzzer
# through libfuzzer-sys, on the stable toolchain (sanitizer coverage only, no AddressSanitizer:
# the code under test is safe Rust, what is hunted is panics, overflows and broken invariants).
#   scripts/fuzz.sh                 every target for 60 s
#   HUDDLE_FUZZ_PROFILE=ci scripts/fuzz.sh 3   every target for 3 s (what CI runs)
#   scripts/fuzz.sh 0 1000000 chunk 1,000,000 inputs of one target
# HUDDLE_FUZZ_PROFILE=ci builds quicker (opt-level 1; what CI uses for its brief runs).
# Corpora grow in fuzz/corpus/TARGET (not committed); a crash is saved in fuzz/artifacts/TARGET and
# fails the script. The runs of each target are printed (libFuzzer's "Done N runs").
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-60}"
runs="${2:-0}"
shift $(( $# > 2 ? 2 : $# ))
targets=("$@")
if (( ${#targets[@]} == 0 )); then
  mapfile -t targets < <(sed -n 's/^name = "\(.*\)"/\1/p' Cargo.toml | grep -v '^huddle_fuzz$')
fi
export CARGO_TARGET_DIR="${HUDDLE_FUZZ_TARGET:-${CARGO_TARGET_DIR:-target}/fuzz}"
# What cargo-fuzz passes for `--sanitizer none`: sanitizer-coverage counters and comparison
# tracing for libFuzzer, and cfg(fuzzing).
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cforce-frame-pointers"
# With an explicit --target the flags reach only the fuzzed code, not build scripts and proc macros.
host="$(rustc -vV | sed -n 's/^host: //p')"
profile="${HUDDLE_FUZZ_PROFILE:-release}"
cargo build --profile "$profile" --locked --bins --target "$host"
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  args=(-artifact_prefix="artifacts/$t/" -print_final_stats=1 -rss_limit_mb=2048)
  (( seconds > 0 )) && args+=(-max_total_time="$seconds")
  (( runs > 0 )) && args+=(-runs="$runs")
  printf '=== fuzz %s\n' "$t"
  "$CARGO_TARGET_DIR/$host/$profile/$t" "${args[@]}" "corpus/$t" 2>&1 | grep -E "^Done|stat::number_of_executed_units|panicked|ERROR|SUMMARY" || true
  if compgen -G "artifacts/$t/*" >/dev/null; then
    echo "fuzz $t: crash saved in fuzz/artifacts/$t" >&2
    exit 1
  fi
done
