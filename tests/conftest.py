"""Shared by every tier: the project root, the reduced configuration of the real line, helpers
to run commands and make a scratch project, and the session fixtures built from them.

Tiers (each folder one; README's fast command runs tests/unit alone):
  unit/        in-process, no subprocess, no services, a few training steps at most (< 3 min)
  stages/      one real stage, as the pipeline runs it (its own process), bad input included
  line/        the whole line through `dvc repro` on a reduced configuration
  nightly/     Airflow (`airflow dags test`), SeaweedFS, DVC remote, publish, faults, the soak
  containers/  the stage images and the DAG in containers (podman)
  deployment/  the real Airflow deployment of scripts/airflow.sh: PostgreSQL, Redis, Celery
               workers, the schedule, a killed worker, the UI in headless Chromium
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from slimline.config.params import deep_merge

# Fixtures shared across tiers: the SeaweedFS server, the git project and the Airflow home of the
# nightly tests (module-scoped: each test module gets its own), the small trained teacher, the
# local Airflow deployment.
pytest_plugins = ["tests.helpers.nightly", "tests.helpers.structural", "tests.helpers.deployment"]

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PROJECT_FILES = ("dvc.yaml", "params.yaml", "stages", "slimline", "profiles", ".dvcignore")

# Overrides that make every stage small enough for CI on 2 cores while running the real code.
REDUCED = {
    "data": {"val_size": 300, "test_size": 500, "calibration_size": 64},
    "model": {"widths": [8, 16, 32]},
    "prepare": {"train": {"epochs": 2}},
    # The tiny widths would barely prune under the default rounding to multiples of 8.
    "prune": {
        "keep_ratio": 0.5,
        "channel_multiple": 1,
        "finetune": {"epochs": 1},
        "latency_runs": 50,
    },
    "decompose": {"finetune": {"epochs": 1}, "latency_runs": 50},
    "distill": {"train": {"epochs": 1}},
    # a tiny model's int8 speed-up is noise on a loaded CI machine: the tests that check the int8
    # graph need it shipped (the fp32 fallback has its own test)
    "quantize": {"latency_runs": 50, "latency_rounds": 5, "min_speedup": 0},
    "evaluate": {
        "latency_runs": 200,
        "warmup_runs": 5,
        "rounds": 4,
        "throughput_runs": 4,
        "gate": {"max_top1_drop": 100.0},
    },
}


def reduced_params(**extra) -> dict:
    params = deep_merge(yaml.safe_load((ROOT / "params.yaml").read_text()), REDUCED)
    return deep_merge(params, extra)


def run(cmd: list[str], cwd: Path, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({result.returncode}):\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def make_project(target: Path, params: dict) -> Path:
    """A fresh git + DVC project holding this checkout's pipeline and the given params."""
    target.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target / name)
    (target / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], target)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty",
         "-m", "init"], target)
    run(["dvc", "init", "-q"], target)
    return target


@pytest.fixture(scope="session")
def line(tmp_path_factory) -> Path:
    """The whole line (dvc repro) on the reduced configuration; returns the project folder."""
    project = make_project(tmp_path_factory.mktemp("line"), reduced_params())
    run(["dvc", "repro"], project, timeout=1800)
    return project


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> Path:
    """Data splits and a teacher from the real prepare stage on the reduced configuration."""
    folder = tmp_path_factory.mktemp("tiny")
    (folder / "params.yaml").write_text(yaml.safe_dump(reduced_params()))
    run([sys.executable, "-m", "stages.prepare", "--params", str(folder / "params.yaml"),
         "--data", str(folder / "data"), "--teacher", str(folder / "teacher"),
         "--metrics", str(folder / "prepare.json")], ROOT, timeout=600)
    return folder
