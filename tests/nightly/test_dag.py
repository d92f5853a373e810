"""The nightly DAG's shape and its run-time checks, without running a stage.

Airflow is imported in a subprocess with its own AIRFLOW_HOME, so the test never touches
~/airflow and the DAG file is parsed exactly as the scheduler would parse it.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.helpers.nightly import airflow_python

ROOT = Path(__file__).resolve().parents[2]
DAG_FILE = ROOT / "dags" / "slimline_nightly.py"

DESCRIBE_DAG = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags.get("slimline_nightly")
print(json.dumps({
    "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
    "torch_imported": "torch" in sys.modules,
    "dag": None if dag is None else {
        "schedule": str(dag.schedule), "catchup": dag.catchup,
        "max_active_runs": dag.max_active_runs, "params": list(dag.params.keys()),
        "tasks": {t.task_id: {"upstream": sorted(t.upstream_task_ids), "retries": t.retries,
                              "backoff": t.retry_exponential_backoff,
                              "timeout": (t.execution_timeout.total_seconds()
                                          if t.execution_timeout else None)}
                  for t in dag.tasks}}}))
"""



def describe_dag(tmp_path: Path, dags_folder: Path, **env) -> dict:
    done = airflow_python(DESCRIBE_DAG, tmp_path, str(dags_folder), **env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def described(tmp_path_factory) -> dict:
    return describe_dag(tmp_path_factory.mktemp("dagbag"), ROOT / "dags")


def dvc_edges(project: Path) -> set[tuple[str, str]]:
    """(upstream, downstream) pairs of DVC's own stage graph: the oracle for the DAG's."""
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        graph = repo.index.graph
        # DVC draws an edge from a stage to each stage it depends on.
        return {(needed.name, stage.name) for stage, needed in graph.edges}


def test_the_dag_file_imports_cleanly_without_torch(described):
    assert described["import_errors"] == {}
    assert described["dag"] is not None
    assert described["torch_imported"] is False  # the scheduler parses this file every few seconds


def test_the_dag_runs_nightly_one_at_a_time_with_retries_and_timeouts(described):
    dag = described["dag"]
    assert dag["catchup"] is False and dag["max_active_runs"] == 1
    assert dag["schedule"] == "0 2 * * *"
    assert "overrides" in dag["params"]
    for task_id, task in dag["tasks"].items():
        assert task["retries"] == 2 and task["backoff"] == 2.0, task_id
        assert task["timeout"], task_id


def test_the_task_graph_is_dvc_yaml_stage_graph(described):
    tasks = described["dag"]["tasks"]
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert set(tasks) == set(stages) | {"setup_workspace", "publish"}
    dag_edges = {(parent, name) for name, task in tasks.items() for parent in task["upstream"]
                 if name in stages and parent in stages}
    assert dag_edges == dvc_edges(ROOT)
    roots = [name for name in stages if not any(p in stages for p in tasks[name]["upstream"])]
    assert all(tasks[name]["upstream"] == ["setup_workspace"] for name in roots)
    needed_by_a_stage = {parent for name in stages for parent in tasks[name]["upstream"]}
    assert tasks["publish"]["upstream"] == sorted(s for s in stages if s not in needed_by_a_stage)


def test_a_stage_added_to_dvc_yaml_becomes_a_task(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(ROOT / "dags", project / "dags", ignore=shutil.ignore_patterns("__pycache__"))
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    pipeline["stages"]["export"] = {
        "cmd": "python -m stages.export --input models/quantized --output exports/tflite",
        "deps": ["models/quantized"], "outs": ["exports/tflite"]}
    (project / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    tasks = describe_dag(tmp_path, project / "dags", SLIMLINE_REPO=str(project))["dag"]["tasks"]
    assert tasks["export"]["upstream"] == ["quantize"]
    assert tasks["publish"]["upstream"] == ["evaluate", "export"]


def test_a_bad_override_fails_the_run_at_setup_before_any_work(tmp_path):
    """setup_workspace, as Airflow calls it: one line, no retry (AirflowFailException), no
    workspace."""
    code = r"""
import sys
from types import SimpleNamespace
from airflow.sdk.exceptions import AirflowFailException
from slimline.nightly import tasks
try:
    tasks.setup_workspace(project=sys.argv[1], run_id="manual__bad",
                          dag=SimpleNamespace(params={"overrides": {}}),
                          params={"overrides": {"prepare.train.epochs": "one"}})
except AirflowFailException as exc:
    print("FAILED:", exc)
"""
    state = tmp_path / "state"
    done = airflow_python(code, tmp_path, str(ROOT), SLIMLINE_STATE_DIR=str(state),
                          SLIMLINE_S3_BUCKET="unused")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == (
        "FAILED: run overrides: prepare.train.epochs = 'one' is not allowed: "
        "Input should be a valid integer"
    )
    assert not (state / "workspaces").exists()
