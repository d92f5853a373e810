#!/usr/bin/env bash
# Set up everything the line needs: a Python 3.11 virtualenv in .venv with the pinned
# dependencies of requirements.lock and this project. Idempotent: a second run is quick.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v uv >/dev/null 2>&1; then
    python3 -m pip install --quiet "uv==0.13.9"
fi

# torch 2.13.0+cpu comes from pip's configured find-links folder (a local wheel directory on
# these machines); uv does not read pip's config, so hand it the folder explicitly.
find_links=()
for folder in $(python3 -m pip config list 2>/dev/null | sed -n "s/^global.find-links='\(.*\)'$/\1/p"); do
    find_links+=(--find-links "$folder")
done

[ -x .venv/bin/python ] || uv venv --quiet --python 3.11 .venv
# --compile-bytecode: uv installs no .pyc by default, and where PYTHONDONTWRITEBYTECODE is set none
# is ever written, so every process compiled what it imports (torch: 3.8 s of CPU instead of
# 1.5 s; DVC: 0.7 s instead of 0.25 s) — and a night starts dozens of them.
uv pip install --quiet --python .venv/bin/python "${find_links[@]}" --compile-bytecode -r requirements.lock
uv pip install --quiet --python .venv/bin/python --no-deps -e .
echo "setup: .venv ready ($(.venv/bin/python --version), torch $(.venv/bin/python -c 'import torch; print(torch.__version__)'))"
