#!/usr/bin/env bash
# Builds the worker (build/index.js + wasm) with worker-build, pointing it at
# local tools so that nothing is downloaded, and the static assets
# (build/assets: the status page's self-test with the stock p2pcf client).
# Run from the project root; wrangler runs it as the [build] command.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
WASM_BINDGEN_BIN="$(command -v wasm-bindgen)"
export WASM_BINDGEN_BIN
export WASM_OPT_BIN="$PWD/node_modules/.bin/wasm-opt"
export ESBUILD_BIN="$PWD/node_modules/.bin/esbuild"
worker-build --release "$@"
# worker-build keeps the wasm names section (function names for stack
# traces, ~30 KB gzip). The worker is built not to panic, so it goes, unless
# KEEP_WASM_NAMES=1 asks for readable traces while debugging. Without the
# names, a second pass of `-Oz` finds ~2 KB gzip more (5 s). The features
# are worker-build's own list, so no encoding workerd lacks is emitted.
# `--low-memory-unused` (~1.3 KB gzip) lets it fold constant offsets into
# loads and stores: it assumes no access reaches the first 1 KiB by a
# pointer sum that wraps past 4 GiB, which Rust's pointers never do. A
# second `-Oz` after that finds ~0.6 KB more (3 s), and binaryen's whole-
# program flow analysis (`--gufa`) first ~0.5 KB more (2 s).
if [ "${KEEP_WASM_NAMES:-0}" != 1 ]; then
  features=()
  for feature in mutable-globals sign-ext nontrapping-float-to-int bulk-memory multivalue \
    reference-types exception-handling; do
    features+=("--enable-$feature")
  done
  "$WASM_OPT_BIN" --gufa -Oz -Oz --low-memory-unused "${features[@]}" --strip-debug build/index_bg.wasm -o build/index_bg.wasm
fi

# The self-test (self-test/self-test.js) with the stock p2pcf client from
# node_modules, unchanged, in one ES module served as a static asset.
rm -rf build/assets
"$ESBUILD_BIN" self-test/self-test.js --bundle --format=esm --minify --define:global=window \
  --legal-comments=eof --log-level=warning --outfile=build/assets/self-test.js
