"""A small EfficientNet-Lite (random weights, three of its seven stages) on real digits read from
idx files, through the whole line with `dvc repro` (decompose passes it through): pruning keeps the
depthwise convolutions whole, distillation and int8 run on inverted residuals, evaluate measures
every artifact."""
import json

import pytest

from slimline.artifact.store import load_model
from tests.conftest import make_project, reduced_params, run
from tests.helpers.idx import mnist_idx

pytestmark = pytest.mark.slow
SMALL_LITE = {"variant": "lite0", "num_classes": 10, "in_channels": 1, "image_size": 32,
              "stages": 3}


def test_a_small_efficientnet_lite_goes_through_every_stage(tmp_path):
    params = reduced_params(
        data={"source": "idx", "path": "digits", "val_size": 100, "test_size": 300,
              "calibration_size": 32, "train_size": 800,
              "preprocess": {"size": [32, 32], "channels": 1, "mean": [0.5], "std": [0.25]}},
        model={"source": "factory", "factory": "slimline.models.efficientnet_lite:EfficientNetLite",
               "factory_args": SMALL_LITE, "num_classes": 10},
        prepare={"train": {"epochs": 3, "learning_rate": 0.05}},
        decompose={"enabled": False},   # measured layer by layer: minutes, and tested elsewhere
        distill={"compare_without_teacher": False},
    )
    project = make_project(tmp_path / "project", params)
    mnist_idx(project / "digits", train=1000, test=300)
    run(["dvc", "repro"], project, timeout=1500)

    teacher, _ = load_model(project / "models" / "teacher")
    pruned, _ = load_model(project / "models" / "pruned")
    for before, after in zip(teacher._blocks, pruned._blocks):
        depthwise = after._depthwise_conv
        assert depthwise.groups == depthwise.in_channels == depthwise.out_channels
        assert depthwise.out_channels < before._depthwise_conv.out_channels
    assert "layer _blocks.1._depthwise_conv" in (project / "logs" / "prune.log").read_text()

    metrics = json.loads((project / "metrics" / "evaluate.json").read_text())
    assert metrics["teacher.top1"] > 0.5          # ten classes: chance is 0.1
    assert metrics["quantized.size_ratio"] < 0.2       # half the channels, then int8
    assert metrics["quantized.top1"] > 0.4
    assert (project / "reports" / "report.md").is_file()
