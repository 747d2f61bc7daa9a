#!/usr/bin/env bash
# All of coil's tests, after scripts/setup.sh and scripts/build.sh (`npm test` runs all three):
#   1. Rust: coil-core unit, property and fuzz tests (cargo test)
#   2. aarch64: coil-core's kernel tests cross-built for ARM64 and run under qemu, on a CPU with and
#      one without the dotprod extension (scripts/test-aarch64.sh: NEON paths against the scalar one)
#   3. JS: the vitest suites, every case on the native and the wasm engine (Node)
#   4. Browser: headless Chromium, the web entry in a page and in a worker (comlink)
#   5. Runtimes: Bun and Deno smoke tests through the native addon
# Every stage runs even if an earlier one failed; the last line sums them up.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$PATH"
passed=0
failed=0
failures=()
stage() {
  local name=$1
  shift
  printf '\n==== %s ====\n' "$name"
  if "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    failures+=("$name")
  fi
}
stage "rust (cargo test)" cargo test --release -p coil-core
stage "aarch64 (kernel tests under qemu: neon, neon-dotprod)" bash scripts/test-aarch64.sh
stage "js (vitest: native and wasm)" vitest run
stage "browser (chromium)" node tests/browser/run.mjs
stage "runtimes (bun, deno)" bash tests/runtimes/run.sh
printf '\n'
[ ${#failures[@]} -gt 0 ] && printf 'failed stages: %s\n' "${failures[*]}"
echo "test stages: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
