"""The artifact format: recipe + safetensors + ONNX; loading never unpickles."""
import json
import pickle

import numpy as np
import pytest
import torch

from slimline.artifact.edits import resize_edits
from slimline.artifact.recipe import ONNX, RECIPE, WEIGHTS, Recipe
from slimline.artifact.store import load_model, write_artifact
from slimline.errors import SlimlineError
from slimline.models.architectures import build_model
from slimline.training.loop import predict

ARGUMENTS = {"in_channels": 1, "num_classes": 10, "widths": [4, 8, 8], "blocks_per_stage": 1}


@pytest.fixture()
def artifact(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet_digits", **ARGUMENTS).eval()
    recipe = Recipe("resnet_digits", ARGUMENTS, [1, 1, 28, 28], history=["test"])
    inputs = np.random.default_rng(0).standard_normal((8, 1, 28, 28)).astype(np.float32)
    difference = write_artifact(tmp_path / "model", model, recipe, inputs, 1e-4)
    return tmp_path / "model", model, inputs, difference


def test_round_trip_and_parity(artifact):
    folder, model, inputs, difference = artifact
    assert sorted(p.name for p in folder.iterdir()) == sorted([RECIPE, WEIGHTS, ONNX])
    assert difference < 1e-4
    loaded, recipe = load_model(folder)
    np.testing.assert_allclose(predict(loaded, inputs), predict(model, inputs), atol=1e-6)
    assert recipe.history == ["test"]


def test_resize_edits_rebuild_a_narrower_model(tmp_path):
    base = build_model("resnet_digits", **ARGUMENTS)
    narrow = build_model("resnet_digits", **{**ARGUMENTS, "widths": [3, 8, 8]})
    edits = resize_edits(base, narrow)
    assert {e["module"] for e in edits} >= {"stem.0", "stem.1", "layers.0.conv1"}
    recipe = Recipe("resnet_digits", ARGUMENTS, [1, 1, 28, 28], edits=edits)
    inputs = np.zeros((2, 1, 28, 28), np.float32)
    write_artifact(tmp_path / "narrow", narrow.eval(), recipe, inputs, 1e-4)
    loaded, _ = load_model(tmp_path / "narrow")
    assert loaded.stem[0].out_channels == 3 and loaded.stem[0].weight.shape[0] == 3


def test_truncated_weights_are_one_clear_error(artifact):
    folder = artifact[0]
    data = (folder / WEIGHTS).read_bytes()
    (folder / WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(SlimlineError, match="weights.safetensors: not a readable safetensors file"):
        load_model(folder)


class _RunsCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


def test_pickle_checkpoint_is_refused_and_never_run(artifact, tmp_path):
    folder = artifact[0]
    marker = tmp_path / "pwned"
    (folder / WEIGHTS).write_bytes(pickle.dumps({"weight": _RunsCommand(marker)}))
    with pytest.raises(SlimlineError, match="not a readable safetensors file"):
        load_model(folder)
    assert not marker.exists()


def test_weights_from_another_architecture_are_refused(artifact):
    folder = artifact[0]
    recipe = json.loads((folder / RECIPE).read_text())
    recipe["arguments"]["widths"] = [4, 8, 16]
    (folder / RECIPE).write_text(json.dumps(recipe))
    with pytest.raises(SlimlineError, match="weights do not match the recipe"):
        load_model(folder)
