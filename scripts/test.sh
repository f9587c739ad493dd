#!/usr/bin/env bash
# The whole test suite. Builds first (the registry is not reachable from inside the namespace), then
# runs the tests inside a private network namespace that has only loopback: WebRTC tests must never
# touch the machine's external interfaces, and webrtc-rs joins the mDNS multicast group, which needs
# a multicast route (pointed at loopback, so nothing leaves the namespace).
#
#   scripts/test.sh [CARGO TEST ARGS]            everything (or what the arguments select)
#   scripts/test.sh --native [CARGO TEST ARGS]   without the browser: no wasm pages, npm or Chromium
#
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p huddle_tests --test server_rooms`).
# The browser tests need the examples' wasm pages (built here by scripts/web.sh), playwright-core
# (npm ci here) and Debian's Chromium (`apt-get install chromium`; .ci/run installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
native=false
if [[ "${1:-}" == "--native" ]]; then
  native=true
  shift
fi
in_namespace() {
  unshare -rn sh -c 'ip link set lo up && ip route add 224.0.0.0/4 dev lo && exec "$@"' sh "$@"
}
if $native; then
  # The browser test binary needs the `browser` feature of huddle_tests: left off, it is not built.
  cargo test --workspace --locked --no-run "$@"
  in_namespace cargo test --workspace --locked --offline --no-fail-fast "$@"
  exit
fi
command -v chromium >/dev/null || echo "warning: chromium is missing (apt-get install chromium): the browser tests will fail" >&2
[[ -d tests/browser/node_modules/playwright-core ]] || npm ci --prefix tests/browser --no-audit --no-fund
scripts/web.sh build
HUDDLE_WEB_DIR="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/web"
export HUDDLE_WEB_DIR
cargo test --workspace --features huddle_tests/browser --locked --no-run "$@"
in_namespace cargo test --workspace --features huddle_tests/browser --locked --offline --no-fail-fast "$@"
