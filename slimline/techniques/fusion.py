"""Transformer graph fusion before int8: ONNX Runtime's transformer optimizer (attention,
skip-layer-norm, bias-gelu), kept only where parity holds and ONNX Runtime measures it faster.

ORT's BERT attention fusion matches the graph the TorchScript exporter writes, not the dynamo
exporter's (measured on all-MiniLM-L6-v2: "failed to match mask path", 0 of 6 Attention fused).
It does match once three things hold, which this module and the fusable export
(slimline/models/huggingface.py: fusable_text_model) arrange:

1. eager attention with a 4-D additive mask, (1 - mask) * -10000, built by the wrapper (sdpa
   exports a NaN-safe softmax that no fusion pattern knows);
2. the mask's Unsqueeze(axes=[1, 2]), which dynamo merges, split back into two one-axis
   Unsqueezes (the pattern ORT walks);
3. the q.k^T scaling written as Div by sqrt(head size), as classic BERT exports do: transformers 5
   scales with a Mul, and ORT's matcher takes the first Mul above the score Add for both the q.k
   path and the mask path, so the mask path never matches.

Then 6 Attention, 12 SkipLayerNormalization and 6 BiasGelu fuse; the fused fp32 graph ran 1.21x
the unfused one, and fused + dynamic int8 1.56x against 1.48x unfused, at the same fidelity
(docs/results/). EmbedLayerNormalization does not fuse under dynamo (the position-id path
differs) and is not worth much.
"""
from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from slimline.data.splits import Inputs

FUSED_OPS = ("Attention", "SkipLayerNormalization", "BiasGelu", "Gelu", "LayerNormalization",
             "EmbedLayerNormalization", "FastGelu")
# Largest |fused - unfused| output difference accepted: the fusion is exact maths (1.3e-6
# measured on all-MiniLM-L6-v2); anything larger means a pattern matched wrongly.
FUSION_TOLERANCE = 1e-4


def split_mask_unsqueeze(model: onnx.ModelProto, mask_input: str = "attention_mask") -> int:
    """Rewrite Unsqueeze(mask, axes=[a, b]) as two one-axis Unsqueezes (in place); the count."""
    initializers = {init.name: init for init in model.graph.initializer}
    nodes, split = [], 0
    for node in model.graph.node:
        axes = (numpy_helper.to_array(initializers[node.input[1]]).ravel().tolist()
                if node.op_type == "Unsqueeze" and len(node.input) > 1
                and node.input[1] in initializers else [])
        if node.input and node.input[0] == mask_input and len(axes) == 2:
            first, second = f"{node.output[0]}_axis0", f"{node.output[0]}_axis1"
            model.graph.initializer.extend([
                numpy_helper.from_array(np.array([axes[0]], np.int64), first),
                numpy_helper.from_array(np.array([axes[1]], np.int64), second)])
            middle = f"{node.output[0]}_half"
            nodes.append(helper.make_node("Unsqueeze", [mask_input, first], [middle],
                                          name=f"{node.name}_a"))
            nodes.append(helper.make_node("Unsqueeze", [middle, second], list(node.output),
                                          name=f"{node.name}_b"))
            split += 1
        else:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return split


def scale_as_division(model: onnx.ModelProto) -> int:
    """Rewrite Mul(MatMul(q, k^T), c) with a scalar constant c as Div(MatMul, 1 / c) (in place):
    the form ORT's attention fusion expects; the count."""
    initializers = {init.name: init for init in model.graph.initializer}
    producers = {output: node for node in model.graph.node for output in node.output}
    rewritten = 0
    for index, node in enumerate(model.graph.node):
        if (node.op_type != "Mul" or node.input[0] not in producers
                or producers[node.input[0]].op_type != "MatMul"
                or node.input[1] not in initializers):
            continue
        scale = numpy_helper.to_array(initializers[node.input[1]])
        if scale.size != 1 or not 0 < float(scale.ravel()[0]) < 1:
            continue
        name = f"{node.input[1]}_reciprocal"
        if name not in initializers:
            initializers[name] = numpy_helper.from_array((1.0 / scale).astype(scale.dtype), name)
            model.graph.initializer.append(initializers[name])
        model.graph.node[index].CopyFrom(helper.make_node(
            "Div", [node.input[0], name], list(node.output), name=f"{node.name}_div"))
        rewritten += 1
    return rewritten


