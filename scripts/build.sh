#!/usr/bin/env bash
# Builds the three artefacts the package is made of, incrementally:
#   bindings/  the native addon (napi-rs) and its generated loader and types
#   wasm-pkg/  the wasm engine (wasm-pack, wasm32 + simd128), the same module for browsers and Node
#   dist/      the TypeScript facade, CLI and worker entry
# Run scripts/setup.sh first (npm test and npm run demo do).
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[build] %s\n' "$*" >&2; }
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$PWD/node_modules/.bin:$PATH"

log "native addon (napi build --release)"
napi build --platform --release --esm -p coil-node --manifest-path crates/coil-node/Cargo.toml \
  --output-dir bindings --js index.js --dts index.d.ts >/dev/null

log "wasm engine (wasm-pack, +simd128)"
# Debian's rustc-web (which has the wasm32 std that setup.sh built) does the wasm build; its own
# target dir keeps it from invalidating the native build's artefacts.
PATH="$PWD/node_modules/.bin:/usr/bin:$CARGO_BIN:$PATH" \
RUSTFLAGS="-C target-feature=+simd128 -C linker=wasm-ld" \
CARGO_TARGET_DIR="$PWD/target/wasm" \
  "$CARGO_BIN/wasm-pack" --log-level warn build crates/coil-wasm --release --target web \
    --out-dir ../../wasm-pkg --out-name coil_wasm --no-pack -- --quiet
rm -f wasm-pkg/.gitignore

log "TypeScript (tsc)"
tsc -p tsconfig.json
chmod +x dist/cli.js
log "done"
