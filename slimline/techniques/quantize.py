"""Quantization in ONNX Runtime: static QDQ int8 (the default), dynamic int8, 4-bit weight-only.

Functions take an ONNX ModelProto (and data) and return a ModelProto plus a report; the
temporary files ONNX Runtime's quantization API insists on stay inside a private temp dir.
Quantization-aware training (torch side) lives in slimline/techniques/qat.py and ends here too;
transformer graph fusion before int8 in slimline/techniques/fusion.py.

Why the defaults are what they are (measured with a small ResNet, batch 1, one thread):
static QDQ with uint8 activations + int8 per-channel weights is the fast path of ORT's x86
int8 kernels (u8s8); int8 activations ran 0.78x of fp32 and dynamic int8 convolutions
(ConvInteger) 0.13-0.23x, so dynamic quantization never touches convolutions.

Transformers (measured on all-MiniLM-L6-v2, docs/results/): dynamic int8 covers every
weight-heavy op: the MatMuls, the fused Attention, and the embedding Gathers, whose tables are
half of a small encoder's weights (quantizing MatMul only left the file at 0.649x of fp32, ONNX
Runtime's one call reaches 0.253x). Per-tensor weights lost fidelity (mean cosine 0.959 against
0.991 per channel). 7-bit weights (reduce_range) are a hedge against int16 saturation on CPUs
without VNNI that measured neutral on mean cosine per channel but cost the worst text (0.971
against 0.982), so without VNNI both are built and the more faithful one is kept.
Static QDQ lost fidelity (0.923): a transformer falls back to dynamic int8 when static measures
worse. 4-bit weight-only (MatMulNBits + GatherBlockQuantized tables) is the smallest and, at
batch 1 on AVX2, slower than fp32 (0.86-0.94x): size-first only.
"""
from __future__ import annotations

import contextlib
import platform
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from slimline.config.params import QuantizeParams
from slimline.config.schemes import SCHEMES
from slimline.data.splits import Inputs, Split, batches
from slimline.errors import SlimlineError
from slimline.measure.runtime import quiet_ort
from slimline.techniques.affine import (
    QuantParams,
    quantization_error,
    symmetric_int8,
)
from slimline.techniques.int8_fidelity import faithful_static_int8
from slimline.techniques.layer_error import LayerError

# CPU flags that give x86 int8 dot products without int16 saturation (VNNI) or tile units (AMX).
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
INT8_FLAGS = ("avx2", "avx512f", "avx512bw", *VNNI_FLAGS, "amx_tile")
# Calibration examples on which candidate int8 graphs are compared with fp32 (each run alone).
FIDELITY_EXAMPLES = 256


def cpu_int8_features(cpuinfo: str | None = None) -> set[str]:
    """The int8-relevant flags of this CPU (from /proc/cpuinfo; empty if unreadable)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            flags |= set(line.split(":", 1)[1].split())
    return {flag for flag in INT8_FLAGS if flag in flags}


@dataclass(frozen=True)
class Int8Target:
    activation_type: str   # "uint8" | "int8"
    reduce_range: bool     # 7-bit weights
    reason: str
    # reduce_range auto without VNNI: dynamic int8 builds both ranges and keeps the more faithful
    measure_reduce_range: bool = False


def choose_int8_target(config: QuantizeParams, features: set[str],
                       machine: str | None = None) -> Int8Target:
    """Activation type and weight range that land on this CPU's fast, non-saturating int8 path."""
    machine = (machine or platform.machine()).lower()
    is_arm = machine in ("aarch64", "arm64")
    vnni = any(flag in features for flag in VNNI_FLAGS)
    reasons = []
    activation = config.activation_type
    if activation == "auto":
        # x86 kernels are u8s8 (s8s8 activations need a shift and measured 0.78x of fp32);
        # ARM's sdot kernels prefer signed activations.
        activation = "int8" if is_arm else "uint8"
        reasons.append(f"{activation} activations ({'ARM' if is_arm else 'x86 u8s8 kernels'})")
    reduce_range = config.reduce_range
    if reduce_range == "auto":
        # Without VNNI, u8s8 products are summed pairwise in int16 (vpmaddubsw) and can saturate;
        # 7-bit weights rule that out. With VNNI (or on ARM) the full 8 bits are safe.
        reduce_range = not (vnni or is_arm)
        reasons.append("7-bit weights (no VNNI: avoids int16 saturation; dynamic int8 measures "
                       "both ranges and keeps the more faithful)" if reduce_range
                       else "full 8-bit weights (VNNI/ARM accumulate in int32)")
    return Int8Target(activation, bool(reduce_range), "; ".join(reasons) or "as set in params",
                      measure_reduce_range=config.reduce_range == "auto" and bool(reduce_range))


