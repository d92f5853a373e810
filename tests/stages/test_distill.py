"""distill: the KD loss against a hand computation, the teacher left untouched, and the real stage
on a tiny teacher (what KD bought, feature distillation, bad input)."""
from __future__ import annotations

import json
import sys

import pytest
import torch
import yaml

from slimline.artifact.store import load_model
from slimline.config.params import DistillParams
from slimline.data.splits import load_split
from slimline.models.architectures import build_model
from slimline.techniques.distill import distill
from tests.conftest import ROOT, reduced_params, run

STUDENT = {"temperature": 4.0, "alpha": 0.5}


@pytest.fixture(scope="module")
def small_train(tiny_teacher):
    train = load_split(tiny_teacher / "data" / "train.npz")
    return type(train)(train.images[:256], train.labels[:256])


@pytest.mark.parametrize("feature_weight", [0.0, 1.0])
def test_teacher_is_never_updated(tiny_teacher, small_train, feature_weight):
    teacher, _ = load_model(tiny_teacher / "teacher")
    before = {name: tensor.clone() for name, tensor in teacher.state_dict().items()}
    student = build_model("resnet_digits", widths=[4, 8, 16])
    config = DistillParams(feature_weight=feature_weight, train={"epochs": 1})
    result = distill(student, teacher, small_train, config, seed=0, log=lambda *_: None)
    after = teacher.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)   # BN statistics included
    assert not teacher.training
    # feature adapters are training-only: the student keeps its own tensors only
    assert set(result.student.state_dict()) == set(
        build_model("resnet_digits", widths=[4, 8, 16]).state_dict()
    )


def distill_stage(folder, name, check=True, **distill_params):
    params = reduced_params(distill={"enabled": True, **distill_params})
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(params))
    return run([sys.executable, "-m", "stages.distill", "--params", str(folder / f"{name}.yaml"),
                "--input", str(folder / "teacher"), "--teacher", str(folder / "teacher"),
                "--data", str(folder / "data"), "--output", str(folder / name),
                "--metrics", str(folder / f"{name}.json"), "--log", str(folder / f"{name}.log")],
               ROOT, check=check, timeout=900)


def test_distilled_student_beats_the_same_student_without_teacher(tiny_teacher):
    """Seeded reduced run: a half-width student of the tiny teacher, 2 epochs, default T and
    alpha."""
    distill_stage(tiny_teacher, "kd", student_widths=[4, 8, 16], train={"epochs": 2})
    metrics = json.loads((tiny_teacher / "kd.json").read_text())
    assert metrics["enabled"] == 1
    assert metrics["kd_gain_val_points"] == pytest.approx(
        100 * (metrics["distilled_val_top1"] - metrics["without_teacher_val_top1"]), abs=0.01)
    assert metrics["kd_gain_val_points"] >= 0, metrics
    assert metrics["student_parameters"] < metrics["teacher_parameters"] / 3
    student, recipe = load_model(tiny_teacher / "kd")
    assert recipe.arguments["widths"] == [4, 8, 16] and recipe.history[-1] == "distill"
    assert metrics["onnx_parity_max_abs_diff"] < 1e-3
    log = (tiny_teacher / "kd.log").read_text()
    assert "distillation bought" in log


def test_disabled_passes_the_model_through(tiny_teacher):
    distill_stage(tiny_teacher, "off", enabled=False)
    assert (tiny_teacher / "off" / "model.onnx").read_bytes() == \
        (tiny_teacher / "teacher" / "model.onnx").read_bytes()
    assert json.loads((tiny_teacher / "off.json").read_text())["enabled"] == 0


@pytest.mark.parametrize("key, value, expected", [
    ("temperature", 0.0, "distill.temperature = 0.0"),
    ("temperature", -2.0, "distill.temperature = -2.0"),
    ("alpha", 1.5, "distill.alpha = 1.5"),
    ("alpha", -0.1, "distill.alpha = -0.1"),
])
def test_impossible_distill_params_are_one_clear_line(tiny_teacher, key, value, expected):
    name = f"bad_{key}_{value}"
    result = distill_stage(tiny_teacher, name, check=False, **{key: value})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert not (tiny_teacher / name).exists()
