#!/usr/bin/env bash
# Installs whatever the project needs and is missing; safe to run again.
#   bash scripts/setup.sh          tools to build and run the worker
#   bash scripts/setup.sh --test   the same, plus Chromium and coturn (browser and TURN tests) and actionlint
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

command -v cargo >/dev/null || { echo "cargo not found: install Rust with rustup first (https://rustup.rs)" >&2; exit 1; }
command -v node >/dev/null || { echo "node not found: install Node.js 20 or newer first" >&2; exit 1; }
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || { echo "Node.js $node_major is too old: wrangler needs 20 or newer" >&2; exit 1; }

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  say "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi
for component in clippy rustfmt; do
  if ! rustup component list --installed | grep -q "^$component"; then
    say "adding $component"
    rustup component add "$component"
  fi
done

if ! worker-build --version 2>/dev/null | grep -q '^0\.8\.'; then
  say "installing worker-build 0.8"
  cargo install worker-build --version '^0.8'
fi

# wasm-bindgen-cli must be exactly the wasm-bindgen version in Cargo.lock.
bindgen_version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $bindgen_version" ]; then
  say "installing wasm-bindgen-cli $bindgen_version"
  cargo install wasm-bindgen-cli --version "=$bindgen_version"
fi

if [ ! -x node_modules/.bin/wrangler ] || ! npm ls --depth=0 >/dev/null 2>&1; then
  say "installing npm packages (wrangler, miniflare, binaryen, esbuild, playwright-core, p2pcf)"
  npm ci --no-audit --no-fund
fi

[ "${1:-}" = "--test" ] || exit 0

# The browser tests use $CHROMIUM_PATH, by default Debian's /usr/bin/chromium,
# the TURN tests Debian's coturn, and the Trystero side-by-side Debian's
# mosquitto (both started and stopped by the tests, on 127.0.0.1).
packages=()
[ -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ] || packages+=(chromium)
command -v turnserver >/dev/null || packages+=(coturn)
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null || packages+=(mosquitto)
if [ ${#packages[@]} -gt 0 ]; then
  say "installing Debian's ${packages[*]}"
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "${packages[@]}"
fi

# actionlint, in a virtualenv of the project's own (.tools/py).
if [ ! -x .tools/py/bin/actionlint ]; then
  say "installing actionlint (tools/requirements-lint.txt)"
  python3 -m venv .tools/py
  .tools/py/bin/pip install --quiet --require-hashes -r tools/requirements-lint.txt
fi
