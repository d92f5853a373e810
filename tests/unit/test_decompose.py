"""decompose: the factorizations are exact at full rank, the rank rules meet their budgets, a
layer is kept only when the latency measurer finds it faster (a given measurer here; ONNX
Runtime's in tests/stages/test_decompose.py), and the factorized model reloads."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from slimline.artifact.edits import factorize_edit
from slimline.artifact.recipe import Recipe
from slimline.artifact.store import load_model, write_artifact
from slimline.config.params import DecomposeParams
from slimline.data.splits import Split
from slimline.models.architectures import ARCHITECTURES
from slimline.techniques.decompose import decompose_model, energy_rank, rule_ranks
from slimline.techniques.lowrank import factorize, max_rank, svd_factors
from slimline.training.loop import parameter_count

NO_TRAINING = {"epochs": 0}


def test_svd_of_a_known_low_rank_matrix_reconstructs_it():
    torch.manual_seed(0)
    matrix = torch.randn(40, 5) @ torch.randn(5, 30)
    singular = torch.linalg.svdvals(matrix)
    assert energy_rank(singular, 1.0 - 1e-9) == 5
    first, second = svd_factors(matrix, 5)
    assert first.shape == (5, 30) and second.shape == (40, 5)
    torch.testing.assert_close(second @ first, matrix, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("layer, method, inputs", [
    (nn.Linear(24, 16), "svd", (4, 24)),
    (nn.Conv2d(12, 20, 1, stride=2), "svd", (2, 12, 9, 9)),
    (nn.Conv2d(12, 20, 3, padding=1, bias=False), "tucker2", (2, 12, 9, 9)),
    (nn.Conv2d(6, 8, 3, stride=2, padding=1), "tucker2", (2, 6, 9, 9)),
])
def test_full_rank_factorization_matches_the_original_layer(layer, method, inputs):
    torch.manual_seed(0)
    full = max_rank(layer, method)
    ranks = [layer.out_channels, layer.in_channels] if method == "tucker2" else [full]
    chain = factorize(layer, method, ranks)
    x = torch.randn(*inputs)
    with torch.no_grad():
        expected, actual = layer(x), chain(x)
    assert (actual - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_cp_recovers_a_conv_whose_kernel_has_exact_cp_rank():
    torch.manual_seed(0)
    rank = 3
    factors = [torch.randn(size, rank) for size in (8, 6, 3, 3)]
    kernel = torch.einsum("or,ir,hr,wr->oihw", *factors)
    layer = nn.Conv2d(6, 8, 3, padding=1, bias=True)
    with torch.no_grad():
        layer.weight.copy_(kernel)
    chain = factorize(layer, "cp", [rank])
    x = torch.randn(2, 6, 10, 10)
    with torch.no_grad():
        expected, actual = layer(x), chain(x)
    assert float((actual - expected).norm() / expected.norm()) < 1e-3


def test_parameter_reduction_rule_meets_its_budget():
    layer = nn.Conv2d(24, 16, 3, bias=False)
    cfg = DecomposeParams(rank_rule="param_reduction", param_reduction=0.6)
    for method in ("tucker2", "cp"):
        ranks = rule_ranks(layer, method, cfg)
        chain = factorize(layer, method, ranks)
        assert parameter_count(chain) <= 0.4 * parameter_count(layer) + 1
        assert parameter_count(chain) > 0.25 * parameter_count(layer)  # and is not needlessly small


class WideMLP(nn.Module):
    """Linear-heavy: two wide hidden layers, where SVD is expected to pay."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, hidden: int = 1024):
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(in_channels * 28 * 28, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(self.flatten(x))))))


def low_rank_mlp(rank: int = 32, hidden: int = 512) -> WideMLP:
    """A trained layer's spectrum decays; give the wide layers a clearly low-rank one."""
    torch.manual_seed(0)
    model = WideMLP(hidden=hidden)
    with torch.no_grad():
        for layer in (model.fc1, model.fc2):
            out_features, in_features = layer.weight.shape
            low = torch.randn(out_features, rank) @ torch.randn(rank, in_features) / in_features
            layer.weight.copy_(low + 1e-4 * torch.randn_like(low))
    return model


def random_split(count: int = 32) -> Split:
    rng = np.random.default_rng(0)
    return Split(rng.standard_normal((count, 1, 28, 28)).astype(np.float32),
                 rng.integers(0, 10, count).astype(np.int64))


def slower_by(ratio: float):
    """A latency measurer under which every factorized layer runs `ratio` times as fast."""
    def measure(models, example):
        first, second = models
        return {first: 1.0, second: 1.0 / ratio}
    return measure


def test_a_layer_that_measures_slower_is_left_alone():
    model, data = low_rank_mlp(hidden=64), random_split()
    before = {name: p.clone() for name, p in model.state_dict().items()}
    lines = []
    report = decompose_model(model, DecomposeParams(finetune=NO_TRAINING), data.images, data, None,
                             seed=0, log=lines.append, measure_latency=slower_by(0.8))
    assert report.kept == []
    assert all(torch.equal(before[name], p) for name, p in model.state_dict().items())
    assert any("0.80x < 1.1x" in line for line in lines)


def test_whole_model_slower_reverts_the_weakest_layer():
    gains = {"fc1": 1.5, "fc2": 3.0}
    whole = iter([{"original": 1.0, "factorized": 1.2}, {"original": 1.0, "factorized": 0.8}])

    def measure(models, example):
        if "original" in models:  # the whole model: slower with both layers, faster with one
            return next(whole)
        layer = models["layer"]
        gain = (
            gains["fc1" if layer.in_features == 784 else "fc2"] if layer.out_features != 10 else 0.5
        )
        return {"layer": 1.0, "chain": 1.0 / gain}

    model, data = low_rank_mlp(hidden=64), random_split()
    cfg = DecomposeParams(rank_rule="energy", finetune=NO_TRAINING)
    report = decompose_model(model, cfg, data.images, data, None, seed=0, log=lambda line: None,
                             measure_latency=measure)
    assert [decision.layer for decision in report.kept] == ["fc2"]
    assert isinstance(model.fc1, nn.Linear) and isinstance(model.fc2, nn.Sequential)


def test_factorized_model_reloads_from_its_artifact(monkeypatch, tmp_path):
    monkeypatch.setitem(ARCHITECTURES, "wide_mlp", WideMLP)
    monkeypatch.setattr(WideMLP.__init__, "__defaults__", (1, 10, 128))
    model = low_rank_mlp(hidden=128)
    model.fc2 = factorize(model.fc2, "svd", [32])
    edits = [factorize_edit("fc2", "svd", [32])]
    recipe = Recipe("wide_mlp", {}, [1, 1, 28, 28], edits=edits)
    images = random_split(8).images
    write_artifact(tmp_path / "model", model, recipe, images, tolerance=1e-3)
    reloaded, loaded_recipe = load_model(tmp_path / "model")
    assert loaded_recipe.edits == edits and isinstance(reloaded.fc2, nn.Sequential)
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(torch.from_numpy(images)), model.eval()(torch.from_numpy(images))
        )
