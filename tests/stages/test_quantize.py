"""quantize: the explicit scale/zero-point math, ORT agreeing with it, the CPU-driven choice of
settings, and the real stage on a tiny teacher (accuracy, determinism, bad input)."""
from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import pytest
import yaml

from slimline.config.params import QuantizeParams
from slimline.data.splits import load_split
from slimline.measure.runtime import make_session, onnx_accuracy
from slimline.techniques.affine import (
    asymmetric_uint8,
)
from slimline.techniques.quantize import choose_int8_target, quantize_model
from tests.conftest import ROOT, reduced_params, run

# ----------------------------------------------------------------------------- ORT agreement

@pytest.fixture(scope="module")
def tiny(tiny_teacher):
    data = tiny_teacher / "data"
    return {"folder": tiny_teacher, "fp32": onnx.load(str(tiny_teacher / "teacher" / "model.onnx")),
            **{name: load_split(data / f"{name}.npz") for name in ("calibration", "val", "test")}}


def test_ort_chose_the_scales_the_formulas_give(tiny):
    config = QuantizeParams()
    for features in (set(), {"avx512_vnni"}):   # 7-bit and 8-bit weights
        target = choose_int8_target(config, features, machine="x86_64")
        quantized, report = quantize_model(tiny["fp32"], tiny["calibration"], config, target)
        weights = [row for row in report.tensors if row.kind == "weight"]
        assert len(weights) >= 5
        assert all(row.scale_agreement < 1e-6 for row in weights), weights
        # the graph input's uint8 range is the calibration images' min/max (MinMax calibration)
        initializers = {i.name: onnx.numpy_helper.to_array(i) for i in quantized.graph.initializer}
        node = next(
            n
            for n in quantized.graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] == "input"
        )
        ours = asymmetric_uint8(tiny["calibration"].images)
        assert initializers[node.input[1]] == pytest.approx(float(ours.scale), rel=1e-6)
        assert int(initializers[node.input[2]]) == int(ours.zero_point)
        assert all(row.sqnr_db > 25 for row in report.tensors)


@pytest.mark.parametrize(
    "scheme, op", [("dynamic", "MatMulInteger"), ("weight_only_4bit", "MatMulNBits")]
)
def test_other_schemes_quantize_matmuls_and_keep_accuracy(tiny, scheme, op):
    config = QuantizeParams(scheme=scheme)
    quantized, report = quantize_model(tiny["fp32"], tiny["calibration"], config,
                                       choose_int8_target(config, set(), "x86_64"))
    assert report.quantized_ops.get(op, 0) >= 1
    path = tiny["folder"] / f"{scheme}.onnx"
    onnx.save(quantized, str(path))
    fp32 = onnx_accuracy(make_session(tiny["folder"] / "teacher" / "model.onnx"), tiny["test"])
    assert onnx_accuracy(make_session(path), tiny["test"]) >= fp32 - 0.02


# ----------------------------------------------------------------------------- the stage

def quantize_stage(folder, name, check=True, **quantize):
    params = reduced_params(
        quantize={"enabled": True, "latency_runs": 20, "latency_rounds": 2, **quantize}
    )
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(params))
    return run([sys.executable, "-m", "stages.quantize", "--params", str(folder / f"{name}.yaml"),
                "--input", str(folder / "teacher"), "--data", str(folder / "data"),
                "--output", str(folder / name), "--metrics", str(folder / f"{name}.json")],
               ROOT, check=check, timeout=600)


def test_static_int8_keeps_accuracy_and_calibration_is_byte_identical(tiny_teacher):
    result = quantize_stage(tiny_teacher, "int8_a")
    log = result.stdout + result.stderr
    quantize_stage(tiny_teacher, "int8_b")
    first = (tiny_teacher / "int8_a" / "model.onnx").read_bytes()
    assert first == (tiny_teacher / "int8_b" / "model.onnx").read_bytes()
    metrics = json.loads((tiny_teacher / "int8_a.json").read_text())
    assert metrics["enabled"] == 1
    assert (
        metrics["int8_test_top1"] >= metrics["fp32_test_top1"] - 0.01
    )  # within 1 point (tiny model)
    assert metrics["size_ratio"] < 0.6      # a tiny graph is mostly structure, not weights
    recipe = json.loads((tiny_teacher / "int8_a" / "recipe.json").read_text())
    assert recipe["precision"] == "int8-static-qdq" and recipe["history"][-1] == "quantize"
    assert metrics["shipped_fp32"] == 0 and "bias_corrected" in metrics
    assert "layers adding the most int8 error: " + metrics["worst_layer"] in log
    assert not (tiny_teacher / "int8_a" / "weights.safetensors").exists()


