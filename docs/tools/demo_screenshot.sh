#!/usr/bin/env bash
# docs/figures/demo.png: clipft-demo on a checkpoint, screenshotted with headless Chromium (Debian's
# `chromium` package, driven by docs/tools/screenshot.py). Usage: docs/tools/demo_screenshot.sh CKPT IMAGES_DIR EXAMPLE_IMAGE "QUERY" [OUT]
set -euo pipefail
ckpt=$1 images=$2 example=$3 query=$4 out=${5:-docs/figures/demo.png}
port=7861
GRADIO_ANALYTICS_ENABLED=False clipft-demo --ckpt "$ckpt" --images "$images" --example "$example" \
    --example-query "$query" --port "$port" > /tmp/clipft_demo.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 180); do curl -sf "http://127.0.0.1:$port/" > /dev/null && break; sleep 1; done
# the page classifies the example and answers the query on load; wait in real time, then capture
python "$(dirname "$0")/screenshot.py" "http://127.0.0.1:$port/" "$out" --wait "${WAIT:-25}"
