"""Bring your own data, in-process: .npz arrays and data factories give named, normalised inputs;
named inputs with a sequence axis train, export and feed ONNX Runtime."""

import numpy as np
import pytest
import torch
from torch import nn

from slimline.artifact.recipe import ONNX
from slimline.config.params import DataParams
from slimline.data.sources import load_dataset
from tests.helpers.idx import mnist_idx


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
        "def arrays(count):\n"
        "    return {'a': np.ones((count, 3)), 'b': np.zeros((count, 2))}, np.arange(count) % 2\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    pairs = load_dataset(DataParams(source="factory", factory="user_data:pairs"), tmp_path)
    assert pairs.inputs["input"].shape == (12, 2, 4, 4) and list(pairs.labels[:3]) == [0, 1, 0]
    arrays = load_dataset(DataParams(source="factory", factory="user_data:arrays",
                                     factory_args={"count": 5}), tmp_path)
    assert list(arrays.inputs) == ["a", "b"] and arrays.inputs["a"].dtype == np.float32



class TokenBag(nn.Module):
    """Two named inputs of a text encoder's kind: token ids and an attention mask."""

    def __init__(self):
        super().__init__()
        self.embedding, self.head = nn.Embedding(50, 16), nn.Linear(16, 2)

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.unsqueeze(-1).float()
        return self.head((self.embedding(input_ids) * mask).sum(1) / mask.sum(1).clamp_min(1))


def test_named_inputs_with_a_sequence_axis_train_export_and_feed_onnx(tmp_path, monkeypatch):
    from slimline.artifact.recipe import Recipe, input_specs
    from slimline.artifact.store import write_artifact
    from slimline.config.params import TrainParams
    from slimline.data.splits import split_dataset
    from slimline.measure.runtime import make_session, onnx_predict
    from slimline.models.architectures import ARCHITECTURES
    from slimline.training.loop import accuracy, fit, predict

    monkeypatch.setitem(ARCHITECTURES, "token_bag", TokenBag)  # the recipe must rebuild it
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50, (240, 12))
    mask = np.ones_like(ids)
    mask[:, 9:] = 0
    labels = ((ids[:, :9] < 25).mean(1) > 0.5).astype(np.int64)  # mostly low ids among the unmasked
    splits = split_dataset({"input_ids": ids, "attention_mask": mask}, labels,
                           val_size=60, test_size=20, calibration_size=16, seed=0)
    torch.manual_seed(0)
    model = TokenBag()
    fit(
        model,
        splits["train"],
        TrainParams(epochs=8, batch_size=32, learning_rate=0.5, max_shift=2),
        seed=0,
        log=lambda line: None,
    )
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


def test_an_idx_folder_keeps_its_own_test_set_and_expands_only_the_examples_used(tmp_path):
    from slimline.data.splits import split_dataset

    test_images = mnist_idx(tmp_path / "digits")
    config = DataParams(source="idx", path="digits", preprocess={
        "size": [32, 32], "channels": 3, "mean": [0.5], "std": [0.25]})
    dataset = load_dataset(config, tmp_path)
    assert dataset.inputs["input"].dtype == np.uint8 and len(dataset.test) == 100
    splits = split_dataset(dataset.inputs, dataset.labels, val_size=50, test_size=10000,
                           calibration_size=16, seed=0, test=dataset.test, train_size=120)
    assert [len(splits[name]) for name in ("train", "val", "test", "calibration")] == [
        120, 50, 100, 16]
    np.testing.assert_array_equal(splits["test"].inputs["input"][:, 0], test_images)
    test = dataset.finish(splits["test"].inputs)["input"]
    assert test.shape == (100, 3, 32, 32) and test.dtype == np.float32
    # Bilinear upsampling keeps the range; the normalisation maps ink (1.0) to 2.0.
    assert test.max() == pytest.approx(2.0, abs=1e-3) and test.min() == pytest.approx(-2.0)


def test_a_truncated_idx_file_is_refused_in_one_line(tmp_path):
    from slimline.errors import SlimlineError

    mnist_idx(tmp_path / "digits")
    labels = tmp_path / "digits" / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-5])
    with pytest.raises(SlimlineError, match="t10k-labels-idx1-ubyte: the header says .100. "
                                            "bytes, the file holds 95"):
        load_dataset(DataParams(source="idx", path="digits"), tmp_path)
