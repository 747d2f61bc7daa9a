#!/usr/bin/env bash
# Bun and Deno smoke tests (both from npm). Deno loads Node-API addons from a local node_modules
# with --allow-ffi.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=node_modules/.bin
status=0
"$bin/bun" tests/runtimes/smoke.mjs || status=1
DENO_NO_UPDATE_CHECK=1 "$bin/deno" run --quiet --node-modules-dir=manual --allow-read --allow-env --allow-ffi \
  tests/runtimes/smoke.mjs || status=1
exit $status
