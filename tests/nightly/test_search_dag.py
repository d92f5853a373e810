"""The slimline_search DAG end to end: real Airflow (`airflow dags test`), the nightly's prepare
task against a real SeaweedFS, then one real search trial on a tiny configuration."""
from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml

from slimline.nightly.workspace import run_key
from tests.helpers.nightly import (
    BIN,
    airflow_env,
    git,
)

TINY_SEARCH = {
    "model.widths": [8, 16, 32], "prepare.train.epochs": 1,
    "data": {"val_size": 100, "test_size": 200, "calibration_size": 32},
    "prune": {"finetune": {"epochs": 1}, "latency_runs": 20},
    "decompose": {"finetune": {"epochs": 1}, "latency_runs": 20},
    "distill": {"train": {"epochs": 1}},
    "quantize": {"latency_runs": 20, "latency_rounds": 2},
}
# Budgets any tiny candidate meets, so the test checks the plumbing and not the tiny model's luck.
LOOSE = {"description": "CI: loose budgets", "recipe": {},
         "budgets": {"max_top1_drop": 100.0, "max_latency_ms": 1000.0, "max_size_mb": 100.0}}


def search_dag(project, home, settings, conf: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(BIN / "airflow"),
            "dags",
            "test",
            "slimline_search",
            "2026-02-01T00:00:00",
            "--conf",
            json.dumps(conf),
        ],
        env=airflow_env(home, project, settings.env()),
        capture_output=True,
        text=True,
        timeout=1200,
    )


@pytest.mark.slow
def test_the_search_dag_runs_a_trial_and_writes_the_pick_as_a_profile(
    project, airflow_home, storage
):
    (project / "profiles" / "ci_loose.yaml").write_text(yaml.safe_dump(LOOSE))
    git("add", "profiles/ci_loose.yaml", cwd=project)
    git(
        "-c",
        "user.name=test",
        "-c",
        "user.email=test@localhost",
        "commit",
        "-q",
        "-m",
        "ci profile",
        cwd=project,
    )
    done = search_dag(project, airflow_home, storage.settings(),
                      {"target": "ci_loose", "minutes": 20, "max_trials": 1,
                       "write_profile": "ci_found", "overrides": TINY_SEARCH})
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "state=success" in output, output[-6000:]
    found = re.search(r"run_id=(manual__[^\s,]+)", output)
    workspace = project / ".nightly" / "workspaces" / run_key(found.group(1))
    front = json.loads((workspace / "search" / "ci_loose" / "front.json").read_text())
    assert len(front["front"]) == 1 and front["pick"]["number"] == 0
    trial = workspace / "search" / "ci_loose" / "trials" / "trial-0000"
    assert (trial / "quantized" / "model.onnx").stat().st_size > 0
    assert 0 < front["pick"]["val_top1"] <= 1 and front["pick"]["latency_ms"] > 0
    profile = yaml.safe_load((workspace / "profiles" / "ci_found.yaml").read_text())
    assert profile["recipe"] == front["pick"]["recipe"]
    assert LOOSE["budgets"].items() <= profile["budgets"].items()
    assert (workspace / "search" / "ci_loose" / "front.png").stat().st_size > 0


def test_the_search_dag_refuses_an_unknown_target_before_any_work(project, airflow_home, storage):
    done = search_dag(project, airflow_home, storage.settings(), {"target": "no_such_device"})
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "no_such_device" in output and "is not one of" in output and "phone" in output
    assert "Running stage" not in output and "stage prepare started" not in output