class _CalibrationReader:
    """Feeds the calibration split in a fixed order (so calibration is reproducible)."""

    def __init__(self, inputs: Inputs, batch_size: int):
        self._batches = list(batches(inputs, batch_size))
        self._position = 0

    def get_next(self):
        if self._position >= len(self._batches):
            return None
        self._position += 1
        return self._batches[self._position - 1]

    def rewind(self):
        self._position = 0


def prepare_for_quantization(model: onnx.ModelProto) -> onnx.ModelProto:
    """Shape inference + ORT graph optimisation (folds BatchNorm into Conv) before quantizing,
    so QDQ pairs wrap the fused Conv and no fp32 BatchNormalization is left between int8 ops."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # chdir: when its symbolic shape inference gives up, ORT leaves scratch files
    # (sym_shape_infer_temp.onnx, <uuid>.data) in the working directory, i.e. the DVC workspace.
    with tempfile.TemporaryDirectory(prefix="slimline-quant-") as tmp, quiet_ort(), \
            contextlib.chdir(tmp):
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "prepared.onnx"
        onnx.save(model, str(source))
        try:
            quant_pre_process(str(source), str(target))
        except Exception:  # noqa: BLE001 - ORT raises a bare Exception for this
            # ORT's symbolic shape inference gives up on graphs with data-dependent shapes (the
            # attention-mask arithmetic of a dynamo-exported transformer); ONNX's own shape
            # inference and the graph optimisation still run without it.
            quant_pre_process(str(source), str(target), skip_symbolic_shape=True)
        return onnx.load(str(target))


def quantize_static_qdq(model: onnx.ModelProto, calibration: Split, config: QuantizeParams,
                        target: Int8Target, matmul_only: bool = False,
                        fp32_nodes: tuple[str, ...] = ()) -> onnx.ModelProto:
    """Static int8 QDQ: activation ranges calibrated on `calibration`, weights per channel;
    the nodes named in `fp32_nodes` stay fp32.

    `matmul_only` (transformers): only MatMul (Linear layers, Gemm rewritten) gets QDQ pairs.
    Quantizing everything the quantizer can (the residual Adds, LayerNorm inputs, softmax
    scores) took a tiny BERT classifier from 100% to 63% test top-1; MatMul only kept 100%."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if len(calibration) == 0:
        raise SlimlineError("calibration split is empty: static int8 needs calibration images")
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[config.calibration_method]
    extra = (
        {"CalibPercentile": config.percentile} if config.calibration_method == "percentile" else {}
    )
    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    reader = _CalibrationReader(calibration.inputs, config.calibration_batch_size)
    with tempfile.TemporaryDirectory(prefix="slimline-quant-") as tmp, quiet_ort():
        source, output = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, str(source))
        quantize_static(str(source), str(output), reader, quant_format=QuantFormat.QDQ,
                        activation_type=types[target.activation_type], weight_type=QuantType.QInt8,
                        per_channel=config.per_channel, reduce_range=target.reduce_range,
                        calibrate_method=method, extra_options=extra,
                        nodes_to_exclude=list(fp32_nodes),
                        **({"op_types_to_quantize": ["MatMul"]} if matmul_only else {}))
        return onnx.load(str(output))


