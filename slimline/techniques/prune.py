"""Pruning: structured channel pruning on Torch-Pruning's dependency graph, or unstructured
magnitude pruning. Config + model + data in, the same model (edited in place) + a report out.

Structured pruning removes whole channels, so tensors really shrink and ONNX Runtime really runs
less work. Torch-Pruning's DependencyGraph finds which layers must lose the same channels
together (a residual addition couples both branches, a concatenation maps slices of its output to
its inputs, a depthwise convolution follows its producer, BatchNorm follows its conv). We use it
for grouping, importance and the surgery, and choose how many channels each group keeps here:
that is what lets us guarantee a per-layer floor in global scope and log every threshold.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from slimline.config.params import PruneParams
from slimline.data.splits import Split
from slimline.errors import SlimlineError
from slimline.techniques.channels import (
    PRUNABLE,
    GroupCut,
    PruneReport,
    make_importance,
    output_channels,
)
from slimline.training.loop import (
    TensorInputs,
    accuracy,
    as_tensor_inputs,
    cross_entropy,
    fit,
    forward,
    to_tensors,
)


def classifier_head(model: nn.Module, example: TensorInputs) -> str:
    """The layer whose output is the model's output: its output channels are the classes."""
    produced, order = {}, []
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, PRUNABLE):
            def hook(module, inputs, output, name=name):
                produced[id(output)] = name
                order.append(name)
            hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            output = forward(model.eval(), example)
    finally:
        for handle in hooks:
            handle.remove()
    if id(output) in produced:
        return produced[id(output)]
    if not order:
        raise SlimlineError("model has no Conv2d or Linear layer to prune")
    return order[-1]  # e.g. a head followed by a reshape: the last layer run is the head