@dataclass
class FusionReport:
    fused_ops: dict[str, int] = field(default_factory=dict)
    nodes_before: int = 0
    nodes_after: int = 0
    max_abs_diff: float | None = None
    latency_p50_ms: dict[str, float] = field(default_factory=dict)   # "unfused" / "fused"
    kept: bool = False
    reason: str = ""

    @property
    def speedup(self) -> float | None:
        if not self.latency_p50_ms:
            return None
        return self.latency_p50_ms["unfused"] / self.latency_p50_ms["fused"]

    def describe(self) -> str:
        fused = ", ".join(f"{op} {count}" for op, count in self.fused_ops.items()) or "nothing"
        measured = "" if self.speedup is None else (
            f"; batch-1 p50 unfused {self.latency_p50_ms['unfused']:.3f} ms, fused "
            f"{self.latency_p50_ms['fused']:.3f} ms ({self.speedup:.2f}x)")
        parity = ("" if self.max_abs_diff is None
                  else f"; max |fused - unfused| {self.max_abs_diff:.2e}")
        return (f"graph fusion: {fused} ({self.nodes_before} -> {self.nodes_after} nodes){parity}"
                f"{measured}: {'kept' if self.kept else 'not kept'} ({self.reason})")


def fuse_transformer(model: onnx.ModelProto, num_heads: int, hidden_size: int,
                     ) -> tuple[onnx.ModelProto, dict[str, int]]:
    """ORT's BERT optimizer on an eager-attention, 4-D-mask export (see the module docstring):
    the fused graph and the count of each fused op. `hidden_size` is the attention width
    (num_heads x head size), which pruned heads make smaller than the model's."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    model = onnx.ModelProto.FromString(model.SerializeToString())
    split_mask_unsqueeze(model)
    scale_as_division(model)
    import onnxruntime

    options = FusionOptions("bert")
    onnxruntime.set_default_logger_severity(3)   # its sessions narrate unused initializers
    logger = logging.getLogger("onnxruntime.transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory(prefix="slimline-fuse-") as tmp, \
                contextlib.redirect_stdout(io.StringIO()), contextlib.chdir(tmp):
            source = Path(tmp) / "eager.onnx"
            onnx.save(model, str(source))
            optimized = optimize_model(str(source), model_type="bert", num_heads=num_heads,
                                       hidden_size=hidden_size, optimization_options=options)
            statistics = optimized.get_fused_operator_statistics()
            fused = optimized.model
    finally:
        logger.setLevel(level)
    counts = {op: int(statistics.get(op, 0)) for op in FUSED_OPS if statistics.get(op, 0)}
    return fused, counts


def choose_fusion(unfused: onnx.ModelProto, fused: onnx.ModelProto, fused_ops: dict[str, int],
                  parity_inputs: Inputs, timing_inputs: Inputs, *, mode: str, runs: int,
                  rounds: int) -> FusionReport:
    """Keep the fused graph only if its outputs equal the unfused graph's (FUSION_TOLERANCE) and,
    under mode auto, ONNX Runtime measures it faster (interleaved, batch 1)."""
    from slimline.measure.latency import time_interleaved
    from slimline.measure.runtime import make_session, onnx_predict

    report = FusionReport(fused_ops, len(unfused.graph.node), len(fused.graph.node))
    if "Attention" not in fused_ops:
        report.reason = "attention did not fuse"
        if mode == "auto":
            return report
    with tempfile.TemporaryDirectory(prefix="slimline-fuse-") as tmp:
        paths = {"unfused": Path(tmp) / "unfused.onnx", "fused": Path(tmp) / "fused.onnx"}
        onnx.save(unfused, str(paths["unfused"]))
        onnx.save(fused, str(paths["fused"]))
        sessions = {name: make_session(path) for name, path in paths.items()}
        outputs = {name: onnx_predict(session, parity_inputs) for name, session in sessions.items()}
        report.max_abs_diff = float(np.abs(outputs["fused"] - outputs["unfused"]).max())
        if not report.max_abs_diff <= FUSION_TOLERANCE:
            report.reason = f"parity failed (tolerance {FUSION_TOLERANCE:g})"
            return report
        timings = time_interleaved(sessions, timing_inputs, runs=runs, warmup=max(10, runs // 10),
                                   rounds=rounds)
    report.latency_p50_ms = {name: timing.percentile(50) for name, timing in timings.items()}
    if mode == "on":
        report.kept, report.reason = True, "quantize.fuse = on: kept whenever parity holds"
    elif report.speedup > 1:
        report.kept, report.reason = True, "parity holds and it measured faster"
    else:
        report.reason = "parity holds but it did not measure faster"
    return report
