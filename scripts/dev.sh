#!/usr/bin/env bash
# Runs the worker locally on http://127.0.0.1:8787 with a simulated R2 bucket
# (kept in .wrangler/state). Installs what is missing first.
# PORT / INSPECTOR_PORT choose other ports; extra arguments go to `wrangler dev`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
export CI=true WRANGLER_SEND_METRICS=false WRANGLER_HIDE_BANNER=true CLOUDFLARE_CF_FETCH_ENABLED=false
exec npx wrangler dev --ip 127.0.0.1 --port "${PORT:-8787}" --inspector-port "${INSPECTOR_PORT:-9229}" \
  --show-interactive-dev-session=false "$@"
