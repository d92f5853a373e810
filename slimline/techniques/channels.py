"""What pruning shares across architectures (convnets in prune.py, transformers in
prune_transformer.py): which layers are prunable, their output channels, the importance
criteria, layer names from params, and the report a pruning run returns."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch_pruning as tp
from torch import nn

from slimline.errors import SlimlineError

PRUNABLE = (nn.Conv2d, nn.Linear)


@dataclass
class GroupCut:
    """One dependency group's channel cut in one step (the unit the log reports)."""
    step: int
    layer: str                    # root layer of the group
    coupled: list[str]            # other layers losing the same output channels
    before: int
    after: int
    threshold: float | None       # largest importance removed (None: nothing removed)
    lowest_kept: float
    criterion: str                # the importance that ranked this group


@dataclass
class PruneReport:
    method: str
    cuts: list[GroupCut] = field(default_factory=list)
    frozen: dict[str, str] = field(default_factory=dict)          # layer -> why left whole
    channels_before: dict[str, int] = field(default_factory=dict)  # output channels per layer
    channels_after: dict[str, int] = field(default_factory=dict)
    sparsity: dict[str, float] = field(default_factory=dict)       # unstructured: zero fraction
    weight_threshold: float | None = None                          # unstructured: |w| cut
    val_top1_pruned: float | None = None                           # before the final fine-tuning


def layer_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, PRUNABLE)]


def check_layer_names(model: nn.Module, names, key: str) -> None:
    """Stop with one line if a configured layer name is not a module of this model."""
    known = dict(model.named_modules())
    for name in names:
        if name not in known or not name:
            examples = ", ".join(layer_names(model)[:6])
            raise SlimlineError(f"{key} = {name!r} is not allowed: the model has no layer of that "
                                f"name (layers are named like: {examples}, ...)")


def output_channels(model: nn.Module) -> dict[str, int]:
    return {name: (module.out_channels if isinstance(module, nn.Conv2d) else module.out_features)
            for name, module in model.named_modules() if isinstance(module, PRUNABLE)}


def make_importance(criterion: str) -> tp.importance.Importance:
    if criterion == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if criterion == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if criterion == "bn_scale":
        return tp.importance.BNScaleImportance()
    if criterion == "taylor":
        return tp.importance.GroupTaylorImportance()
    raise SlimlineError(f"unknown importance criterion '{criterion}'")


def weight_sparsity(model: nn.Module) -> float:
    """Fraction of Conv/Linear weights that are exactly zero."""
    weights = [m.weight.detach() for m in model.modules() if isinstance(m, PRUNABLE)]
    return float(sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights))
