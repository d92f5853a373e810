"""prune: channels cut correctly across residuals, concatenations and depthwise convs; the pruned
model reloads from its artifact; the stage measures what it claims; bad params are one line."""
from __future__ import annotations

import json

import pytest

from slimline.artifact.store import load_model
from tests.helpers.structural import assert_one_line_error, run_stage

NO_TRAINING = {"epochs": 0}


def run_prune(folder, tmp_path, **prune):
    section = {"enabled": True, "finetune": {"epochs": 1}, "latency_runs": 40, **prune}
    return run_stage("prune", folder, tmp_path, section)


def test_stage_prunes_a_small_teacher_and_the_artifact_reloads(small_teacher, tmp_path):
    result = run_prune(small_teacher, tmp_path, keep_ratio=0.5)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "prune.json").read_text())
    assert metrics["enabled"] == 1 and metrics["structured"] == 1
    assert metrics["macs_ratio"] < 0.35 and metrics["parameter_ratio"] < 0.35
    for key in ("val_top1_before", "val_top1_after", "latency_speedup", "parameters_after"):
        assert key in metrics
    model, recipe = load_model(tmp_path / "out")
    assert recipe.history[-1] == "prune" and any(edit["op"] == "resize" for edit in recipe.edits)
    assert model.stem[0].out_channels == 4  # widths [8, 16, 32] at keep ratio 0.5
    log = (tmp_path / "prune.log").read_text()
    assert "threshold" in log and "output channels" in log


def test_unstructured_stage_states_measured_latency_and_compressed_size(small_teacher, tmp_path):
    result = run_prune(small_teacher, tmp_path, method="unstructured", keep_ratio=0.2,
                       finetune={"epochs": 0})
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "prune.json").read_text())
    assert metrics["weight_sparsity"] > 0.75
    assert metrics["onnx_zlib_bytes_after"] < metrics["onnx_zlib_bytes_before"]
    assert metrics["parameters_after"] == metrics["parameters_before"]
    log = (tmp_path / "prune.log").read_text()
    assert "zlib-compressed ONNX shrinks" in log and "latency (measured" in log


def test_disabled_stage_passes_the_model_through(small_teacher, tmp_path):
    result = run_prune(small_teacher, tmp_path, enabled=False)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "prune.json").read_text())["enabled"] == 0
    assert (tmp_path / "out" / "model.onnx").read_bytes() == \
        (small_teacher / "teacher" / "model.onnx").read_bytes()


@pytest.mark.parametrize("prune, fragment", [
    ({"keep_ratio": 0}, "prune.keep_ratio = 0 is not allowed"),
    ({"keep_ratio": 1.5}, "prune.keep_ratio = 1.5 is not allowed"),
    ({"importance": "entropy"}, "prune.importance = 'entropy' is not allowed"),
    ({"exclude": ["layers.9.conv1"]}, "prune.exclude = 'layers.9.conv1' is not allowed"),
])
def test_bad_param_stops_with_one_clear_line(small_teacher, tmp_path, prune, fragment):
    assert_one_line_error(run_prune(small_teacher, tmp_path, **prune), fragment, tmp_path)
