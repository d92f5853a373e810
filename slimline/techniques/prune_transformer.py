"""Structured pruning of a transformer encoder: whole attention heads and FFN neurons.

Torch-Pruning's dependency graph couples each attention layer's query, key and value outputs
with the attention output projection's input, and each FFN's first Linear with its second.
Given every attention projection's head count it ranks and removes whole heads (all of a head's
query/key/value/output slices together), so the head size stays and the model keeps running
through the library's own attention code; FFN neurons are ranked per channel. The hidden width
(embeddings, residual stream, LayerNorms) is left whole: cutting it touches every layer and the
embedding table at once, and an embedding model's output width is its contract.
"""
from __future__ import annotations

import torch
import torch_pruning as tp
from torch import nn

from slimline.config.params import PruneParams
from slimline.data.splits import Split
from slimline.errors import SlimlineError
from slimline.models.huggingface import TextModel, attention_layers
from slimline.techniques.channels import (
    PruneReport,
    check_layer_names,
    make_importance,
    output_channels,
)
from slimline.training.loop import accuracy, cross_entropy, fit


def head_counts(model: nn.Module) -> dict[str, int]:
    """Attention heads per self-attention module, by module name."""
    names = {module: name for name, module in model.named_modules()}
    return {names[module]: module.num_attention_heads for module in attention_layers(model)}


def _sync_head_attributes(model: nn.Module) -> None:
    """After the cut: the attention modules' head bookkeeping follows their projections."""
    for attention in attention_layers(model, linear_only=True):
        attention.all_head_size = attention.query.out_features
        attention.num_attention_heads = attention.all_head_size // attention.attention_head_size


def _embedding_modules(model: nn.Module) -> list[nn.Module]:
    return [module for module in model.modules() if isinstance(module, nn.Embedding)]


def prune_transformer(model: TextModel, config: PruneParams, example: dict[str, torch.Tensor],
                      train: Split, val: Split | None, *, seed: int, log=print,
                      loss_fn=cross_entropy, score=accuracy) -> PruneReport:
    """Keep `head_keep_ratio` of each layer's heads and `keep_ratio` of its FFN neurons (in
    `steps` steps, fine-tuning with `loss_fn` between them and after the last). `score(model,
    split)` is what the log reports: top-1, or an embedding model's fidelity."""
    if config.method != "structured":
        raise SlimlineError("prune.method = unstructured is for Conv/Linear models; a transformer "
                            "is pruned by heads and FFN neurons (method: structured)")
    if config.importance not in ("l1", "l2"):
        raise SlimlineError(
            f"prune.importance = {config.importance} is not allowed for a transformer "
            "(no BatchNorm; use l1 or l2)"
        )
    head_keep = config.head_keep_ratio if config.head_keep_ratio is not None else config.keep_ratio
    attention = attention_layers(model, linear_only=True)
    if not attention:
        raise SlimlineError(f"{type(model.model).__name__}: no self-attention layers with "
                            "query/key/value projections to prune")
    heads_before = head_counts(model)
    num_heads = {projection: layer.num_attention_heads for layer in attention
                 for projection in (layer.query, layer.key, layer.value)}
    ignored = _embedding_modules(model)
    if model.task == "classification":
        ignored.append(_classifier(model))
    report = PruneReport("structured", channels_before=output_channels(model))
    pruner = tp.pruner.BasePruner(
        model, tuple(example.values()), importance=make_importance(config.importance),
        pruning_ratio=1 - config.keep_ratio, iterative_steps=config.steps,
        global_pruning=config.scope == "global", max_pruning_ratio=1 - config.min_keep_ratio,
        round_to=config.channel_multiple if config.channel_multiple > 1 else None,
        num_heads=num_heads, prune_num_heads=True, prune_head_dims=False,
        head_pruning_ratio=1 - head_keep, ignored_layers=ignored + _excluded(model, config),
        output_transform=lambda output: output.sum())
    for step in range(1, config.steps + 1):
        pruner.step()
        _sync_head_attributes(model)
        heads = head_counts(model)
        log(f"prune step {step}/{config.steps}: attention heads per layer "
            f"{list(heads_before.values())} -> {list(heads.values())}")
        if step < config.steps:
            if val is not None:
                log(f"prune step {step}/{config.steps}: val score {score(model, val):.4f} "
                    "before fine-tuning")
            fit(model, train, config.step_finetune, seed=seed + step, loss_fn=loss_fn,
                description=f"prune step {step} fine-tune", log=log)
    report.channels_after = output_channels(model)
    for name, before in heads_before.items():
        log(f"prune: {name}: {before} -> {head_counts(model)[name]} heads")
    if val is not None:
        report.val_top1_pruned = score(model, val)
    fit(model, train, config.finetune, seed=seed, loss_fn=loss_fn, description="prune fine-tune",
        log=log)
    return report


def _classifier(model: TextModel) -> nn.Module:
    """The Linear producing the class logits (its outputs are the classes: never cut)."""
    head = getattr(model.model, "classifier", None)
    if isinstance(head, nn.Linear):
        return head
    linears = [module for module in head.modules() if isinstance(module, nn.Linear)] if head else []
    if not linears:
        raise SlimlineError(f"{type(model.model).__name__}: no classifier Linear found")
    return linears[-1]


def _excluded(model: nn.Module, config: PruneParams) -> list[nn.Module]:
    check_layer_names(model, config.exclude, "params.yaml: prune.exclude")
    return [model.get_submodule(name) for name in config.exclude]

