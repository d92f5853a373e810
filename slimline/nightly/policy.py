"""The Airflow cluster policy that checks a run's conf before the run exists.

Airflow validates a trigger's conf only against the DAG's Params, one param at a time: a key that
is no param passes, and a schema's refusal prints the whole schema (40 KB for the overrides). So
the overrides Param is a plain object and this policy runs the project's own checks
(slimline/nightly/trigger.py) inside the transaction that creates the run, for the REST API, the
UI, `airflow dags trigger` and `airflow dags test` alike. A refusal is Airflow's
ParamValidationError with one line: the REST API answers 400 with it, the CLI exits non-zero, and
no run is left behind.

Airflow calls a task_instance_mutation_hook only from airflow_local_settings.py (an `airflow.policy`
entry point is registered but never called when the run's task instances are created), so
`install(AIRFLOW_HOME)` writes that file; `bash scripts/airflow.sh up` does it for its deployment,
elsewhere run `python -m slimline.nightly.policy "$AIRFLOW_HOME"` once.

Airflow stores the run before it creates its task instances, and PostgreSQL refuses NaN and
Infinity in a JSON column (the REST API answered 422 "Value rejected by database"): importing this
module also installs a check of every new run's conf for them, just before it is stored.
"""
from __future__ import annotations

import sys
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.orm import Session

from slimline.errors import SlimlineError

# Airflow imports this module while it initialises, in every process it starts: the checks'
# own imports wait until a run is created.
TAG = "slimline"  # the DAGs whose conf is checked
LOCAL_SETTINGS = "from slimline.nightly.policy import task_instance_mutation_hook  # noqa: F401\n"


def task_instance_mutation_hook(task_instance, dag_run) -> None:
    """Check a slimline DAG's conf once per run: when its setup task's instance is created (a run
    that already exists is never refused later, e.g. when the scheduler re-checks its tasks)."""
    from sqlalchemy import inspect

    from slimline.nightly.tasks import SETUP_TASK

    if (dag_run is None or task_instance.task_id != SETUP_TASK
            or inspect(task_instance).persistent):
        return
    dag = dag_run.get_dag()
    if TAG not in (dag.tags or ()):
        return
    try:
        check_run_conf(dag_run.conf or {}, list(dag.params), Path(dag.fileloc).resolve().parents[1])
    except SlimlineError as exc:
        from airflow.exceptions import ParamValidationError

        raise ParamValidationError(str(exc)) from None


def check_run_conf(conf: dict, accepted: list[str], project: Path) -> None:
    """The conf's keys against the DAG's params, its overrides against the revision a run of
    `project` would build now (setup_workspace checks them again at the run's own revision)."""
    from slimline.nightly.bounds import check_bound
    from slimline.nightly.config import NightlyConfig
    from slimline.nightly.overrides import SOURCE
    from slimline.nightly.trigger import check_conf_keys, params_with_overrides
    from slimline.nightly.workspace import resolve_revision

    check_conf_keys(conf, accepted)
    for key, value in conf.items():
        if key != "overrides":  # the search DAG's own: minutes, max_trials
            check_bound(SOURCE, key, value)
    if "overrides" in conf:
        config = NightlyConfig.from_env(default_repo=project)
        params_with_overrides(config.repo, resolve_revision(config.repo, config.source_ref),
                              conf["overrides"])


def refuse_non_finite_confs(session, flush_context, instances) -> None:
    """Before a new run is stored: one line for NaN or Infinity in its conf, not the database's
    error (for every DAG: PostgreSQL could not store it for any)."""
    for instance in session.new:
        if type(instance).__name__ == "DagRun" and instance.conf:
            from slimline.nightly.overrides import finite_numbers

            try:
                finite_numbers(instance.conf)
            except SlimlineError as exc:
                from airflow.exceptions import ParamValidationError

                raise ParamValidationError(str(exc)) from None


event.listen(Session, "before_flush", refuse_non_finite_confs)


def install(airflow_home: Path) -> Path:
    """Write AIRFLOW_HOME/config/airflow_local_settings.py, which installs the policy; one that
    exists already is never overwritten (it may hold the deployment's own policies)."""
    path = airflow_home / "config" / "airflow_local_settings.py"
    if path.is_file():
        if LOCAL_SETTINGS not in path.read_text():
            raise SlimlineError(f"{path} exists: add this line to it: {LOCAL_SETTINGS.strip()}")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(LOCAL_SETTINGS)
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m slimline.nightly.policy AIRFLOW_HOME")
    try:
        print(f"policy installed: {install(Path(sys.argv[1]))}")
    except SlimlineError as exc:
        sys.exit(f"slimline: error: {exc}")