def gemm_to_matmul(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite Gemm with a constant weight as MatMul (+ Add): ORT's dynamic and 4-bit weight-only
    quantizers only handle MatMul, and torch exports nn.Linear as Gemm."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    initializers = {init.name: init for init in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (
            node.op_type != "Gemm"
            or node.input[1] not in initializers
            or attributes.get("transA", 0)
            or attributes.get("alpha", 1.0) != 1.0
            or attributes.get("beta", 1.0) != 1.0
        ):
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(initializers[node.input[1]])
        if attributes.get("transB", 0):
            weight = weight.T
        weight_name = f"{node.input[1]}_matmul"
        model.graph.initializer.append(
            numpy_helper.from_array(np.ascontiguousarray(weight), weight_name)
        )
        has_bias = len(node.input) > 2 and node.input[2]
        product = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], weight_name], [product],
                                      name=f"{node.name}_matmul"))
        if has_bias:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]],
                                          name=f"{node.name}_bias"))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {name for node in model.graph.node for name in node.input}
    kept = [init for init in model.graph.initializer if init.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return model


# Dynamic int8 op types. Convolutions never (ConvInteger ran 0.13-0.23x of fp32). A transformer's
# embedding Gathers too (ORT quantizes a Gather only when its table is a weight), and the fused
# Attention when graph fusion was kept.
DYNAMIC_OPS = ("MatMul",)
TRANSFORMER_DYNAMIC_OPS = ("MatMul", "Gather")
FUSED_DYNAMIC_OPS = ("MatMul", "Gather", "Attention")


def quantize_dynamic_int8(model: onnx.ModelProto, config: QuantizeParams, reduce_range: bool,
                          op_types: tuple[str, ...] = DYNAMIC_OPS) -> onnx.ModelProto:
    """Dynamic int8: weights int8 offline (per channel if configured), activations quantized
    per call, on `op_types` only."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = gemm_to_matmul(model)
    with tempfile.TemporaryDirectory(prefix="slimline-quant-") as tmp, quiet_ort():
        source, output = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, str(source))
        quantize_dynamic(str(source), str(output), op_types_to_quantize=list(op_types),
                         per_channel=config.per_channel, reduce_range=reduce_range,
                         weight_type=QuantType.QInt8)
        return onnx.load(str(output))


def quantize_weight_only_4bit(model: onnx.ModelProto, config: QuantizeParams,
                              embeddings: bool = False) -> onnx.ModelProto:
    """4-bit block-wise weights via ORT's MatMulNBits (convolutions stay fp32); `embeddings`:
    the embedding tables too, as GatherBlockQuantized (int4 blocks along the hidden axis)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    op_types = ("MatMul", "Gather") if embeddings else ("MatMul",)
    quantizer = MatMulNBitsQuantizer(gemm_to_matmul(model), block_size=config.block_size,
                                     is_symmetric=True, op_types_to_quantize=op_types)
    with quiet_ort():
        quantizer.process()
    return quantizer.model.model


def output_fidelity(reference: onnx.ModelProto, candidates: dict[str, onnx.ModelProto],
                    inputs: Inputs, embedding: bool) -> dict[str, float]:
    """How close each candidate's outputs stay to the reference's on `inputs`, each example run
    alone at its own length (as a batch-1 user runs it): an embedding model's mean cosine; a
    classifier's top-1 agreement (+ 0.001 x mean cosine of the logits, to break ties)."""
    from slimline.measure.embedding import cosine_rows
    from slimline.measure.runtime import make_session, onnx_predict_unpadded

    with tempfile.TemporaryDirectory(prefix="slimline-quant-") as tmp:
        outputs = {}
        for name, model in {"reference": reference, **candidates}.items():
            path = Path(tmp) / f"{name}.onnx"
            onnx.save(model, str(path))
            outputs[name] = onnx_predict_unpadded(make_session(path), inputs)
    fidelity = {}
    for name in candidates:
        cosine = float(cosine_rows(outputs["reference"], outputs[name]).mean())
        fidelity[name] = cosine if embedding else float(
            (outputs["reference"].argmax(1) == outputs[name].argmax(1)).mean()) + 1e-3 * cosine
    return fidelity


# ----------------------------------------------------------------------------- the report

@dataclass
class TensorError:
    name: str
    kind: str              # "weight" or "activation"
    scale: float           # per-tensor scale, or the largest per-channel one
    zero_point: int
    sqnr_db: float
    max_abs_error: float
    scale_agreement: float | None = None  # max relative |ours - ORT| scale difference (weights)


@dataclass
class QuantizeReport:
    scheme: str
    settings: dict
    quantized_ops: dict = field(default_factory=dict)   # op type -> count in the output graph
    tensors: list[TensorError] = field(default_factory=list)
    layers: list[LayerError] = field(default_factory=list)  # static CNNs: per-layer int8 error

    def worst_sqnr_db(self, kind: str) -> float | None:
        values = [row.sqnr_db for row in self.tensors if row.kind == kind]
        return min(values) if values else None

    def tensor_lines(self) -> list[str]:
        """Per-tensor quantization error, weights then activations, for the stage log."""
        lines = []
        for kind in ("weight", "activation"):
            rows = [row for row in self.tensors if row.kind == kind]
            if not rows:
                continue
            worst = min(rows, key=lambda row: row.sqnr_db)
            lines.append(f"{kind} quantization error ({len(rows)} tensors; SQNR in dB, higher is "
                         f"better; worst {worst.name} at {worst.sqnr_db:.1f} dB):")
            for row in rows:
                agreement = "" if row.scale_agreement is None else "  scale vs formula: " + (
                    "match" if row.scale_agreement < 1e-6 else f"{row.scale_agreement:.1e} off")
                lines.append(
                    f"  {row.name[-48:]:<48} scale {row.scale:.3e} zp {row.zero_point:4d}  "
                    f"SQNR {row.sqnr_db:5.1f}  max|err| {row.max_abs_error:.3e}{agreement}"
                )
        return lines


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def _axis(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)


def weight_errors(fp32: onnx.ModelProto, quantized: onnx.ModelProto,
                  reduce_range: bool) -> list[TensorError]:
    """Per weight: the error of its int8 form, and whether ORT's scales match the formula."""
    floats, tensors = _initializers(fp32), _initializers(quantized)
    rows = []
    for node in quantized.graph.node:
        source = node.input[0]
        if (
            node.op_type != "DequantizeLinear"
            or source not in tensors
            or tensors[source].dtype not in (np.int8, np.uint8)
            or not source.endswith("_quantized")
        ):
            continue
        original = floats.get(source.removesuffix("_quantized"))
        if original is None:
            continue
        ort_scale = tensors[node.input[1]]
        axis = _axis(node) if ort_scale.ndim else None
        ours = symmetric_int8(original, axis, reduce_range=reduce_range)
        ort = QuantParams(
            ort_scale.astype(np.float32), tensors[node.input[2]], ours.qmin, ours.qmax, axis
        )
        error = quantization_error(original, ort)
        agreement = float(np.max(np.abs(ours.scale - ort.scale) / np.maximum(ort.scale, 1e-30)))
        rows.append(
            TensorError(
                source.removesuffix("_quantized"),
                "weight",
                float(np.max(ort.scale)),
                int(np.max(ort.zero_point)),
                error.sqnr_db,
                error.max_abs,
                agreement,
            )
        )
    return rows


def activation_errors(fp32: onnx.ModelProto, quantized: onnx.ModelProto,
                      inputs: Inputs) -> list[TensorError]:
    """Per activation tensor: the error of quantizing its fp32 values (on `inputs`) with the
    scale and zero point ORT calibrated."""
    from slimline.measure.runtime import make_session

    tensors = _initializers(quantized)
    quantized_activations = {}
    for node in quantized.graph.node:
        if (
            node.op_type == "QuantizeLinear"
            and node.input[0] not in tensors
            and node.input[1] in tensors
        ):
            quantized_activations.setdefault(
                node.input[0], (tensors[node.input[1]], tensors[node.input[2]])
            )
    produced = {output for node in fp32.graph.node for output in node.output}
    produced |= {value.name for value in fp32.graph.input}
    names = [name for name in quantized_activations if name in produced]
    if not names:
        return []
    probe = onnx.ModelProto.FromString(fp32.SerializeToString())
    existing = {value.name for value in probe.graph.output}
    probe.graph.output.extend(helper.make_empty_tensor_value_info(name) for name in names
                              if name not in existing)
    with tempfile.TemporaryDirectory(prefix="slimline-quant-") as tmp:
        path = Path(tmp) / "probe.onnx"
        onnx.save(probe, str(path))
        session = make_session(path)
        outputs = [value.name for value in session.get_outputs()]
        values = dict(zip(outputs, session.run(outputs, inputs)))
    rows = []
    for name in names:
        scale, zero_point = quantized_activations[name]
        is_unsigned = zero_point.dtype == np.uint8
        params = QuantParams(scale.astype(np.float32), zero_point, 0 if is_unsigned else -128,
                             255 if is_unsigned else 127)
        error = quantization_error(values[name], params)
        rows.append(TensorError(name, "activation", float(scale), int(zero_point), error.sqnr_db,
                                error.max_abs))
    return rows


def count_ops(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def quantize_model(
    model: onnx.ModelProto,
    calibration: Split,
    config: QuantizeParams,
    target: Int8Target,
    transformer: bool = False,
    fused: bool = False,
    embedding: bool = False,
    log=print,
) -> tuple[onnx.ModelProto, QuantizeReport]:
    """The configured post-training scheme on an fp32 graph (QAT's fine-tuned graph included).
    A `transformer` is quantized on its MatMuls (static) or on every weight-heavy op (dynamic,
    4-bit); `fused`: the graph went through fusion.py already (no second optimisation pass);
    `embedding`: fidelity is judged by cosine (else by top-1 agreement)."""
    prepared = model if fused else prepare_for_quantization(model)
    if transformer:
        prepared = gemm_to_matmul(prepared)
    settings = {"activation_type": target.activation_type, "reduce_range": target.reduce_range,
                "per_channel": config.per_channel, "why": target.reason}
    dynamic_ops = (FUSED_DYNAMIC_OPS if fused else TRANSFORMER_DYNAMIC_OPS) if transformer \
        else DYNAMIC_OPS
    probe = calibration.head(min(len(calibration), FIDELITY_EXAMPLES))
    if SCHEMES[config.scheme].calibrated:  # static, and QAT's fine-tuned graph
        quantized = quantize_static_qdq(
            prepared, calibration, config, target, matmul_only=transformer
        )
        settings["calibration_method"] = config.calibration_method
        scheme = config.scheme
        if transformer:
            # Static activation ranges suit transformers poorly (a real encoder: mean cosine
            # 0.923 against 0.991 dynamic): keep static only where it measures as faithful.
            dynamic = quantize_dynamic_int8(prepared, config, target.reduce_range, dynamic_ops)
            fidelity = output_fidelity(prepared, {"static": quantized, "dynamic": dynamic}, probe,
                                       embedding)
            settings["fidelity_static"], settings["fidelity_dynamic"] = (fidelity["static"],
                                                                         fidelity["dynamic"])
            log(f"static vs dynamic int8 on {len(next(iter(probe.values())))} calibration "
                f"examples (fidelity to fp32): static {fidelity['static']:.4f}, dynamic "
                f"{fidelity['dynamic']:.4f}")
            if fidelity["static"] < fidelity["dynamic"]:
                log("static QDQ is less faithful than dynamic int8 on this transformer: shipping "
                    "dynamic int8 instead (quantize.scheme static fell back)")
                quantized, scheme = dynamic, "dynamic"
                settings["fallback"] = "dynamic"
        reference, layers = prepared, []
        if not transformer:
            examples = len(next(iter(probe.values())))
            log(f"int8 fidelity to fp32 below: top-1 agreement (+ 0.001 x logit cosine) on "
                f"{examples} calibration examples")
            choice = faithful_static_int8(
                prepared, quantized, calibration, config,
                requantize=lambda graph, fp32_nodes=(): quantize_static_qdq(
                    graph, calibration, config, target, fp32_nodes=fp32_nodes),
                fidelity_of=lambda graph: output_fidelity(prepared, {"int8": graph}, probe,
                                                          embedding=False)["int8"],
                log=log)
            quantized, reference, layers = choice.quantized, choice.reference, choice.layers
            settings.update(choice.settings)
        report = QuantizeReport(scheme, settings, count_ops(quantized), layers=layers)
        if scheme != "dynamic":
            report.tensors = weight_errors(reference, quantized, target.reduce_range)
            report.tensors += activation_errors(reference, quantized,
                                                calibration.head(config.calibration_batch_size))
    elif config.scheme == "dynamic":
        settings["op_types"] = list(dynamic_ops)
        quantized = quantize_dynamic_int8(prepared, config, target.reduce_range, dynamic_ops)
        if target.measure_reduce_range:
            full = quantize_dynamic_int8(prepared, config, False, dynamic_ops)
            fidelity = output_fidelity(prepared, {"7-bit": quantized, "8-bit": full}, probe,
                                       embedding)
            settings["fidelity_reduce_range"], settings["fidelity_full_range"] = (
                fidelity["7-bit"], fidelity["8-bit"])
            keep_full = fidelity["8-bit"] >= fidelity["7-bit"]
            log(f"reduce_range measured on {len(next(iter(probe.values())))} calibration examples "
                f"(fidelity to fp32): 7-bit weights {fidelity['7-bit']:.4f}, full 8-bit "
                f"{fidelity['8-bit']:.4f}: keeping {'8-bit' if keep_full else '7-bit'}")
            if keep_full:
                quantized = full
            settings["reduce_range"] = not keep_full
        report = QuantizeReport(config.scheme, settings, count_ops(quantized))
    else:
        quantized = quantize_weight_only_4bit(prepared, config, embeddings=transformer)
        settings = {"block_size": config.block_size, "symmetric": True,
                    "embedding_tables": transformer}
        report = QuantizeReport(config.scheme, settings, count_ops(quantized))
    return quantized, report
