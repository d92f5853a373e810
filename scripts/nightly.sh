#!/usr/bin/env bash
# The main command: run the nightly DAG once, end to end, on the embedded default.
#
#   bash scripts/nightly.sh ['{"prune.keep_ratio": 0.6}']     (optional params overrides, JSON:
#                                                             technique knobs and target only)
#
# Sets up .venv, starts SeaweedFS on 127.0.0.1 (credentials required; skipped when SLIMLINE_S3_BUCKET
# points at another S3 endpoint), prepares Airflow's SQLite database, runs the DAG with
# `airflow dags test`, and prints where the report, the stage logs and the published model are (or,
# when the night failed, which task failed and its one-line error), and whether SeaweedFS is still
# running. The night builds the committed HEAD; uncommitted changes are not part of it.
# The same DAG under a real scheduler, with the UI and Celery workers: bash scripts/airflow.sh up.
set -euo pipefail
cd "$(dirname "$0")/.."
overrides="${1:-"{}"}"

bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
# Whoever triggers may only set technique knobs: a refused override is one line and exit 2, before
# anything starts (the DAG's setup_workspace checks it again).
python -m slimline.nightly.trigger "$overrides" || exit 2
state="${SLIMLINE_STATE_DIR:-$PWD/.nightly}"
mkdir -p "$state"

embedded_storage=0
if [ -z "${SLIMLINE_S3_BUCKET:-}" ]; then
    embedded_storage=1
    python -m slimline.nightly.seaweed start --dir "$state/seaweedfs" --port "${SLIMLINE_S3_PORT:-8333}"
    set -a; . "$state/seaweedfs/credentials.env"; set +a
fi
python -m slimline.nightly.storage check

export AIRFLOW_HOME="${AIRFLOW_HOME:-$state/airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="$PWD/dags" AIRFLOW__CORE__LOAD_EXAMPLES=False
echo "airflow: preparing the database in $AIRFLOW_HOME"
airflow db migrate >"$state/airflow-db-migrate.log" 2>&1 \
    || { tail -20 "$state/airflow-db-migrate.log"; exit 1; }

if ! git diff --quiet HEAD -- 2>/dev/null; then
    echo "note: the working tree has uncommitted changes; tonight builds HEAD $(git rev-parse --short HEAD)"
fi
echo "airflow: running slimline_nightly once; output also in $state/last-run.log"
started=$(date +%s)
status=0
airflow dags test slimline_nightly --conf "{\"overrides\": $overrides}" 2>&1 \
    | tee "$state/last-run.log" || status=$?

echo
if [ "$embedded_storage" = 1 ]; then
    if python -m slimline.nightly.seaweed status --dir "$state/seaweedfs"; then
        # Left running on purpose: the night's model can be pulled from it (docs/orchestration.md).
        echo "seaweedfs: still running; stop it with:" \
             ".venv/bin/python -m slimline.nightly.seaweed stop --dir $state/seaweedfs"
    fi
else
    echo "storage: $SLIMLINE_S3_BUCKET at ${SLIMLINE_S3_ENDPOINT:-AWS S3} (not started here)"
fi
# Last: where the night's results are, or the task that failed and its one-line error.
python -m slimline.nightly.summary --state-dir "$state" --latest --since "$started" \
    --output "$state/last-run.log" || status=1
exit "$status"
