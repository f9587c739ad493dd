#!/usr/bin/env bash
# Installs wasm-bindgen-cli at the version of the wasm-bindgen crate in Cargo.lock (the two must
# match), unless that version is already on PATH. `--locked` is left out on purpose: one of the
# CLI's pinned dependencies is missing from the registry here (see ../shared/FACTS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [[ "$have" == "$want" ]]; then
  exit 0
fi
echo "installing wasm-bindgen-cli $want (found: ${have:-none})"
# --force: cargo may remember an install whose binary is gone.
cargo install --force wasm-bindgen-cli --version "$want"
