#!/usr/bin/env bash
# The test command (README, .ci/run): set up, lint, then run the whole suite on reduced
# configurations. Arguments go to pytest (e.g. `bash scripts/test.sh tests/unit`, the fast tier).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
