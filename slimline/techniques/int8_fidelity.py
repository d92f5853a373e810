"""Static int8 that keeps fidelity on depthwise networks: cross-layer equalization before
calibration (equalize.py), empirical bias correction after it (bias_correction.py) and the
layers adding the most int8 error (layer_error.py) left in fp32 within a MACs budget, each
kept only where it measures more faithful to fp32 on calibration examples (`auto`).

Measured on EfficientNet-Lite0 (ImageNet weights, 224 px, 435 crops of real photos, docs/
techniques.md): bias correction took top-1 agreement with fp32 from 0.789 to 0.899 and KL from
0.078 to 0.025; equalization found only 2 exact pairs there (every depthwise pair passes a
ReLU6) and did not help, and AIMET's ReLU6 -> ReLU broke the fp32 model itself.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import onnx

from slimline.config.params import QuantizeParams
from slimline.data.splits import Inputs, Split
from slimline.measure.graph import macs_by_node
from slimline.techniques.bias_correction import correct_biases
from slimline.techniques.equalize import equalize
from slimline.techniques.layer_error import LayerError, layer_errors

# Calibration examples the bias shifts and the per-layer errors are measured on: one run per
# layer each (32 at 224 px: 15 s for Lite0's 50 layers on one core).
LAYER_EXAMPLES = 32


@dataclass
class FidelityChoice:
    quantized: onnx.ModelProto
    reference: onnx.ModelProto     # the fp32 graph it was quantized from (equalized or not)
    settings: dict = field(default_factory=dict)
    layers: list[LayerError] = field(default_factory=list)


def _keep(mode: str, candidate: float, current: float) -> bool:
    return mode == "on" or candidate > current


def faithful_static_int8(prepared: onnx.ModelProto, quantized: onnx.ModelProto,
                         calibration: Split, config: QuantizeParams, *,
                         requantize: Callable[..., onnx.ModelProto],
                         fidelity_of: Callable[[onnx.ModelProto], float],
                         log=print) -> FidelityChoice:
    """From the plain static QDQ graph `quantized` of `prepared`: equalize and bias-correct as
    `config` says, then leave the layers adding the most error in fp32 where that is more
    faithful. `requantize(graph, fp32_nodes=())`: the same static int8 of another fp32 graph;
    `fidelity_of`: an int8 graph's fidelity to `prepared` (the original fp32: a replaced ReLU6
    counts as error)."""
    layer_inputs = calibration.head(min(len(calibration), LAYER_EXAMPLES))
    choice = FidelityChoice(quantized, prepared)

    def judged(candidate, key: str, step: str, keep, why_not: str) -> tuple[bool, float]:
        """(kept, fidelity) of one step's candidate graph, recorded and logged."""
        fidelity = fidelity_of(candidate)
        kept = keep(fidelity)
        choice.settings[key] = fidelity
        log(f"{step}: fidelity {fidelity:.4f} -> {'kept' if kept else f'not kept ({why_not})'}")
        return kept, fidelity

    score = fidelity_of(quantized)
    choice.settings["fidelity_plain"] = score
    log(f"static int8, plain: fidelity to fp32 {score:.4f}")
    equalized, report = (equalize(prepared, replace_relu6=config.equalize_relu6)
                         if config.equalize != "off" else (None, None))
    if report is not None and not report.pairs:
        log("cross-layer equalization: no conv pairs to equalize")
    elif report is not None:
        candidate = requantize(equalized)
        kept, fidelity = judged(candidate, "fidelity_equalized", report.describe(),
                                lambda value: _keep(config.equalize, value, score),
                                "plain is as faithful")
        if kept:
            choice.quantized, choice.reference, score = candidate, equalized, fidelity
    choice.settings["equalized"] = choice.reference is not prepared
    if config.bias_correction != "off":
        candidate, report = correct_biases(choice.reference, choice.quantized, layer_inputs)
        kept, fidelity = judged(candidate, "fidelity_bias_corrected", report.describe(),
                                lambda value: _keep(config.bias_correction, value, score),
                                "no more faithful")
        if kept:
            choice.quantized, score = candidate, fidelity
        choice.settings["bias_corrected"] = kept
    choice.layers = layer_errors(choice.reference, choice.quantized, layer_inputs)
    fp32_nodes = sensitive_layers(choice.reference, choice.layers, config, layer_inputs)
    if fp32_nodes:
        candidate = requantize(choice.reference, fp32_nodes=fp32_nodes)
        if choice.settings.get("bias_corrected"):
            candidate, _ = correct_biases(choice.reference, candidate, layer_inputs)
        # fp32 layers cost speed and size: a logit-cosine tie-break (< 0.001) does not pay that
        kept, fidelity = judged(
            candidate, "fidelity_fp32_layers",
            f"left in fp32 (adding the most int8 error): {', '.join(fp32_nodes)}",
            lambda value: value > score + 1e-3, "no more faithful")
        if kept:
            choice.quantized, score = candidate, fidelity
            choice.layers = layer_errors(choice.reference, candidate, layer_inputs)
            choice.settings["fp32_layers"] = list(fp32_nodes)
    choice.settings["fidelity_shipped"] = score
    return choice


def sensitive_layers(reference: onnx.ModelProto, layers: list[LayerError],
                     config: QuantizeParams, example: Inputs) -> tuple[str, ...]:
    """Up to config.fp32_layers layers, most added int8 error first, that together hold at
    most config.fp32_max_macs_share of the model's MACs."""
    if config.fp32_layers == 0 or not layers:
        return ()
    macs = {name: count for name, (_, count) in macs_by_node(reference, example).items()}
    budget = config.fp32_max_macs_share * sum(macs.values())
    chosen, spent = [], 0
    for row in sorted(layers, key=lambda row: row.own_sqnr_db):
        cost = macs.get(row.name)
        if len(chosen) == config.fp32_layers:
            break
        if cost is not None and spent + cost <= budget:
            chosen.append(row.name)
            spent += cost
    return tuple(chosen)
