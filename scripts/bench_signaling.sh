#!/usr/bin/env bash
# Signaling benchmark: huddle_server vs stock matchbox_server 0.15, same run, same machine.
# Installs the stock server with `cargo install` (into target/bench-tools) when it is missing.
# Arguments go to the bench binary (e.g. `--peers 1000 --runs 1`); see `--help`.
set -euo pipefail
cd "$(dirname "$0")/.."
tools="${HUDDLE_BENCH_TOOLS:-$PWD/target/bench-tools}"
if [ ! -x "$tools/bin/matchbox_server" ]; then
  cargo install matchbox_server --version 0.15.0 --root "$tools"
fi
cargo build --release --locked -p huddle_server -p huddle_bench
# 10k peers need 10k sockets in each process.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec target/release/signaling_bench --huddle target/release/huddle_server \
  --stock "$tools/bin/matchbox_server" "$@"
