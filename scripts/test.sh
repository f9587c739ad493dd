#!/usr/bin/env bash
# The whole test suite. Builds first (the registry is not reachable from inside the namespace), then
# runs the tests inside a private network namespace that has only loopback: WebRTC tests must never
# touch the machine's external interfaces, and webrtc-rs joins the mDNS multicast group, which needs
# a multicast route (pointed at loopback, so nothing leaves the namespace).
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p huddle_tests --test server_rooms`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked --no-run "$@"
exec unshare -rn sh -c 'ip link set lo up && ip route add 224.0.0.0/4 dev lo && exec cargo test --workspace --locked --offline --no-fail-fast "$@"' sh "$@"
