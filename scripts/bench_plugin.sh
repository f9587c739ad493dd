#!/usr/bin/env bash
# Plugin benchmark: bevy_huddle vs raw matchbox_socket vs raw UDP, same run, same machine.
# Builds first, then runs inside a network namespace with only loopback (like the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p huddle_bench --bin plugin_bench
exec unshare -rn sh -c 'ip link set lo up && ip route add 224.0.0.0/4 dev lo && exec target/release/plugin_bench'
