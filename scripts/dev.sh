#!/usr/bin/env bash
# Runs the worker locally: http://127.0.0.1:8787 with a simulated R2 bucket
# (kept in .wrangler/state). Installs what is missing first. Pass a port to
# use another one: bash scripts/dev.sh 8788
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
export CI=true WRANGLER_SEND_METRICS=false WRANGLER_HIDE_BANNER=true CLOUDFLARE_CF_FETCH_ENABLED=false
port="${1:-8787}"
exec npx wrangler dev --ip 127.0.0.1 --port "$port" --inspector-port "$((port + 1442))" \
  --show-interactive-dev-session=false
