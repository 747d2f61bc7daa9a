#!/usr/bin/env bash
# coil-core's kernel tests built for aarch64 (ARM64 Linux) and run under user-mode qemu, on two
# emulated CPUs so that both NEON matrix-product paths are exercised against the scalar reference:
#   - `-cpu max`        has dotprod: paths scalar, neon, neon-dotprod
#   - `-cpu cortex-a57` (Armv8.0) has no dotprod: paths scalar, neon (the run-time fallback)
# COIL_EXPECT_MATMUL_PATHS makes the tests fail if a path is missing instead of silently skipping it.
# Called by scripts/test.sh (`npm test`); takes a few minutes the first time (std for aarch64 is built
# from source), well under a minute when nothing changed.
#
# How (see docs/toolchain.md): rustup cannot download targets here, so the aarch64 std is built from
# Debian's rust-web-src with `-Zbuild-std` (RUSTC_BOOTSTRAP=1, Debian's rustc-web/cargo-web 1.96, the
# same route as the wasm32 std in scripts/setup.sh), linked with Debian's gcc-aarch64-linux-gnu and
# run with qemu-user (called directly: binfmt may not be registered in containers). Only the kernel
# test targets are built (the lib's unit tests, kernels_matmul, kernels_threads, kernels_bounds,
# model_kernels): every test binary would take far longer to build than to run.
# Installs what it needs idempotently (apt, checked with dpkg first). Extra arguments go to the test
# binaries (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[test-aarch64] %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

. scripts/apt-ensure.sh
apt_ensure rustc-web cargo-web rust-web-src gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user

DEB_RUSTC=/usr/bin/rustc
DEB_CARGO=/usr/bin/cargo
SYSROOT=$($DEB_RUSTC --print sysroot)
# build-std looks for the std source in the sysroot (scripts/setup.sh links it there too).
src_lib=$(ls -d /usr/src/rustc-*/library 2>/dev/null | sort -V | tail -n1)
if [ ! -e "$SYSROOT/lib/rustlib/src/rust/library" ] && [ -n "$src_lib" ]; then
  $SUDO mkdir -p "$SYSROOT/lib/rustlib/src/rust"
  $SUDO ln -sfn "$src_lib" "$SYSROOT/lib/rustlib/src/rust/library"
fi

export RUSTC=$DEB_RUSTC RUSTC_BOOTSTRAP=1
# A target directory of its own: the native and wasm builds stay valid.
export CARGO_TARGET_DIR="$PWD/target/aarch64"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
QEMU="qemu-aarch64 -L /usr/aarch64-linux-gnu"
ARGS=(test --release -p coil-core --target aarch64-unknown-linux-gnu -Zbuild-std
  --no-fail-fast --lib --test kernels_matmul --test kernels_threads --test kernels_bounds --test model_kernels)

start=$SECONDS
log "building the kernel tests for aarch64-unknown-linux-gnu (into $CARGO_TARGET_DIR)"
$DEB_CARGO "${ARGS[@]}" --no-run -q
log "built in $((SECONDS - start)) s"

status=0
for cpu_paths in "max:scalar,neon,neon-dotprod" "cortex-a57:scalar,neon"; do
  cpu=${cpu_paths%%:*}
  paths=${cpu_paths#*:}
  log "qemu -cpu $cpu (matmul paths: $paths)"
  if ! CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="$QEMU -cpu $cpu" COIL_EXPECT_MATMUL_PATHS="$paths" \
    $DEB_CARGO "${ARGS[@]}" -q -- "$@"; then
    status=1
  fi
done
log "done in $((SECONDS - start)) s"
exit $status
