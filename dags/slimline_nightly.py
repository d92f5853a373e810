"""slimline_nightly: the compression line every night, one task per dvc.yaml stage.

    setup_workspace -> prepare -> prune -> decompose -> distill -> quantize -> evaluate -> publish

Wiring only: the tasks come from dvc.yaml (add a stage there and it gets a task), the work is in
slimline.nightly. Run-time overrides go under "overrides" in dag_run.conf, its only key; whoever
triggers is not trusted, so they may set technique knobs only (slimline/nightly/overrides.py),
checked before the run is created (slimline/nightly/policy.py) and again before any work:

    airflow dags trigger slimline_nightly --conf '{"overrides": {"prune.keep_ratio": 0.6}}'

Settings (schedule, retries, timeouts, runner, storage) are environment variables, documented in
slimline/nightly/config.py and docs/orchestration.md.
"""
from __future__ import annotations

from datetime import timedelta
from functools import partial
from pathlib import Path

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, Param

from slimline.nightly import tasks
from slimline.nightly.config import NightlyConfig
from slimline.nightly.pipeline import final_stages, load_pipeline

PROJECT = Path(__file__).resolve().parents[1]
config = NightlyConfig.from_env(default_repo=PROJECT)
stages = load_pipeline(config.repo / "dvc.yaml")

with DAG(
    dag_id="slimline_nightly",
    description="Prune, decompose, distill, quantize, evaluate; publish when the gate passes",
    schedule=config.schedule,
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=24),
    default_args={
        "retries": config.retries,
        "retry_delay": config.retry_delay,
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(hours=1),
        "on_failure_callback": partial(tasks.record_failure, project=str(config.repo)),
    },
    # No schema: the project's checks refuse a bad key or a non-object in one line (a schema
    # here would refuse it first, printing the whole schema); the UI still shows a JSON field.
    params={"overrides": Param({}, description=(
        "params.yaml overrides for this run, nested or dotted: technique knobs (numbers, booleans, "
        'choices) and target, e.g. {"prune.keep_ratio": 0.6} or {"prepare": {"train": '
        '{"epochs": 2}}}; keys naming code, files or data sources are refused'))},
    tags=["slimline", "dvc"],
) as dag:
    project = {"project": str(config.repo)}
    setup = PythonOperator(task_id=tasks.SETUP_TASK, python_callable=tasks.setup_workspace,
                           op_kwargs=project, execution_timeout=timedelta(minutes=15))
    stage_tasks = {
        name: PythonOperator(task_id=name, python_callable=tasks.stage_task,
                             op_kwargs={**project, "stage": name},
                             execution_timeout=config.timeout_for(name))
        for name in stages
    }
    publish = PythonOperator(task_id="publish", python_callable=tasks.publish, op_kwargs=project,
                             execution_timeout=timedelta(minutes=30))

    for name, stage in stages.items():
        if stage.upstream:
            [stage_tasks[parent] for parent in stage.upstream] >> stage_tasks[name]
        else:
            setup >> stage_tasks[name]
    [stage_tasks[name] for name in final_stages(stages)] >> publish
