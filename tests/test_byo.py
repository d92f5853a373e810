"""Bring your own model and data: a second architecture from a user factory on a generated image
folder through the whole line, an ONNX file exported elsewhere on .npz data, data factories,
and one clear line for each bad input a user can give."""
import json
import shutil
import sys
import warnings
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
import yaml
from torch import nn

from examples.make_shapes import CLASSES, make_shapes
from slimline.artifact import ONNX, load_model, read_recipe
from slimline.data import load_split
from slimline.params import DataParams
from slimline.sources import load_dataset
from slimline.stage import EXIT_BAD_INPUT, run_stage
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
        tmp_path, data=SHAPES, model=MOBILENET,
        prepare={"train": {"epochs": 3, **SMALL_BATCHES}},
        prune={"enabled": True, "finetune": {"epochs": 2, **SMALL_BATCHES}},
        # Two layers keep the per-layer ONNX timing short; the depthwise convs are refused anyway.
        decompose={"enabled": True, "finetune": {"epochs": 1, **SMALL_BATCHES},
                   "exclude": ["stem.0", "layers.0.block.0", "layers.0.block.6", "layers.1.block.0"]},
        distill={"enabled": True, "compare_without_teacher": False,
                 "train": {"epochs": 1, **SMALL_BATCHES}},
        quantize={"enabled": True})
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
        torch.onnx.export(model.eval(), (x[:2],), str(path), input_names=["pixels"],
                          output_names=["scores"], dynamic_shapes=({0: batch},), external_data=False)


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


