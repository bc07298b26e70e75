#!/usr/bin/env bash
# Refresh docs/screenshots/*.png from the running app (the browser tests take them; the normal
# test run writes them to a temporary folder instead, so that it leaves the checkout clean).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
NAILSEG_SCREENSHOTS="$PWD/docs/screenshots" exec .venv/bin/python -m pytest tests/test_app_browser.py -q "$@"
