"""A night re-run on the same inputs gives the same outputs: not restored from a cache but computed
again (`dvc repro --force`), every model file is byte-identical and every metric but the timings
is equal. Training, pruning with fine-tuning, ONNX export, int8 calibration and evaluation run for
real on a micro configuration; decompose and distill pass through (their own tests cover them).
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from tests.conftest import make_project, reduced_params, run

MICRO_TRAINED = {
    "data": {"val_size": 50, "test_size": 100, "calibration_size": 16},
    "prepare": {"train": {"epochs": 1}},
    "prune": {"enabled": True, "finetune": {"epochs": 1}, "latency_runs": 20},
    "decompose": {"enabled": False}, "distill": {"enabled": False},
    "quantize": {"enabled": True, "latency_runs": 20, "latency_rounds": 1},
    "evaluate": {"latency_runs": 200, "warmup_runs": 1, "rounds": 2, "throughput_runs": 1,
                 "throughput_batch": 8},
}
# Measured on the machine, so different on every run by nature.
TIMING = re.compile(r"seconds|latency|_ms($|_)|throughput|speedup|noisy")


def snapshot(project: Path) -> tuple[dict, dict]:
    models = {str(path.relative_to(project)): hashlib.sha256(path.read_bytes()).hexdigest()
              for path in sorted((project / "models").rglob("*")) if path.is_file()}
    metrics = {}
    for path in sorted((project / "metrics").glob("*.json")):
        for key, value in json.loads(path.read_text()).items():
            if not TIMING.search(key) and not isinstance(value, dict):
                metrics[f"{path.stem}.{key}"] = value
    return models, metrics


@pytest.mark.slow
def test_a_forced_rerun_reproduces_every_model_byte_for_byte(tmp_path):
    project = make_project(tmp_path / "line", reduced_params(**MICRO_TRAINED))
    run(["dvc", "repro"], project, timeout=1800)
    first_models, first_metrics = snapshot(project)
    run(["dvc", "repro", "--force"], project, timeout=1800)
    second_models, second_metrics = snapshot(project)
    assert {Path(name).parts[1] for name in first_models} >= {"teacher", "pruned", "quantized"}
    assert any(name.endswith(".onnx") for name in first_models)
    assert second_models == first_models
    assert {
        "evaluate.quantized.top1",
        "evaluate.quantized.size_mb",
        "prune.val_top1_pruned",
    } <= set(first_metrics)
    assert second_metrics == first_metrics
