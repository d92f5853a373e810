"""Cross-layer equalization (Nagel et al. 2019, as AIMET does it) on an fp32 ONNX graph whose
BatchNorms are folded into the convolutions (quantize.py: prepare_for_quantization).

Two consecutive convolutions with only a ReLU (or nothing) between them compute the same
function when output channel i of the first is divided by s_i and input channel i of the second
multiplied by s_i (ReLU(x / s) = ReLU(x) / s for s > 0). Choosing s_i = sqrt(r1_i / r2_i), with
r the channel's largest |weight| on each side, gives both the same per-channel range, so one
int8 scale per tensor fits every channel. That is what a depthwise network needs: its depthwise
channels' ranges spread over orders of magnitude, which per-tensor int8 weights and activations
cannot hold (MobileNetV2's known failure).

ReLU6 is not scale-equivariant (min(x / s, 6) != min(x, 6) / s). AIMET replaces it with ReLU
before equalizing (`replace_relu6`): a value that ReLU6 clipped at 6 now passes. That changes the
fp32 function, and on EfficientNet-Lite0 it broke it (ReLU6 -> ReLU alone, no rescaling: top-1
agreement with the original 0.29 on real photos), so the alternative equalizes only the pairs
with a plain ReLU or nothing between them, which is exact. The caller measures both against
the plain graph and keeps what is more faithful (quantize.equalize: auto).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

# Passes over the chain of pairs: a depthwise conv sits in two pairs (expand -> depthwise,
# depthwise -> project), and equalizing one moves the other; AIMET iterates until the scales
# settle, which on MobileNet-style blocks takes a handful of passes.
PASSES = 8
# Channels whose weights are all (near) zero on one side are left alone (no finite scale).
EPSILON = 1e-12


@dataclass
class EqualizationReport:
    pairs: list[tuple[str, str]]
    relu6_replaced: int
    # largest / smallest per-channel weight range of the first conv of each pair, before -> after
    spread_before: float
    spread_after: float

    def describe(self) -> str:
        return (f"cross-layer equalization: {len(self.pairs)} conv pairs, {self.relu6_replaced} "
                f"ReLU6 replaced by ReLU; worst "
                f"per-channel weight range spread {self.spread_before:.3g}x -> "
                f"{self.spread_after:.3g}x")


def _attribute(node: onnx.NodeProto, name: str, default):
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name),
                default)


def _is_relu6(node: onnx.NodeProto, constants: dict[str, np.ndarray]) -> bool:
    bounds = [constants.get(name) for name in node.input[1:3]]
    return (node.op_type == "Clip" and len(node.input) == 3
            and all(bound is not None and bound.size == 1 for bound in bounds)
            and float(bounds[0]) == 0.0 and float(bounds[1]) == 6.0)


def equalization_pairs(model: onnx.ModelProto, through_relu6: bool = True,
                       ) -> list[tuple[onnx.NodeProto, onnx.NodeProto, onnx.NodeProto | None]]:
    """(first conv, second conv, activation between or None): consecutive convolutions where
    the first's output reaches only the second, through at most one ReLU (or ReLU6, if
    `through_relu6`), and the second is a full or a depthwise convolution (so its input channel
    i meets only channel i)."""
    constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {value.name for value in model.graph.output}

    def only_consumer(tensor: str) -> onnx.NodeProto | None:
        users = consumers.get(tensor, [])
        return users[0] if len(users) == 1 and tensor not in graph_outputs else None

    pairs = []
    for first in model.graph.node:
        if first.op_type != "Conv" or first.input[1] not in constants:
            continue
        activation = only_consumer(first.output[0])
        second = activation
        if activation is not None and (activation.op_type == "Relu" or (
                through_relu6 and _is_relu6(activation, constants))):
            second = only_consumer(activation.output[0])
        else:
            activation = None
        if second is None or second.op_type != "Conv" or second.input[1] not in constants:
            continue
        channels = constants[first.input[1]].shape[0]
        groups = _attribute(second, "group", 1)
        if groups in (1, channels) and second.input[0] == (activation or first).output[0]:
            pairs.append((first, second, activation))
    return pairs


def _first_ranges(weight: np.ndarray) -> np.ndarray:
    return np.abs(weight).reshape(weight.shape[0], -1).max(axis=1)


def _second_ranges(weight: np.ndarray, depthwise: bool) -> np.ndarray:
    if depthwise:   # [C, 1, k, k]: channel i's filter reads input channel i only
        return _first_ranges(weight)
    return np.abs(weight).transpose(1, 0, 2, 3).reshape(weight.shape[1], -1).max(axis=1)


def _spread(ranges: np.ndarray) -> float:
    live = ranges[ranges > EPSILON]
    return float(live.max() / live.min()) if live.size else 1.0


def equalize(model: onnx.ModelProto, replace_relu6: bool,
             ) -> tuple[onnx.ModelProto, EqualizationReport]:
    """A copy of `model` with every equalization pair rescaled; `replace_relu6`: pairs through
    a ReLU6 too, which becomes ReLU (the fp32 function then changes wherever ReLU6 clipped)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    pairs = equalization_pairs(model, through_relu6=replace_relu6)
    weights = {init.name: init for init in model.graph.initializer}
    arrays = {name: numpy_helper.to_array(init).astype(np.float64)
              for name, init in weights.items()}
    spread_before = max((_spread(_first_ranges(arrays[first.input[1]]))
                         for first, _, _ in pairs), default=1.0)
    for _ in range(PASSES):
        for first, second, _ in pairs:
            w1, w2 = arrays[first.input[1]], arrays[second.input[1]]
            depthwise = _attribute(second, "group", 1) > 1
            r1, r2 = _first_ranges(w1), _second_ranges(w2, depthwise)
            live = (r1 > EPSILON) & (r2 > EPSILON)
            scale = np.ones_like(r1)
            scale[live] = np.sqrt(r1[live] / r2[live])
            arrays[first.input[1]] = w1 / scale.reshape(-1, 1, 1, 1)
            if len(first.input) > 2 and first.input[2]:
                arrays[first.input[2]] = arrays[first.input[2]] / scale
            arrays[second.input[1]] = w2 * (scale.reshape(-1, 1, 1, 1) if depthwise
                                            else scale.reshape(1, -1, 1, 1))
    touched = {node.input[index] for first, second, _ in pairs for node in (first, second)
               for index in (1, 2) if len(node.input) > index and node.input[index]}
    for name in touched:
        weights[name].CopyFrom(numpy_helper.from_array(
            arrays[name].astype(numpy_helper.to_array(weights[name]).dtype), name))
    replaced = 0
    for _, _, activation in pairs:
        if activation is not None and activation.op_type == "Clip":
            # the Clip bounds may be shared constants: rewrite the node, never the constant
            activation.op_type = "Relu"
            del activation.input[1:]
            replaced += 1
    spread_after = max((_spread(_first_ranges(arrays[first.input[1]])) for first, _, _ in pairs),
                       default=1.0)
    report = EqualizationReport([(first.name, second.name) for first, second, _ in pairs],
                                replaced, spread_before, spread_after)
    return model, report
