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

log "threaded wasm engine (wasm-pack, +simd128 +atomics, std rebuilt with atomics)"
# The same crate again, for shared memory: atomics need a std built with them (build-std from the
# source setup.sh installed; nightly flags through RUSTC_BOOTSTRAP on Debian's stable rustc), and
# wasm-bindgen's thread support needs the memory imported and shared and the TLS symbols exported.
# 4 GiB is wasm32's whole address space: shared memories reserve their maximum up front (virtual
# memory only). Loaded where SharedArrayBuffer works (ts/core/wasm-threads.ts), else the module above.
# --no-opt: binaryen's wasm-opt (version 132, -O3) broke the pool's wake-up here (parked workers were
# never woken again, so every job ran on the caller; tests/wasm-threads.test.ts catches that).
MT_LINK="--shared-memory --import-memory --max-memory=4294967296 --export=__wasm_init_tls --export=__tls_size --export=__tls_align --export=__tls_base"
PATH="$PWD/node_modules/.bin:/usr/bin:$CARGO_BIN:$PATH" \
RUSTC_BOOTSTRAP=1 \
RUSTFLAGS="-C target-feature=+simd128,+atomics,+bulk-memory,+mutable-globals -C linker=wasm-ld $(printf -- '-C link-arg=%s ' $MT_LINK)" \
CARGO_TARGET_DIR="$PWD/target/wasm-mt" \
  "$CARGO_BIN/wasm-pack" --log-level warn build crates/coil-wasm --release --target web \
    --out-dir ../../wasm-pkg/mt --out-name coil_wasm_mt --no-pack --no-opt -- --quiet -Zbuild-std=std,panic_abort \
    2> >(grep -v -e "unstable feature specified for \`-Ctarget-feature\`: \`atomics\`" \
          -e "this feature is not stably supported" -e '^ *|$' -e '^$' >&2)
rm -f wasm-pkg/mt/.gitignore

log "TypeScript (tsc)"
tsc -p tsconfig.json
chmod +x dist/cli.js
log "done"
