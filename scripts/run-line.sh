#!/usr/bin/env bash
# The main job on the embedded default: set up, then run the whole DVC pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
dvc repro
echo
echo "report:  $PWD/reports/report.md (plots in reports/)"
echo "logs:    $PWD/logs/<stage>.log"
echo "model:   $PWD/models/quantized/model.onnx"
echo "compare: dvc metrics diff / dvc plots diff"
