#!/usr/bin/env bash
# Set up (idempotent) and run the tests. Extra arguments go to pytest, e.g. `-m slow`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
.venv/bin/ruff check nailseg tests bench app.py
.venv/bin/ruff format --check nailseg tests bench app.py
exec .venv/bin/python -m pytest "$@"