def _accumulate_gradients(model: nn.Module, data: Split, batches: int, seed: int) -> None:
    """Loss gradients over a few training batches, for the Taylor criterion (weight x grad).

    Eval mode: BatchNorm uses its running statistics and is not updated by this probe.
    """
    model.eval()
    model.zero_grad(set_to_none=True)
    order = np.random.default_rng(seed).permutation(len(data))
    batch_size = 64
    for index in range(min(batches, -(-len(data) // batch_size))):
        rows = order[index * batch_size:(index + 1) * batch_size]
        batch = data.subset(rows)
        cross_entropy(model, to_tensors(batch.inputs), torch.from_numpy(batch.labels)).backward()


def _kept_count(initial: int, keep_fraction: float, multiple: int, floor: int) -> int:
    kept = max(round(initial * keep_fraction), floor, 1)
    if multiple > 1:
        kept = max(multiple, int(math.ceil(kept / multiple)) * multiple)
    return min(kept, initial)


@dataclass
class _Group:
    group: tp.dependency.Group
    root: nn.Module
    name: str
    coupled: list[str]
    channel_groups: int
    scores: torch.Tensor   # one score per channel (per channel slot when channel_groups > 1)
    initial: int           # slots at the start, before any step
    criterion: str


class _StructuredPruner:
    def __init__(self, model: nn.Module, config: PruneParams, example: TensorInputs, head: str):
        self.model, self.config = model, config
        self.names = {module: name for name, module in model.named_modules()}
        ignored = [model.get_submodule(name) for name in {head, *config.exclude}]
        # BasePruner builds the DependencyGraph and detects grouped convolutions; its own
        # ranking is not used (see the module docstring).
        # A tuple of example inputs: Torch-Pruning traces model(*example), the forward() order.
        self.pruner = tp.pruner.BasePruner(model, tuple(example.values()),
                                           make_importance(config.importance),
                                           ignored_layers=ignored, pruning_ratio=0.0)
        self.graph = self.pruner.DG
        # A group without BatchNorm (a plain conv feeding a concat, say) has no BN scale to rank
        # by: it is ranked by filter L1 instead, and the log says so.
        self.fallback = make_importance("l1")
        self.initial: dict[nn.Module, int] = {}

    def frozen_layers(self) -> dict[str, str]:
        """Layers whose output channels no group will cut, and why (excluded, head, coupled)."""
        cut = {dep.target.module for group in self._raw_groups() for dep, _ in group
               if self.graph.is_out_channel_pruning_fn(dep.handler)}
        ignored = set(self.pruner.ignored_layers)
        frozen = {}
        for name, module in self.model.named_modules():
            if isinstance(module, PRUNABLE) and module not in cut:
                if module in ignored:
                    frozen[name] = "excluded (classifier head or prune.exclude)"
                else:
                    frozen[name] = "shares its channels with an excluded layer"
        return frozen

    def _raw_groups(self):
        return self.graph.get_all_groups(ignored_layers=self.pruner.ignored_layers,
                                         root_module_types=self.pruner.root_module_types)

    def _groups(self) -> list[_Group]:
        groups = []
        for group in self._raw_groups():
            criterion, scores = self.config.importance, self.pruner.estimate_importance(group)
            if scores is None:
                criterion, scores = "l1", self.fallback(group)
            if scores is None:
                continue
            channel_groups = self.pruner._get_channel_groups(group)
            if channel_groups > 1:  # grouped conv: cut the same slot in every channel group
                scores = scores.view(channel_groups, -1).mean(0)
            root = group[0].dep.target.module
            self.initial.setdefault(root, len(scores))
            coupled = sorted({self.names[dep.target.module] for dep, _ in group
                              if self.graph.is_out_channel_pruning_fn(dep.handler)
                              and dep.target.module is not root
                              and isinstance(dep.target.module, PRUNABLE)})
            groups.append(_Group(group, root, self.names[root], coupled, channel_groups,
                                 scores.detach().float().cpu(), self.initial[root], criterion))
        return groups

    def _targets(self, groups: list[_Group], keep_fraction: float) -> list[int]:
        """How many channel slots each group keeps after this step."""
        config = self.config
        if config.scope == "per_layer":
            return [_kept_count(g.initial, keep_fraction, config.channel_multiple,
                                math.ceil(g.initial * config.min_keep_ratio)) for g in groups]
        # Global: one ranking over all groups (scores are mean-normalised per group by
        # Torch-Pruning, so they are comparable), lowest first, never below a group's floor.
        floors = [max(1, math.ceil(g.initial * config.min_keep_ratio)) for g in groups]
        kept = [len(g.scores) for g in groups]
        to_remove = sum(kept) - round(sum(g.initial for g in groups) * keep_fraction)
        ranking = sorted((float(score), index) for index, g in enumerate(groups)
                         for score in g.scores)
        for _, index in ranking:
            if to_remove <= 0:
                break
            if kept[index] > floors[index]:
                kept[index] -= 1
                to_remove -= 1
        return [_kept_count(k, 1.0, config.channel_multiple, floor)
                if config.channel_multiple > 1 else k for k, floor in zip(kept, floors)]

    def step(self, keep_fraction: float, step: int) -> list[GroupCut]:
        groups = self._groups()
        cuts = []
        for g, keep in zip(groups, self._targets(groups, keep_fraction)):
            slots = len(g.scores)
            if keep >= slots:
                continue
            order = torch.argsort(g.scores)
            removed, lowest_kept = order[:slots - keep], float(g.scores[order[slots - keep]])
            size = slots
            indices = torch.cat([removed + offset * size for offset in range(g.channel_groups)])
            handler = g.group[0].dep.handler
            surgery = self.graph.get_pruning_group(g.root, handler, sorted(indices.tolist()))
            if not self.graph.check_pruning_group(surgery):
                continue
            surgery.prune()
            cuts.append(
                GroupCut(
                    step,
                    g.name,
                    g.coupled,
                    slots * g.channel_groups,
                    keep * g.channel_groups,
                    float(g.scores[removed].max()),
                    lowest_kept,
                    g.criterion,
                )
            )
        return cuts


def prune_structured(model: nn.Module, config: PruneParams, example: TensorInputs, train: Split,
                     val: Split | None, *, seed: int, log=print) -> PruneReport:
    """Cut channels in `config.steps` steps to `config.keep_ratio`, fine-tuning between and
    after."""
    example = as_tensor_inputs(example)
    head = classifier_head(model, example)
    report = PruneReport("structured", channels_before=output_channels(model))
    pruner = _StructuredPruner(model, config, example, head)
    report.frozen = pruner.frozen_layers()
    for name, reason in report.frozen.items():
        log(f"prune: {name} keeps all its channels: {reason}")
    for step in range(1, config.steps + 1):
        keep_fraction = 1 - (1 - config.keep_ratio) * step / config.steps
        if config.importance == "taylor":
            _accumulate_gradients(model, train, config.taylor_batches, seed + step)
        cuts = pruner.step(keep_fraction, step)
        model.zero_grad(set_to_none=True)
        for cut in cuts:
            partners = f" (with {', '.join(cut.coupled)})" if cut.coupled else ""
            log(f"prune step {step}/{config.steps}: {cut.layer}{partners}: {cut.before} -> "
                f"{cut.after} channels, {cut.criterion} threshold {cut.threshold:.4g} "
                f"(lowest kept {cut.lowest_kept:.4g})")
        report.cuts.extend(cuts)
        if step < config.steps:
            if val is not None:
                log(
                    f"prune step {step}/{config.steps}: "
                    f"val top-1 {100 * accuracy(model, val):.2f}% "
                    "before fine-tuning"
                )
            fit(model, train, config.step_finetune, seed=seed + step,
                description=f"prune step {step} fine-tune", log=log)
    report.channels_after = output_channels(model)
    if val is not None:
        report.val_top1_pruned = accuracy(model, val)
    fit(model, train, config.finetune, seed=seed, description="prune fine-tune", log=log)
    return report


def prune_unstructured(model: nn.Module, config: PruneParams, train: Split, val: Split | None, *,
                       seed: int, log=print) -> PruneReport:
    """Zero the smallest-magnitude weights (global or per layer), fine-tune with the mask held.

    Shapes do not change: this buys sparsity (a smaller compressed file), not speed.
    """
    from torch.nn.utils import prune as torch_prune

    excluded = set(config.exclude)
    layers = [(name, module) for name, module in model.named_modules()
              if isinstance(module, PRUNABLE) and name not in excluded]
    amount = 1 - config.keep_ratio
    if config.scope == "global":
        magnitudes = torch.cat([module.weight.detach().abs().flatten() for _, module in layers])
        removed = int(round(amount * magnitudes.numel()))
        threshold = float(magnitudes.kthvalue(removed).values) if removed else 0.0
        torch_prune.global_unstructured([(module, "weight") for _, module in layers],
                                        pruning_method=torch_prune.L1Unstructured, amount=amount)
    else:
        threshold = None
        for _, module in layers:
            torch_prune.l1_unstructured(module, "weight", amount=amount)
    report = PruneReport("unstructured", channels_before=output_channels(model),
                         weight_threshold=threshold)
    if val is not None:
        report.val_top1_pruned = accuracy(model, val)
    # The mask stays attached during fine-tuning (weight = weight_orig * mask), so zeros stay zero.
    fit(model, train, config.finetune, seed=seed, description="prune fine-tune", log=log)
    for name, module in layers:
        torch_prune.remove(module, "weight")
        report.sparsity[name] = float((module.weight == 0).float().mean())
        log(f"prune: {name}: {100 * report.sparsity[name]:.1f}% of {module.weight.numel()} weights "
            f"zero" + (f" (|w| threshold {threshold:.4g})" if threshold is not None else ""))
    report.channels_after = output_channels(model)
    return report


def prune_model(model: nn.Module, config: PruneParams, example: TensorInputs, train: Split,
                val: Split | None, *, seed: int, log=print, loss_fn=cross_entropy,
                score=accuracy) -> PruneReport:
    """What `config` asks for, on whatever the model is: a transformer loses attention heads and
    FFN neurons (techniques/prune_transformer.py, fine-tuned with `loss_fn`, reported by
    `score`), a convnet whole channels (structured) or its smallest weights (unstructured)."""
    from slimline.models.huggingface import TextModel

    if isinstance(model, TextModel):
        from slimline.techniques.prune_transformer import prune_transformer

        return prune_transformer(model, config, example, train, val, seed=seed, log=log,
                                 loss_fn=loss_fn, score=score)
    if config.method == "structured":
        return prune_structured(model, config, example, train, val, seed=seed, log=log)
    return prune_unstructured(model, config, train, val, seed=seed, log=log)
