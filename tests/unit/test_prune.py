"""prune: channels cut correctly across residuals, concatenations and depthwise convs; the pruned
model reloads from its artifact; the stage measures what it claims; bad params are one line."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from slimline.artifact.edits import resize_edits
from slimline.artifact.recipe import Recipe
from slimline.artifact.store import load_model, write_artifact
from slimline.config.params import PruneParams
from slimline.data.splits import Split
from slimline.models.architectures import ARCHITECTURES
from slimline.techniques.channels import output_channels, weight_sparsity
from slimline.techniques.prune import prune_structured, prune_unstructured

NO_TRAINING = {"epochs": 0}


class BranchyNet(nn.Module):
    """A residual addition, a depthwise conv and a concatenation: what breaks naive pruning."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        self.residual = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False),
                                      nn.BatchNorm2d(width))
        self.depthwise = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, groups=width, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        self.branch_a = nn.Conv2d(width, width, 1)
        self.branch_b = nn.Conv2d(width, width // 2, 3, padding=1)
        self.mix = nn.Conv2d(width + width // 2, 2 * width, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.residual(x))
        x = self.depthwise(x)
        x = torch.cat([self.branch_a(x), self.branch_b(x)], 1)
        return self.fc(self.pool(torch.relu(self.mix(x))).flatten(1))


@pytest.fixture()
def branchy(monkeypatch):
    monkeypatch.setitem(ARCHITECTURES, "branchy", BranchyNet)
    torch.manual_seed(0)
    return BranchyNet()


def random_split(count: int = 64, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    return Split(rng.standard_normal((count, 1, 28, 28)).astype(np.float32),
                 rng.integers(0, 10, count).astype(np.int64))


def config(**changes) -> PruneParams:
    return PruneParams(**{"enabled": True, "keep_ratio": 0.5, "channel_multiple": 1,
                          "finetune": NO_TRAINING,
                          "step_finetune": NO_TRAINING,
                          **changes})


def test_pruned_branchy_model_runs_has_expected_channels_and_reloads(branchy, tmp_path):
    data, example = random_split(), torch.zeros(1, 1, 28, 28)
    reference = BranchyNet()
    reference.load_state_dict(branchy.state_dict())
    report = prune_structured(branchy, config(keep_ratio=0.5), example, data, None, seed=0,
                              log=lambda line: None)

    # stem, residual and depthwise share channels (the addition and the depthwise conv tie them);
    # the concatenation's consumer `mix` loses exactly the input slices its two branches lost.
    assert report.channels_after == {"stem.0": 8, "residual.0": 8, "depthwise.0": 8, "branch_a": 8,
                                     "branch_b": 4, "mix": 16, "fc": 10}
    assert branchy.depthwise[0].groups == 8 and branchy.mix.in_channels == 12
    assert branchy.fc.in_features == 16
    assert branchy(torch.randn(3, 1, 28, 28)).shape == (3, 10)

    recipe = Recipe("branchy", {}, [1, 1, 28, 28], edits=resize_edits(reference, branchy))
    write_artifact(tmp_path / "pruned", branchy, recipe, data.images[:4], tolerance=1e-3)
    reloaded, _ = load_model(tmp_path / "pruned")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(torch.from_numpy(data.images)),
                                   branchy.eval()(torch.from_numpy(data.images)))


@pytest.mark.parametrize("importance", ["l1", "l2", "bn_scale", "taylor"])
def test_every_importance_criterion_prunes_to_the_keep_ratio(branchy, importance):
    prune_structured(branchy, config(importance=importance), torch.zeros(1, 1, 28, 28),
                     random_split(), None, seed=0, log=lambda line: None)
    assert output_channels(branchy)["mix"] == 16 and output_channels(branchy)["stem.0"] == 8


def test_global_scope_never_goes_below_the_per_layer_floor(branchy):
    before = output_channels(branchy)
    cfg = config(scope="global", keep_ratio=0.3, min_keep_ratio=0.4, steps=2)
    prune_structured(branchy, cfg, torch.zeros(1, 1, 28, 28), random_split(), None, seed=0,
                     log=lambda line: None)
    after = output_channels(branchy)
    for name in ("stem.0", "branch_a", "branch_b", "mix"):
        assert after[name] >= np.ceil(0.4 * before[name]), (name, after[name])
    assert sum(after.values()) < sum(before.values())


def test_excluded_layer_keeps_its_channels_and_the_log_says_why(branchy):
    lines = []
    prune_structured(branchy, config(exclude=["branch_b"]), torch.zeros(1, 1, 28, 28),
                     random_split(), None, seed=0, log=lines.append)
    assert output_channels(branchy)["branch_b"] == 8
    assert any("branch_b keeps all its channels" in line for line in lines)
    assert any("threshold" in line and "channels" in line for line in lines)


def test_unstructured_pruning_zeroes_weights_but_keeps_every_shape(branchy):
    shapes = {name: p.shape for name, p in branchy.named_parameters()}
    # One real fine-tuning epoch: the mask must hold, so pruned weights stay exactly zero.
    cfg = config(method="unstructured", keep_ratio=0.3, scope="global",
                 finetune={"epochs": 1, "batch_size": 32})
    report = prune_unstructured(branchy, cfg, random_split(), None, seed=0, log=lambda line: None)
    assert {name: p.shape for name, p in branchy.named_parameters()} == shapes
    assert weight_sparsity(branchy) == pytest.approx(0.7, abs=0.01)
    assert report.weight_threshold > 0
