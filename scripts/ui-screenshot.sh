#!/usr/bin/env bash
# ui-screenshot.sh - what a user sees: start a Prefect server on 127.0.0.1, run a small downsample
# against it, and save a headless-Chromium screenshot of that flow run's page (its logs and
# artifacts) so a person can look at the UI without a browser of their own.
#
# Usage: scripts/ui-screenshot.sh [OUT.png]   (default: ui-flow-run.png; needs .venv: make setup)
# Installs Debian's chromium if missing (root + apt).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$(realpath -m "${1:-ui-flow-run.png}")
PY=.venv/bin/python
[[ -x $PY ]] || { echo "run 'make setup' first" >&2; exit 1; }
if ! command -v chromium >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

WORK=$(mktemp -d)
PORT=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export PREFECT_HOME=$WORK/prefect PREFECT_SERVER_API_PORT=$PORT PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_API_URL=http://127.0.0.1:$PORT/api PREFECT_UI_API_URL=http://127.0.0.1:$PORT/api
$PY -m prefect server start --host 127.0.0.1 --port "$PORT" >"$WORK/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 120); do
    curl -sf "$PREFECT_API_URL/health" >/dev/null && break
    sleep 0.5
done

RUN_ID=$($PY - "$WORK" <<'PY'
import sys
import numpy as np, zarr
from bioimage_tasks.sample_data import smooth_image
from flows import downsample_flow
work = sys.argv[1]
image = smooth_image((128, 128, 128))
zarr.create_array(store=f"{work}/sample.zarr", name="raw", shape=image.shape, dtype="uint8", chunks=(32, 32, 32))[:] = image
state = downsample_flow(f"{work}/sample.zarr/raw", 2, f"{work}/sample.zarr/s1", order=1, anti_aliasing=True,
                        num_workers=2, block_shape=(16, 16, 16), return_state=True)
print(state.state_details.flow_run_id)
PY
)
RUN_ID=$(echo "$RUN_ID" | tail -n 1)
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$WORK/chrome" --hide-scrollbars \
    --window-size=1600,1300 --virtual-time-budget=15000 --screenshot="$OUT" \
    "http://127.0.0.1:$PORT/runs/flow-run/$RUN_ID" 2>"$WORK/chrome.log" || { cat "$WORK/chrome.log" >&2; exit 1; }
echo "flow run $RUN_ID: screenshot saved to $OUT"