def test_npz_and_factory_data_give_named_normalised_inputs(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    tokens, pixels = rng.integers(0, 50, (30, 7)), rng.uniform(0, 255, (30, 1, 16, 16))
    np.savez(tmp_path / "mixed.npz", ids=tokens, gray=pixels, y=np.arange(30) % 3)
    config = DataParams(source="npz", path="mixed.npz", inputs=["gray", "ids"],
                        preprocess={"mean": [127.5], "std": [50.0]})
    dataset = load_dataset(config, tmp_path)
    assert list(dataset.inputs) == ["gray", "ids"]
    assert dataset.inputs["gray"].dtype == np.float32 and dataset.inputs["ids"].dtype == np.int64
    np.testing.assert_allclose(dataset.inputs["gray"], (pixels - 127.5) / 50.0, atol=1e-5)
    np.testing.assert_array_equal(dataset.inputs["ids"], tokens)

    (tmp_path / "user_data.py").write_text(
        "import numpy as np\n"
        "class Pairs:\n"
        "    def __len__(self): return 12\n"
        "    def __getitem__(self, i): return np.full((2, 4, 4), i, np.float32), i % 2\n"
        "def pairs(): return Pairs()\n"
        "def arrays(count): return {'a': np.ones((count, 3)), 'b': np.zeros((count, 2))}, np.arange(count) % 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    pairs = load_dataset(DataParams(source="factory", factory="user_data:pairs"), tmp_path)
    assert pairs.inputs["input"].shape == (12, 2, 4, 4) and list(pairs.labels[:3]) == [0, 1, 0]
    arrays = load_dataset(DataParams(source="factory", factory="user_data:arrays",
                                     factory_args={"count": 5}), tmp_path)
    assert list(arrays.inputs) == ["a", "b"] and arrays.inputs["a"].dtype == np.float32


# --- bad input: exit code 2 and one line naming the param or file ---------------------------

def write_params(folder, **sections):
    params = folder / "params.yaml"
    params.write_text(yaml.safe_dump(reduced_params(**sections)))
    return ["--params", str(params), "--data", str(folder / "data"), "--teacher",
            str(folder / "teacher"), "--metrics", str(folder / "prepare.json")]


def prepare(folder, **sections):
    """The prepare stage as the pipeline runs it: its own process."""
    return run([sys.executable, "-m", "stages.prepare", *write_params(folder, **sections)], ROOT,
               check=False, timeout=300)


def prepare_here(folder, capsys, **sections):
    """The same stage contract in this process (no second torch import): (exit code, stderr)."""
    from stages.prepare import add_arguments, main

    with pytest.raises(SystemExit) as exit:
        run_stage("prepare", main, add_arguments, write_params(folder, **sections))
    return SimpleNamespace(returncode=exit.value.code, stderr=capsys.readouterr().err)


def assert_one_line(result, *expected):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == EXIT_BAD_INPUT, result.stderr[-2000:]
    assert len(lines) == 1 and all(text in lines[0] for text in expected), result.stderr


@pytest.fixture(scope="module")
def few_shapes(tmp_path_factory):
    return make_shapes(tmp_path_factory.mktemp("few") / "shapes", per_class=6, size=16)


@pytest.fixture(autouse=True)
def shared_data_root(few_shapes, monkeypatch):
    """The module's shared image folder lies outside each test's project folder: a data root the
    deployment allows (SLIMLINE_DATA_ROOTS; paths in params.yaml stay inside the project otherwise)."""
    monkeypatch.setenv("SLIMLINE_DATA_ROOTS", str(few_shapes.parent))


SMALL = {"val_size": 4, "test_size": 4, "calibration_size": 2}


def test_factory_that_does_not_import_or_has_no_such_function(few_shapes, tmp_path, capsys):
    data = {"source": "image_folder", "path": str(few_shapes), **SMALL}
    result = prepare_here(tmp_path, capsys, data=data,
                          model={**MOBILENET, "factory": "no_such_package.nets:build"})
    assert_one_line(result, "model.factory = 'no_such_package.nets:build'", "cannot import")
    result = prepare_here(tmp_path, capsys, data=data,
                          model={**MOBILENET, "factory": "examples.mobilenet_factory:nope"})
    assert_one_line(result, "model.factory", "has no function 'nope'")


def test_weights_that_do_not_match_the_architecture(few_shapes, tmp_path, capsys):
    from examples.mobilenet_factory import build

    wider = build(num_classes=4, widths=[8, 24], blocks_per_stage=1, expansion=2)
    torch.save(wider.state_dict(), tmp_path / "wider.pt")
    data = {"source": "image_folder", "path": str(few_shapes), **SMALL}
    result = prepare_here(tmp_path, capsys, data=data,
                          model={**MOBILENET, "weights": str(tmp_path / "wider.pt")})
    assert_one_line(result, "model.weights", "wider.pt", "do not match",
                    "wrong shape layers.1.block.6.weight [24, 16, 1, 1] vs [16, 16, 1, 1]")
    assert not (tmp_path / "teacher").exists()


def test_image_folder_with_one_class_or_an_unreadable_image(few_shapes, tmp_path, capsys):
    one_class = tmp_path / "one"
    shutil.copytree(few_shapes / "circle", one_class / "circle")
    result = prepare_here(tmp_path, capsys, model=MOBILENET,
                          data={"source": "image_folder", "path": str(one_class), **SMALL})
    assert_one_line(result, str(one_class), "1 class folder", "circle")

    broken = tmp_path / "broken"
    shutil.copytree(few_shapes, broken)
    (broken / "square" / "square_0003.png").write_bytes(b"not a png at all")
    result = prepare_here(tmp_path, capsys, model=MOBILENET,
                          data={"source": "image_folder", "path": str(broken), **SMALL})
    assert_one_line(result, "square_0003.png", "unreadable image")
    assert not (tmp_path / "data").exists()


def test_npz_without_the_declared_key(tmp_path):
    np.savez(tmp_path / "arrays.npz", images=np.zeros((20, 1, 8, 8), np.float32), y=np.zeros(20, np.int64))
    result = prepare(tmp_path, data={"source": "npz", "path": str(tmp_path / "arrays.npz"), **SMALL})
    assert_one_line(result, "arrays.npz", "no array 'x' (data.inputs)", "images")


class TokenBag(nn.Module):
    """Two named inputs of a text encoder's kind: token ids and an attention mask."""

    def __init__(self):
        super().__init__()
        self.embedding, self.head = nn.Embedding(50, 16), nn.Linear(16, 2)

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.unsqueeze(-1).float()
        return self.head((self.embedding(input_ids) * mask).sum(1) / mask.sum(1).clamp_min(1))


def test_named_inputs_with_a_sequence_axis_train_export_and_feed_onnx(tmp_path):
    from slimline.artifact import Recipe, input_specs, write_artifact
    from slimline.data import split_dataset
    from slimline.measure import onnx_predict
    from slimline.params import TrainParams
    from slimline.runtime import make_session
    from slimline.train import accuracy, fit, predict

    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50, (240, 12))
    mask = np.ones_like(ids)
    mask[:, 9:] = 0
    labels = ((ids[:, :9] < 25).mean(1) > 0.5).astype(np.int64)  # mostly low ids among the unmasked
    splits = split_dataset({"input_ids": ids, "attention_mask": mask}, labels,
                           val_size=60, test_size=20, calibration_size=16, seed=0)
    torch.manual_seed(0)
    model = TokenBag()
    fit(model, splits["train"], TrainParams(epochs=8, batch_size=32, learning_rate=0.5, max_shift=2),
        seed=0, log=lambda line: None)
    assert accuracy(model, splits["val"]) > 0.75

    axes = {"input_ids": ["batch", "sequence"], "attention_mask": ["batch", "sequence"]}
    recipe = Recipe("token_bag", {}, input_specs(splits["val"].inputs, axes))
    assert recipe.inputs[0] == {"name": "input_ids", "dtype": "int64", "shape": [1, 12],
                                "axes": ["batch", "sequence"]}
    assert write_artifact(tmp_path / "model", model, recipe, splits["val"].head(8), 1e-4) < 1e-4
    session = make_session(tmp_path / "model" / ONNX)
    assert [value.name for value in session.get_inputs()] == ["input_ids", "attention_mask"]
    shorter = {"input_ids": ids[:5, :6], "attention_mask": mask[:5, :6]}  # another batch and length
    np.testing.assert_allclose(onnx_predict(session, shorter), predict(model, shorter), atol=1e-5)
