"""Bad input ends a stage with exit 2, one clear line, and nothing written."""
import subprocess
import sys

import onnx
import pytest

from tests.conftest import ROOT


def run_stage(stage, *args, params):
    return subprocess.run([sys.executable, "-m", f"stages.{stage}", "--params", str(params), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.stderr


def evaluate(folder, model_dir, data=None):
    return run_stage("evaluate", "--data", str(data or folder / "data"),
                     "--model", f"teacher={folder / 'teacher'}", "--model", f"shipped={model_dir}",
                     "--report", str(folder / "out" / "reports"),
                     "--metrics", str(folder / "out" / "evaluate.json"),
                     params=folder / "params.yaml")


@pytest.fixture()
def broken_copy(tiny_teacher, tmp_path):
    import shutil
    shutil.copytree(tiny_teacher / "teacher", tmp_path / "broken")
    return tmp_path / "broken"


def test_file_named_onnx_that_is_not_onnx(tiny_teacher, broken_copy):
    (broken_copy / "model.onnx").write_bytes(b"this is not a protobuf at all")
    result = evaluate(tiny_teacher, broken_copy)
    assert_one_line_error(result, "model.onnx", "not an ONNX model")
    assert not (tiny_teacher / "out" / "reports").exists()


def test_onnx_model_with_no_outputs(tiny_teacher, broken_copy):
    model = onnx.load(str(broken_copy / "model.onnx"))
    del model.graph.output[:]
    onnx.save(model, str(broken_copy / "model.onnx"))
    assert_one_line_error(evaluate(tiny_teacher, broken_copy), "has no outputs")


def test_missing_data_path(tiny_teacher, tmp_path):
    result = evaluate(tiny_teacher, tiny_teacher / "teacher", data=tmp_path / "nowhere")
    assert_one_line_error(result, "test.npz", "not found")


def test_missing_recipe(tiny_teacher, broken_copy):
    (broken_copy / "recipe.json").unlink()
    assert_one_line_error(evaluate(tiny_teacher, broken_copy), "recipe.json", "missing")


def test_labels_outside_class_range(tiny_teacher, tmp_path):
    import shutil

    import numpy as np
    data = tmp_path / "data"
    shutil.copytree(tiny_teacher / "data", data)
    with np.load(data / "test.npz") as arrays:
        images, labels = arrays["input.input"], arrays["labels"].copy()
    labels[0] = 42
    np.savez(data / "test.npz", **{"input.input": images}, labels=labels)
    assert_one_line_error(evaluate(tiny_teacher, tiny_teacher / "teacher", data=data),
                          "labels must be in [0, 9]", "42")


def test_nan_and_empty_data(tiny_teacher, tmp_path):
    import numpy as np
    for name, images, labels, expected in (
            ("nan", np.full((4, 1, 28, 28), np.nan, np.float32), np.zeros(4, np.int64), "NaN"),
            ("empty", np.zeros((0, 1, 28, 28), np.float32), np.zeros(0, np.int64), "empty")):
        data = tmp_path / name
        data.mkdir()
        np.savez(data / "test.npz", **{"input.input": images}, labels=labels)
        assert_one_line_error(evaluate(tiny_teacher, tiny_teacher / "teacher", data=data), expected)


def test_calibration_split_of_zero_samples(tiny_teacher, tmp_path):
    import shutil

    import numpy as np
    data = tmp_path / "data"
    shutil.copytree(tiny_teacher / "data", data)
    with np.load(data / "calibration.npz") as split:   # same keys and shapes, zero samples
        empty = {key: split[key][:0] for key in split.files}
    np.savez(data / "calibration.npz", **empty)
    result = run_stage(
        "quantize",
        "--input",
        str(tiny_teacher / "teacher"),
        "--data",
        str(data),
        "--output",
        str(tmp_path / "quantized"),
        "--metrics",
        str(tmp_path / "q.json"),
        params=tiny_teacher / "params.yaml",
    )
    assert_one_line_error(result, "calibration.npz", "split is empty")
    assert not (tmp_path / "quantized").exists() and not (tmp_path / "q.json").exists()
