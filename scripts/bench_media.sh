#!/usr/bin/env bash
# Media benchmark: mouth-to-ear latency, media connection time, codec CPU, game round trips while
# media runs, each next to its anchor from the same run. Builds first, then runs inside a network
# namespace with only loopback (like the tests). `HUDDLE_BENCH_ONLY=latency` runs one section.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p huddle_bench --bin media_bench
target="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
exec unshare -rn sh -c 'ip link set lo up && ip route add 224.0.0.0/4 dev lo && exec "$0"' "$target/release/media_bench"
