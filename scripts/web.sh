#!/usr/bin/env bash
# The examples in a browser.
#   scripts/web.sh build [--release]        build lobby + box_game (drawn in 2D) and box_webgl (the
#                                           box game drawn by Bevy's renderer, WebGL2) for wasm32
#                                           into target/web/
#   scripts/web.sh serve [--release] [PORT] build, then serve target/web/ on http://127.0.0.1:PORT
#                                           (default 8080): open /lobby.html or /box_game.html
# Pages take ?room=ws://HOST:PORT/ROOM (default ws://<page host>:3536/lobby or /boxes), bot=1,
# players=N, frames=N.
set -euo pipefail
cd "$(dirname "$0")/.."
cmd=${1:-serve}; shift || true
profile=debug; flags=()
if [[ "${1:-}" == "--release" ]]; then profile=release; flags=(--release); shift; fi
port=${1:-8080}

scripts/install-wasm-bindgen.sh
rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || true
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
out="$target_dir/web"
mkdir -p "$out"
cargo build "${flags[@]}" --locked -p huddle_examples --target wasm32-unknown-unknown --features webgl \
  --bin lobby --bin box_game --bin box_webgl
for ex in lobby box_game box_webgl; do
  wasm-bindgen --target web --no-typescript --out-dir "$out" "$target_dir/wasm32-unknown-unknown/$profile/$ex.wasm"
  cp "examples/web/$ex.html" "$out/$ex.html"
done
echo "built: $out/{lobby,box_game,box_webgl}.html"
if [[ "$cmd" == "serve" ]]; then
  echo "serving http://127.0.0.1:$port/lobby.html, /box_game.html and /box_webgl.html (Ctrl-C stops)"
  exec python3 -m http.server --bind 127.0.0.1 --directory "$out" "$port"
fi
