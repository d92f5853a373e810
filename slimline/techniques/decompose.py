"""Low-rank decomposition: each Linear / Conv2d becomes a chain of thinner layers, but only
where ONNX Runtime measures it faster. Config + model + data in, model (edited) + report out.

Fewer MACs is not the same as faster: a 3x3 conv split into 1x1 -> 3x3 -> 1x1 runs three kernels,
each with its own memory traffic and launch cost, and on this machine Tucker-2 of a small
ResNet's 3x3 convs at half the parameters ran 0.90x. So every candidate is timed:

1. per layer, alone: the original layer and its factorized chain are timed side by side by the
   `measure_latency` the caller passes (the stage passes ONNX Runtime's, batch 1, interleaved:
   slimline/measure/module_latency.py) on the input shape the layer really sees. A layer alone is
   the only measurement precise enough to see a gain worth 2% of the whole model;
2. the whole model, with all accepted layers, against the original: if interactions (fusions
   lost, cache effects) make it slower, the accepted layer with the smallest gain is reverted
   until it is not, so the stage never makes a model slower.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from slimline.config.params import DecomposeParams
from slimline.data.splits import Inputs, Split
from slimline.errors import SlimlineError
from slimline.techniques.lowrank import factorizable, factorize, max_rank, method_for
from slimline.training.loop import (
    TensorInputs,
    accuracy,
    cross_entropy,
    fit,
    forward,
    parameter_count,
    to_tensors,
)

# p50 latency (ms) of each named module on the named example inputs, measured side by side.
LatencyMeasurer = Callable[[dict[str, nn.Module], TensorInputs], dict[str, float]]


@dataclass
class LayerDecision:
    layer: str
    shape: str                       # e.g. "Conv2d 3x3 64->128" or "Linear 256->10"
    method: str | None = None
    ranks: list[int] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    relative_error: float | None = (
        None  # ||y - y_lowrank|| / ||y|| on real inputs, before fine-tuning
    )
    latency_ms_before: float | None = None
    latency_ms_after: float | None = None
    kept: bool = False
    reason: str = ""

    @property
    def speedup(self) -> float | None:
        if self.latency_ms_before is None:
            return None
        return self.latency_ms_before / self.latency_ms_after


@dataclass
class DecomposeReport:
    layers: list[LayerDecision] = field(default_factory=list)
    whole_latency_ms_before: float | None = None
    whole_latency_ms_after: float | None = None
    val_top1_factorized: float | None = None      # before fine-tuning

    @property
    def kept(self) -> list[LayerDecision]:
        return [decision for decision in self.layers if decision.kept]


def energy_rank(singular_values: torch.Tensor, energy: float) -> int:
    """Smallest rank whose singular values hold `energy` of the total squared energy."""
    squared = singular_values.double() ** 2
    kept = torch.cumsum(squared, 0) / squared.sum()
    return int(torch.searchsorted(kept, torch.tensor(energy, dtype=kept.dtype) - 1e-12)) + 1


def _mode_singular_values(weight: torch.Tensor, mode: int) -> torch.Tensor:
    unfolded = weight.movedim(mode, 0).flatten(1)
    return torch.linalg.svdvals(unfolded.double())


def _describe(layer: nn.Module) -> str:
    if isinstance(layer, nn.Linear):
        return f"Linear {layer.in_features}->{layer.out_features}"
    kernel = "x".join(str(k) for k in layer.kernel_size)
    return f"{type(layer).__name__} {kernel} {layer.in_channels}->{layer.out_channels}"


def _params_of(layer: nn.Module, method: str, ranks: list[int]) -> int:
    """Parameters of the factorized chain (closed form: rank searches call this a lot)."""
    bias = 0 if layer.bias is None else layer.bias.numel()
    out_channels, in_channels = layer.weight.shape[:2]
    if method == "svd":
        return ranks[0] * (in_channels + out_channels) + bias
    kernel_h, kernel_w = layer.kernel_size
    if method == "tucker2":
        rank_out, rank_in = ranks
        return (
            in_channels * rank_in
            + rank_in * rank_out * kernel_h * kernel_w
            + rank_out * out_channels
            + bias
        )
    return ranks[0] * (in_channels + kernel_h + kernel_w + out_channels) + bias


def rule_ranks(layer: nn.Module, method: str, config: DecomposeParams) -> list[int]:
    """Ranks from the energy threshold or the parameter-reduction target."""
    weight = layer.weight.detach()
    if config.rank_rule == "energy":
        if method == "svd":
            return [energy_rank(torch.linalg.svdvals(weight.flatten(1).double()), config.energy)]
        ranks = [energy_rank(_mode_singular_values(weight, mode), config.energy) for mode in (0, 1)]
        # CP has no closed-form energy; the larger Tucker mode rank is the usual starting point.
        return ranks if method == "tucker2" else [max(ranks)]
    budget = (1 - config.param_reduction) * parameter_count(layer)
    if method in ("svd", "cp"):
        per_rank = _params_of(layer, method, [1]) - _params_of(layer, method, [0])
        fixed = _params_of(layer, method, [0])
        return [int(max(1, min(max_rank(layer, method), (budget - fixed) // per_rank)))]
    # Tucker-2: shrink both channel modes by the same fraction until the chain fits the budget.
    out_channels, in_channels = weight.shape[:2]
    best = [1, 1]
    for step in range(1, max(out_channels, in_channels) + 1):
        fraction = step / max(out_channels, in_channels)
        ranks = [max(1, round(fraction * out_channels)), max(1, round(fraction * in_channels))]
        if _params_of(layer, method, ranks) > budget:
            break
        best = ranks
    return best


def check_config(model: nn.Module, config: DecomposeParams, source: str) -> None:
    """Names that are not layers, and ranks a layer cannot have, stop with one line each."""
    modules = dict(model.named_modules())
    for key, names in (("exclude", config.exclude), ("ranks", list(config.ranks))):
        for name in names:
            if name not in modules or not name:
                examples = ", ".join(n for n, m in model.named_modules()
                                     if isinstance(m, (nn.Linear, nn.Conv2d)))
                raise SlimlineError(
                    f"{source}: decompose.{key} names layer '{name}', which is not in "
                    f"the model (layers: {examples[:300]})"
                )
    for name, rank in config.ranks.items():
        layer = modules[name]
        reason = factorizable(layer)
        if reason:
            raise SlimlineError(
                f"{source}: decompose.ranks.{name} = {rank} is not allowed: {reason}"
            )
        method = method_for(layer, config.conv_method)
        if method == "none":
            continue
        limit = max_rank(layer, method)
        if rank > limit:
            raise SlimlineError(
                f"{source}: decompose.ranks.{name} = {rank} is not allowed: larger "
                f"than the layer ({_describe(layer)} has full {method} rank {limit})"
            )


def _layer_inputs(
    model: nn.Module, names: list[str], samples: TensorInputs
) -> dict[str, torch.Tensor]:
    captured, hooks = {}, []
    for name in names:
        def hook(module, inputs, output, name=name):
            captured[name] = inputs[0].detach()
        hooks.append(model.get_submodule(name).register_forward_hook(hook))
    try:
        with torch.no_grad():
            forward(model.eval(), samples)
    finally:
        for handle in hooks:
            handle.remove()
    return captured


@torch.no_grad()
def _relative_error(layer: nn.Module, chain: nn.Module, inputs: torch.Tensor) -> float:
    expected = layer.eval()(inputs)
    return float((chain.eval()(inputs) - expected).norm() / expected.norm().clamp_min(1e-12))


def _decide(name: str, layer: nn.Module, inputs: torch.Tensor, config: DecomposeParams,
            seed: int, measure_latency: LatencyMeasurer) -> tuple[LayerDecision, nn.Module | None]:
    decision = LayerDecision(name, _describe(layer), params_before=parameter_count(layer))
    reason = factorizable(layer)
    if reason:
        decision.reason = reason
        return decision, None
    if name in config.exclude:
        decision.reason = "excluded (decompose.exclude)"
        return decision, None
    method = method_for(layer, config.conv_method)
    if isinstance(layer, nn.Linear) and config.linear_method == "none":
        method = "none"
    if method == "none":
        decision.reason = "method is none for this layer type"
        return decision, None
    explicit = name in config.ranks
    decision.method = method
    if explicit:
        rank = config.ranks[name]
        decision.ranks = [rank, rank] if method == "tucker2" else [rank]
    else:
        decision.ranks = rule_ranks(layer, method, config)
    decision.params_after = _params_of(layer, method, decision.ranks)
    if decision.params_after >= decision.params_before and not explicit:
        decision.reason = (f"rank {decision.ranks} would not save parameters "
                           f"({decision.params_after} >= {decision.params_before})")
        return decision, None
    chain = factorize(layer, method, decision.ranks, seed=seed)
    decision.relative_error = _relative_error(layer, chain, inputs)
    p50 = measure_latency({"layer": layer, "chain": chain}, {"input": inputs[:1]})
    decision.latency_ms_before, decision.latency_ms_after = p50["layer"], p50["chain"]
    gain = p50["layer"] / p50["chain"]
    decision.kept = gain >= config.min_speedup
    decision.reason = (f"faster ({gain:.2f}x >= {config.min_speedup:g}x)" if decision.kept else
                       f"not faster enough in ONNX Runtime ({gain:.2f}x < {config.min_speedup:g}x)")
    return decision, chain


def decompose_model(model: nn.Module, config: DecomposeParams, samples: Inputs, train: Split,
                    val: Split | None, *, seed: int, measure_latency: LatencyMeasurer, log=print,
                    loss_fn=cross_entropy, score=accuracy) -> DecomposeReport:
    """Factorize the layers that `measure_latency` finds faster, check the whole model, fine-tune
    if changed (with `loss_fn`; `score(model, split)` is the quality the report records).

    `samples`: named inputs whose activations measure each layer's error and latency."""
    report = DecomposeReport()
    names = [
        name for name, module in model.named_modules() if isinstance(module, (nn.Linear, nn.Conv2d))
    ]
    samples = to_tensors(samples)  # a bare array is the one image input
    inputs = _layer_inputs(model, names, samples)
    original = copy.deepcopy(model).eval()
    chains = {}
    for name in names:
        if name not in inputs:  # defined but never run by forward()
            report.layers.append(LayerDecision(name, _describe(model.get_submodule(name)),
                                               reason="not used by forward()"))
            continue
        decision, chain = _decide(name, model.get_submodule(name), inputs[name], config, seed,
                                  measure_latency)
        report.layers.append(decision)
        if decision.kept:
            chains[name] = chain
        _log_decision(decision, log)

    for name, chain in chains.items():
        model.set_submodule(name, chain)
    example = {name: tensor[:1] for name, tensor in samples.items()}
    while report.kept:
        p50 = measure_latency({"original": original, "factorized": model}, example)
        report.whole_latency_ms_before, report.whole_latency_ms_after = (
            p50["original"],
            p50["factorized"],
        )
        if p50["factorized"] <= p50["original"]:
            break
        weakest = min(report.kept, key=lambda d: d.speedup)
        model.set_submodule(weakest.layer, copy.deepcopy(original.get_submodule(weakest.layer)))
        weakest.kept = False
        weakest.reason = (f"reverted: whole model measured slower ({p50['original']:.3f} ms -> "
                          f"{p50['factorized']:.3f} ms) and this layer had the smallest gain")
        log(f"decompose: {weakest.layer}: {weakest.reason}")
    if report.kept:
        log(f"decompose: whole model p50 {report.whole_latency_ms_before:.3f} ms -> "
            f"{report.whole_latency_ms_after:.3f} ms with {len(report.kept)} layer(s) factorized")
        if val is not None:
            report.val_top1_factorized = score(model, val)
        fit(
            model,
            train,
            config.finetune,
            seed=seed,
            loss_fn=loss_fn,
            description="decompose fine-tune",
            log=log,
        )
    else:
        log(
            "decompose: no layer measured faster factorized; the model is unchanged "
            "(no fine-tuning)"
        )
    return report


def _log_decision(decision: LayerDecision, log) -> None:
    if decision.method is None or decision.relative_error is None:
        log(f"decompose: {decision.layer} ({decision.shape}): left alone: {decision.reason}")
        return
    verdict = "FACTORIZED" if decision.kept else "left alone"
    log(f"decompose: {decision.layer} ({decision.shape}): {decision.method} rank {decision.ranks}, "
        f"params {decision.params_before} -> {decision.params_after}, output error "
        f"{decision.relative_error:.3f}, ONNX Runtime {decision.latency_ms_before:.4f} -> "
        f"{decision.latency_ms_after:.4f} ms: {verdict}: {decision.reason}")
