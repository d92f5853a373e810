"""Bring your own model and data through the whole line: a second architecture from a user
factory on a generated image folder, and an ONNX file exported elsewhere on .npz data."""
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from examples.make_shapes import CLASSES, make_shapes
from slimline.artifact.recipe import ONNX, read_recipe
from slimline.artifact.store import load_model
from slimline.config.params import DataParams
from slimline.data.sources import load_dataset
from slimline.data.splits import load_split
from tests.conftest import ROOT, make_project, reduced_params, run

pytestmark = pytest.mark.slow
CHANCE = 1 / len(CLASSES)
SHAPES = {"source": "image_folder", "path": "data/shapes", "val_size": 40, "test_size": 60,
          "calibration_size": 16,
          "preprocess": {"channels": 3, "mean": [0.2, 0.2, 0.2], "std": [0.3, 0.3, 0.3]}}
MOBILENET = {"source": "factory", "factory": "examples.mobilenet_factory:build", "num_classes": 4,
             "factory_args": {"num_classes": 4, "widths": [8, 16], "blocks_per_stage": 1,
                              "expansion": 2}}
SMALL_BATCHES = {"batch_size": 16}


def byo_project(tmp_path, **sections) -> "Path":
    """A project (git + DVC) with examples/ and a generated shapes folder of 4 x 60 RGB PNGs."""
    project = make_project(tmp_path, reduced_params(**sections))
    shutil.copytree(ROOT / "examples", project / "examples",
                    ignore=shutil.ignore_patterns("__pycache__"))
    make_shapes(project / "data" / "shapes", per_class=60, size=32, seed=0)
    return project


def metrics(project, stage: str) -> dict:
    return json.loads((project / "metrics" / f"{stage}.json").read_text())


def test_mobilenet_factory_on_an_image_folder_runs_the_whole_line(tmp_path):
    project = byo_project(
        tmp_path,
        data=SHAPES,
        model=MOBILENET,
        prepare={"train": {"epochs": 3, **SMALL_BATCHES}},
        prune={"enabled": True, "finetune": {"epochs": 2, **SMALL_BATCHES}},
        # Two layers keep the per-layer ONNX timing short; the depthwise convs are refused anyway.
        decompose={
            "enabled": True,
            "finetune": {"epochs": 1, **SMALL_BATCHES},
            "exclude": ["stem.0", "layers.0.block.0", "layers.0.block.6", "layers.1.block.0"],
        },
        distill={
            "enabled": True,
            "compare_without_teacher": False,
            "train": {"epochs": 1, **SMALL_BATCHES},
        },
        quantize={"enabled": True},
    )
    run(["dvc", "repro"], project, timeout=900)

    prepare = metrics(project, "prepare")
    assert prepare["teacher_test_top1"] > CHANCE + 0.4
    recipe = read_recipe(project / "models" / "teacher")
    assert recipe.architecture == "examples.mobilenet_factory:build"
    assert recipe.inputs == [{"name": "input", "dtype": "float32", "shape": [1, 3, 32, 32],
                              "axes": ["batch", None, None, None]}]

    # Pruning cut channels through the depthwise convolutions, and the recipe replays on the
    # factory model: every depthwise conv still has groups == its channels.
    prune = metrics(project, "prune")
    assert prune["parameters_after"] < 0.7 * prune["parameters_before"]
    pruned, pruned_recipe = load_model(project / "models" / "pruned")
    assert pruned_recipe.architecture == recipe.architecture and pruned_recipe.edits
    depthwise = [m for m in pruned.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert depthwise and all(m.groups == m.in_channels == m.out_channels for m in depthwise)
    assert pruned.layers[0].block[3].groups < 2 * MOBILENET["factory_args"]["widths"][0]
    assert pruned(torch.zeros(2, 3, 32, 32)).shape == (2, 4)

    decompose_log = (project / "logs" / "decompose.log").read_text()
    assert "grouped/depthwise convolution" in decompose_log

    evaluate = metrics(project, "evaluate")
    for name in ("teacher", "pruned", "decomposed", "distilled", "quantized"):
        assert evaluate[f"{name}.top1"] > CHANCE + 0.3, name
    quantized = onnx.load(str(project / "models" / "quantized" / ONNX))
    assert any(node.op_type == "QuantizeLinear" for node in quantized.graph.node)
    dims = quantized.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[1:]] == [3, 32, 32] and not dims[0].HasField("dim_value")
    assert load_split(project / "data" / "prepared" / "test.npz").images.shape[1:] == (3, 32, 32)


class ElsewhereNet(nn.Module):
    """A model trained and exported by someone else's code; the line only sees its ONNX file."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(16, 4)

    def forward(self, pixels):
        return self.head(self.features(pixels))


def export_elsewhere(images: np.ndarray, labels: np.ndarray, path) -> None:
    torch.manual_seed(0)
    model = ElsewhereNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    for _ in range(60):
        rows = torch.randint(0, len(y), (32,))
        loss = nn.functional.cross_entropy(model(x[rows]), y[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    batch = torch.export.Dim("n", min=1, max=1024)
    with warnings.catch_warnings():  # the exporter's deprecation chatter is not ours to fix
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (x[:2],),
            str(path),
            input_names=["pixels"],
            output_names=["scores"],
            dynamic_shapes=({0: batch},),
            external_data=False,
        )


def test_onnx_file_exported_elsewhere_is_quantized_and_evaluated(tmp_path):
    project = byo_project(
        tmp_path,
        data={"source": "npz", "path": "data/shapes.npz", "inputs": ["pixels"], "labels": "target",
              "val_size": 40, "test_size": 60, "calibration_size": 16},
        model={"source": "onnx", "onnx": "exported/model.onnx", "num_classes": 4},
        prune={"enabled": True}, decompose={"enabled": True}, distill={"enabled": True},
        quantize={"enabled": True})
    shapes = load_dataset(DataParams(**SHAPES), project)
    np.savez(project / "data" / "shapes.npz", pixels=shapes.inputs["input"], target=shapes.labels)
    (project / "exported").mkdir()
    export_elsewhere(shapes.inputs["input"], shapes.labels, project / "exported" / "model.onnx")
    run(["dvc", "repro"], project, timeout=900)

    for stage in ("prune", "decompose", "distill"):
        log = (project / "logs" / f"{stage}.log").read_text()
        assert "skipped: ONNX-only model (model.source onnx)" in log, stage
        assert metrics(project, stage)["skipped_onnx_only"] == 1
    report = (project / "reports" / "report.md").read_text()
    assert "prune (skipped: ONNX-only model" in report
    assert read_recipe(project / "models" / "quantized").precision.startswith("int8")
    teacher = read_recipe(project / "models" / "teacher")
    assert teacher.architecture == "onnx" and teacher.inputs[0]["name"] == "pixels"
    evaluate = metrics(project, "evaluate")
    assert evaluate["teacher.top1"] > CHANCE + 0.3
    assert evaluate["quantized.top1"] > evaluate["teacher.top1"] - 0.1
    quantized = onnx.load(str(project / "models" / "quantized" / ONNX))
    assert any(init.data_type == onnx.TensorProto.INT8 for init in quantized.graph.initializer)
    assert [value.name for value in quantized.graph.input] == ["pixels"]
