#!/usr/bin/env bash
# Installs everything coil's build and tests need on a fresh Debian (bookworm) machine of the
# project's kind, idempotently: every step checks first and skips what is already there, so a
# second run takes seconds. Called by `npm run setup` (and so by `npm test` and `npm run demo`).
#
# What and why (see docs/toolchain.md):
#  - Debian's rustc-web/cargo-web (1.96) with its std source: the only route to a wasm32 std here,
#    since rustup cannot download targets. We build the wasm32 std once from that source and drop the
#    rlibs into Debian rustc's sysroot so wasm-pack sees the target as installed.
#  - lld (wasm-ld) and chromium (browser tests). wasm-opt comes from npm `binaryen`: Debian's (108) is
#    too old for the reference-types tables wasm-bindgen emits and breaks the module.
#  - wasm-bindgen-cli at exactly the version of the wasm-bindgen crate in Cargo.lock, and wasm-pack,
#    both built from crates.io (their npm packages download binaries from elsewhere and fail here).
#  - npm dependencies (napi CLI, vitest, playwright-core, bun, deno, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[setup] %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

# ---- Debian packages -------------------------------------------------------------------------
. scripts/apt-ensure.sh
apt_ensure rustc-web cargo-web rust-web-src lld chromium

DEB_RUSTC=/usr/bin/rustc
DEB_CARGO=/usr/bin/cargo
SYSROOT=$($DEB_RUSTC --print sysroot)
WASM_LIBDIR="$SYSROOT/lib/rustlib/wasm32-unknown-unknown/lib"

# ---- wasm32 std, built from Debian's rust source ---------------------------------------------
if ! ls "$WASM_LIBDIR"/libstd-*.rlib >/dev/null 2>&1; then
  log "building the wasm32-unknown-unknown std from $SYSROOT/src (about a minute)"
  tmp=$(mktemp -d)
  mkdir -p "$tmp/src"
  cat > "$tmp/Cargo.toml" <<'TOML'
[package]
name = "coil-std-probe"
version = "0.0.0"
edition = "2021"
[lib]
crate-type = ["cdylib"]
path = "src/lib.rs"
[profile.release]
panic = "abort"
TOML
  echo '#[no_mangle] pub extern "C" fn probe(a: i32) -> i32 { a + 1 }' > "$tmp/src/lib.rs"
  # rust-web-src ships the std source under /usr/src/rustc-<ver>/library; build-std looks for it in
  # the sysroot, so point it there if Debian did not.
  src_lib=$(ls -d /usr/src/rustc-*/library 2>/dev/null | sort -V | tail -n1)
  if [ ! -e "$SYSROOT/lib/rustlib/src/rust/library" ] && [ -n "$src_lib" ]; then
    $SUDO mkdir -p "$SYSROOT/lib/rustlib/src/rust"
    $SUDO ln -sfn "$src_lib" "$SYSROOT/lib/rustlib/src/rust/library"
  fi
  ( cd "$tmp" && RUSTC=$DEB_RUSTC RUSTC_BOOTSTRAP=1 \
      RUSTFLAGS="-C target-feature=+simd128 -C linker=wasm-ld" \
      CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}" \
      $DEB_CARGO build --offline --release --target wasm32-unknown-unknown \
        -Zbuild-std=std,panic_abort -q 2>"$tmp/err" || \
    ( RUSTC=$DEB_RUSTC RUSTC_BOOTSTRAP=1 RUSTFLAGS="-C target-feature=+simd128 -C linker=wasm-ld" \
      $DEB_CARGO build --release --target wasm32-unknown-unknown -Zbuild-std=std,panic_abort -q ) )
  $SUDO mkdir -p "$WASM_LIBDIR"
  for f in "$tmp"/target/wasm32-unknown-unknown/release/deps/lib*.rlib; do
    case "$(basename "$f")" in libcoil_std_probe*) continue;; esac
    $SUDO cp "$f" "$WASM_LIBDIR/"
  done
  rm -rf "$tmp"
  log "wasm32 std installed into $WASM_LIBDIR"
else
  log "wasm32 std present"
fi

# ---- wasm-bindgen-cli (exact crate version) and wasm-pack ------------------------------------
WB_VERSION=$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/version = |"/,""); print; exit}' Cargo.lock)
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
if [ "$("$CARGO_BIN/wasm-bindgen" --version 2>/dev/null | awk '{print $2}')" != "$WB_VERSION" ]; then
  log "cargo install wasm-bindgen-cli $WB_VERSION (a few minutes, once)"
  # --locked can fail when a pinned transitive crate was yanked; then take the newest compatible.
  cargo install -q wasm-bindgen-cli --version "$WB_VERSION" --locked --force || \
    cargo install -q wasm-bindgen-cli --version "$WB_VERSION" --force
else
  log "wasm-bindgen-cli $WB_VERSION present"
fi
if ! "$CARGO_BIN/wasm-pack" --version >/dev/null 2>&1; then
  log "cargo install wasm-pack (a few minutes, once)"
  cargo install -q wasm-pack --locked || cargo install -q wasm-pack
else
  log "wasm-pack present"
fi

# ---- npm dependencies --------------------------------------------------------------------------
# `npm install` (not `npm ci`): with this lock file npm 11's ci refuses the platform-specific
# optional packages of @napi-rs/cli's dependencies that npm itself left out of the lock (an npm bug);
# install keeps to the locked versions and leaves the lock unchanged.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "npm install (locked versions)"
  npm install --no-audit --no-fund --loglevel=error
else
  log "node_modules up to date"
fi
log "done"
