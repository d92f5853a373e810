#!/usr/bin/env bash
# The test command (README, .ci/run): set up, then run the whole suite on reduced configurations.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
