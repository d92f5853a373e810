#!/usr/bin/env bash
# The nightly under a real local Airflow deployment:
#
#   bash scripts/airflow.sh up        start it (only what is not running): PostgreSQL, Redis,
#                                     SeaweedFS, the scheduler, dag-processor, api-server (the UI
#                                     on 127.0.0.1) and two Celery workers; prints the UI address
#   bash scripts/airflow.sh status    each process, its pid, and Airflow's health
#   bash scripts/airflow.sh down      stop everything `up` started, by pid and session
#   bash scripts/airflow.sh cli ...   an airflow command against it, e.g.
#                                     cli dags trigger slimline_nightly --conf '{"overrides": {...}}'
#
# State, logs and the owner-only credentials live in .nightly/deployment (SLIMLINE_AIRFLOW_DIR);
# ports and knobs: slimline/nightly/deployment/settings.py and docs/orchestration.md.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = up ]; then
    # Debian's PostgreSQL and Redis; the deployment runs private instances of them, so no system
    # service is needed (and none is started here).
    packages=(postgresql redis-server)
    if ! dpkg -s "${packages[@]}" >/dev/null 2>&1; then
        if [ "$(id -u)" != 0 ]; then
            echo "deployment: error: install ${packages[*]} first (sudo apt-get install -y ${packages[*]})" >&2
            exit 2
        fi
        echo "deployment: installing ${packages[*]} (apt)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq "${packages[@]}" >/dev/null 2>&1 \
            || { apt-get update -qq && apt-get install -y -qq "${packages[@]}" >/dev/null; }
    fi
    bash scripts/setup.sh
fi
[ -x .venv/bin/python ] || { echo "deployment: error: no .venv yet: bash scripts/airflow.sh up" >&2; exit 2; }
exec .venv/bin/python -m slimline.nightly.deployment "$@"