def test_int8_slower_than_its_fp32_input_ships_the_fp32_input(tiny_teacher):
    # no int8 graph is 1000x faster: the stage must measure it slower than asked and ship fp32
    result = quantize_stage(tiny_teacher, "guarded", min_speedup=1000)
    assert (tiny_teacher / "guarded" / "model.onnx").read_bytes() == \
        (tiny_teacher / "teacher" / "model.onnx").read_bytes()
    assert json.loads((tiny_teacher / "guarded" / "recipe.json").read_text())["precision"] == "fp32"
    metrics = json.loads((tiny_teacher / "guarded.json").read_text())
    assert metrics["shipped_fp32"] == 1 and metrics["speedup"] < 1000
    assert "shipping the fp32 input instead" in result.stdout + result.stderr


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_calibration_is_deterministic_too(tiny_teacher, method):
    quantize_stage(tiny_teacher, f"{method}_a", calibration_method=method)
    quantize_stage(tiny_teacher, f"{method}_b", calibration_method=method)
    assert (tiny_teacher / f"{method}_a" / "model.onnx").read_bytes() == \
        (tiny_teacher / f"{method}_b" / "model.onnx").read_bytes()


def test_qat_ships_a_qdq_model_within_bound(tiny_teacher):
    quantize_stage(tiny_teacher, "qat", scheme="qat", qat={"epochs": 1, "learning_rate": 0.001})
    metrics = json.loads((tiny_teacher / "qat.json").read_text())
    assert metrics["int8_test_top1"] >= metrics["fp32_test_top1"] - 0.02
    model = onnx.load(str(tiny_teacher / "qat" / "model.onnx"))
    assert any(node.op_type == "QuantizeLinear" for node in model.graph.node)


def test_disabled_passes_the_model_through(tiny_teacher):
    quantize_stage(tiny_teacher, "off", enabled=False)
    assert (tiny_teacher / "off" / "model.onnx").read_bytes() == \
        (tiny_teacher / "teacher" / "model.onnx").read_bytes()
    assert json.loads((tiny_teacher / "off.json").read_text())["enabled"] == 0


def one_line_error(result) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_empty_calibration_set_is_one_clear_line(tiny_teacher, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train", "val", "test"):
        (data / f"{name}.npz").write_bytes((tiny_teacher / "data" / f"{name}.npz").read_bytes())
    with open(data / "calibration.npz", "wb") as handle:
        np.savez(handle, **{"input.input": np.zeros((0, 1, 28, 28), np.float32)},
                 labels=np.zeros(0, np.int64))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(reduced_params(quantize={"enabled": True})))
    result = run([sys.executable, "-m", "stages.quantize", "--params", str(params),
                  "--input", str(tiny_teacher / "teacher"), "--data", str(data),
                  "--output", str(tmp_path / "out"), "--metrics", str(tmp_path / "m.json")],
                 ROOT, check=False, timeout=300)
    line = one_line_error(result)
    assert "calibration.npz" in line and "empty" in line
    assert not (tmp_path / "out").exists()


def test_unknown_calibration_method_is_one_clear_line(tiny_teacher):
    result = quantize_stage(tiny_teacher, "bad_method", check=False, calibration_method="kl")
    line = one_line_error(result)
    assert "quantize.calibration_method" in line and "'kl'" in line
    assert not (tiny_teacher / "bad_method").exists()


def test_quantizing_an_int8_model_again_is_refused(tiny_teacher):
    quantize_stage(tiny_teacher, "int8_once")
    params = tiny_teacher / "int8_once.yaml"
    result = run(
        [
            sys.executable,
            "-m",
            "stages.quantize",
            "--params",
            str(params),
            "--input",
            str(tiny_teacher / "int8_once"),
            "--data",
            str(tiny_teacher / "data"),
            "--output",
            str(tiny_teacher / "int8_twice"),
            "--metrics",
            str(tiny_teacher / "twice.json"),
        ],
        ROOT,
        check=False,
        timeout=300,
    )
    assert "already quantized" in one_line_error(result)
