"""slimline_search: the budget-driven search for a target profile, on demand (no schedule).

    setup_workspace -> prepare -> search

`prepare` is the nightly's own stage task (pulled from the DVC remote when a night already built
it); `search` runs `python -m stages.search` in the run's workspace through the same runner as the
nightly stages. Trigger it with the target and its budget (the conf takes these params and
nothing else: a bare override key is refused before the run is created); the pick can be written
as a profile:

    airflow dags trigger slimline_search --conf '{"target": "phone", "minutes": 60,
                                                  "write_profile": "phone_searched"}'

The front (front.md, front.png, front.json) and the written profile stay in the run's workspace
(paths in the task's return value and log); commit the profile to profiles/ and run it nightly
with the override {"target": "phone_searched"}.
"""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, Param

from slimline.config.profiles import PROFILES_DIR, available_profiles
from slimline.nightly import tasks
from slimline.nightly.config import NightlyConfig

PROJECT = Path(__file__).resolve().parents[1]
config = NightlyConfig.from_env(default_repo=PROJECT)
# An unknown target is refused when the run is triggered, before any work.
targets = available_profiles(config.repo / PROFILES_DIR)

with DAG(
    dag_id="slimline_search",
    description="Search prune/decompose/distill/quantize recipes for a target's budgets",
    schedule=None,
    catchup=False,
    max_active_runs=1,
    default_args={"retries": config.retries, "retry_delay": config.retry_delay},
    params={
        "target": Param(
            "phone",
            type="string",
            enum=targets,
            description="profile whose budgets the pick must meet",
        ),
        "minutes": Param(30, type="number", exclusiveMinimum=0, description="wall-clock budget"),
        "max_trials": Param(
            20, type="integer", minimum=1, description="stop after this many trials"
        ),
        "write_profile": Param(
            None,
            type=["null", "string"],
            pattern="^[A-Za-z0-9][A-Za-z0-9_-]*$",
            description="write the pick as profiles/<name>.yaml",
        ),
        # No schema, as in slimline_nightly: the project's checks refuse in one line.
        "overrides": Param(
            {}, description="params.yaml overrides: technique knobs, as in slimline_nightly"
        ),
    },
    tags=["slimline", "search"],
) as dag:
    project = {"project": str(config.repo)}
    setup = PythonOperator(task_id=tasks.SETUP_TASK, python_callable=tasks.setup_workspace,
                           op_kwargs={**project, "for_search": True},
                           execution_timeout=timedelta(minutes=15))
    prepare = PythonOperator(task_id="prepare", python_callable=tasks.stage_task,
                             op_kwargs={**project, "stage": "prepare"},
                             execution_timeout=config.timeout_for("prepare"))
    search = PythonOperator(task_id="search", python_callable=tasks.search, op_kwargs=project,
                            execution_timeout=timedelta(hours=24))
    setup >> prepare >> search
