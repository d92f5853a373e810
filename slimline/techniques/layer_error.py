"""Per-layer int8 error: each convolution's (and Gemm's) output in a QDQ graph against the same
tensor in its fp32 graph, on the same inputs, as the field's per-layer debuggers do (ONNX
Runtime's qdq_loss_debug, AIMET's quant analyzer).

Both graphs run with the layers' outputs (and inputs) exposed, a batch at a time, and only
running sums are kept, so a 224-px network's activations never sit in memory together. A layer's
SQNR counts the error it inherits; `own_sqnr_db` is the SQNR of the error it adds itself (its
output's relative error power minus its input's, as independent errors add), which is what says
which layer to leave in fp32.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from slimline.data.splits import Inputs, batches

LAYER_OPS = ("Conv", "Gemm")
# An exact tensor (the image input: uint8 pixels quantize without error) has infinite SQNR;
# capped so that the first layer's added error stays a number.
MAX_SQNR_DB = 100.0
BATCH = 8   # examples per run: bounds the memory of the exposed activations


@dataclass
class LayerError:
    name: str              # the node's name in the graph
    op_type: str
    output: str            # its output tensor in the int8 graph
    sqnr_db: float         # of the int8 graph's output vs fp32's (inherited error included)
    input_sqnr_db: float   # of the int8 graph's input to this layer vs fp32's
    mean_shift: np.ndarray  # per output channel: mean(int8 - fp32), what bias correction removes

    @property
    def own_sqnr_db(self) -> float:
        added = 10 ** (-self.sqnr_db / 10) - 10 ** (-self.input_sqnr_db / 10)
        return min(MAX_SQNR_DB, float(-10 * np.log10(max(added, 10 ** (-MAX_SQNR_DB / 10)))))


def _sqnr_db(signal: float, noise: float) -> float:
    return min(MAX_SQNR_DB, float(10 * np.log10(max(signal, 1e-30) / max(noise, 1e-30))))


def _fp32_source(tensor: str, producers: dict[str, onnx.NodeProto]) -> str:
    """The fp32 tensor behind a DequantizeLinear(QuantizeLinear(x)) pair: x (else itself)."""
    dequantize = producers.get(tensor)
    if dequantize is None or dequantize.op_type != "DequantizeLinear":
        return tensor
    quantize = producers.get(dequantize.input[0])
    return quantize.input[0] if quantize is not None and quantize.op_type == "QuantizeLinear" \
        else tensor


def quantized_layers(quantized: onnx.ModelProto,
                     reference: onnx.ModelProto) -> list[tuple[onnx.NodeProto, str, str]]:
    """(layer node in the int8 graph, fp32 name of its input, fp32 name of its output) for every
    Conv/Gemm the fp32 graph has under the same node name, in graph order. Matched by node name,
    not output name: the quantizer drops a ReLU after a conv (its int8 range clips instead) and
    the conv then writes the ReLU's output name, which in fp32 is the clipped tensor."""
    producers = {output: node for node in quantized.graph.node for output in node.output}
    fp32_nodes = {node.name: node for node in reference.graph.node if node.name}
    known = {output for node in reference.graph.node for output in node.output}
    known |= {value.name for value in reference.graph.input}
    layers = []
    for node in quantized.graph.node:
        twin = fp32_nodes.get(node.name) if node.op_type in LAYER_OPS else None
        source = _fp32_source(node.input[0], producers)
        if twin is not None and twin.op_type == node.op_type and source in known:
            layers.append((node, source, twin.output[0]))
    return layers


def exposing(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    probe = onnx.ModelProto.FromString(model.SerializeToString())
    existing = {value.name for value in probe.graph.output}
    probe.graph.output.extend(helper.make_empty_tensor_value_info(name) for name in names
                              if name not in existing)
    return probe


def layer_errors(reference: onnx.ModelProto, quantized: onnx.ModelProto,
                 inputs: Inputs) -> list[LayerError]:
    """Every Conv/Gemm of `quantized` measured against `reference` on `inputs`, graph order."""
    from slimline.measure.runtime import make_session

    layers = quantized_layers(quantized, reference)
    if not layers:
        return []
    quantized_names = [node.output[0] for node, _, _ in layers]
    quantized_names += [node.input[0] for node, _, _ in layers]
    reference_names = [output for _, _, output in layers] + [source for _, source, _ in layers]
    with tempfile.TemporaryDirectory(prefix="slimline-layers-") as tmp:
        paths = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(exposing(reference, reference_names), str(paths[0]))
        onnx.save(exposing(quantized, quantized_names), str(paths[1]))
        sessions = [make_session(path) for path in paths]
        wanted = [list(dict.fromkeys(reference_names)), list(dict.fromkeys(quantized_names))]
        sums: dict[str, dict[str, np.ndarray | float]] = {}
        count = np.zeros(len(layers))
        for batch in batches(inputs, BATCH):
            fp32 = dict(zip(wanted[0], sessions[0].run(wanted[0], batch)))
            int8 = dict(zip(wanted[1], sessions[1].run(wanted[1], batch)))
            for index, (node, source, reference_output) in enumerate(layers):
                name = node.output[0]
                error = int8[name].astype(np.float64) - fp32[reference_output]
                axes = tuple(axis for axis in range(error.ndim) if axis != 1)
                row = sums.setdefault(name, {"shift": 0.0, "signal": 0.0, "noise": 0.0,
                                             "in_signal": 0.0, "in_noise": 0.0})
                row["shift"] = row["shift"] + error.sum(axis=axes)
                row["signal"] += float(np.square(fp32[reference_output], dtype=np.float64).sum())
                row["noise"] += float(np.square(error).sum())
                row["in_signal"] += float(np.square(fp32[source], dtype=np.float64).sum())
                row["in_noise"] += float(np.square(
                    int8[node.input[0]].astype(np.float64) - fp32[source]).sum())
                count[index] += error.size / error.shape[1]
    return [LayerError(node.name, node.op_type, node.output[0],
                       _sqnr_db(sums[node.output[0]]["signal"], sums[node.output[0]]["noise"]),
                       _sqnr_db(sums[node.output[0]]["in_signal"],
                                sums[node.output[0]]["in_noise"]),
                       np.asarray(sums[node.output[0]]["shift"]) / count[index])
            for index, (node, _, _) in enumerate(layers)]


def layer_lines(errors: list[LayerError], worst: int) -> list[str]:
    """The stage log's per-layer table (graph order), then the `worst` layers by added error."""
    if not errors:
        return []
    lines = [f"per-layer int8 error ({len(errors)} layers, int8 vs fp32 on the calibration "
             f"examples; SQNR in dB, higher is better; 'own' = the SQNR of the error the layer "
             f"adds itself):"]
    lines += [f"  {row.name[-48:]:<48} SQNR {row.sqnr_db:5.1f}  own {row.own_sqnr_db:5.1f}"
              for row in errors]
    ranked = sorted(errors, key=lambda row: row.own_sqnr_db)[:worst]
    lines.append("layers adding the most int8 error: " + ", ".join(
        f"{row.name} (own SQNR {row.own_sqnr_db:.1f} dB)" for row in ranked))
    return lines
