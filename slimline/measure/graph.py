"""What an ONNX graph holds: its size on disk, parameters and multiply-accumulates.

Counted on the exported graph that ships (the file, external data included), never estimated from
the torch model.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import shape_inference

from slimline.data.splits import Inputs
from slimline.errors import SlimlineError

QDQ_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
WEIGHT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
                onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT4,
                onnx.TensorProto.UINT4}


def file_size(path: str | Path) -> int:
    """Bytes on disk of the ONNX model, including an external `.data` file if it has one."""
    path = Path(path)
    extra = path.with_name(path.name + ".data")
    return path.stat().st_size + (extra.stat().st_size if extra.is_file() else 0)


def load_onnx(path: str | Path) -> onnx.ModelProto:
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError and friends
        raise SlimlineError(
            f"{path}: not an ONNX model ({str(exc).splitlines()[0][:200]})"
        ) from None
    if not model.graph.output:
        raise SlimlineError(f"{path}: ONNX model has no outputs")
    return model


def count_parameters(model: onnx.ModelProto) -> int:
    """Weight elements in the graph; quantization scales and zero points are not parameters."""
    scale_inputs = {name for node in model.graph.node if node.op_type in QDQ_OPS
                    for name in node.input[1:]}
    return sum(int(np.prod(init.dims)) for init in model.graph.initializer
               if init.data_type in WEIGHT_TYPES and init.name not in scale_inputs)


def _with_batch(model: onnx.ModelProto, batch: int,
                example: Inputs | None = None) -> onnx.ModelProto:
    """The graph with static input shapes: batch `batch`, other dynamic axes (a text model's
    sequence length) as in `example`; shapes inferred with data propagation, so reshapes
    computed from Shape ops (as the dynamo exporter writes them) resolve too."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        sizes = example[value.name].shape if example and value.name in example else None
        for axis, dim in enumerate(dims):
            if dim.HasField("dim_value"):
                continue
            if axis == 0 or sizes is not None:
                dim.Clear()
                dim.dim_value = batch if axis == 0 else int(sizes[axis])
    return shape_inference.infer_shapes(model, data_prop=True)


ATTENTION_OPS = ("Attention", "QAttention")   # ONNX Runtime's fused attention (com.microsoft)
# Ops whose first output has the broadcast shape of their inputs: the elementwise ops around a
# fused or dynamic-int8 transformer graph, and ONNX Runtime's fused ops that keep their input's
# shape. ONNX shape inference stops at the com.microsoft ops; these carry the shapes on.
SAME_SHAPE_OPS = {"Add", "Mul", "Sub", "Div", "Cast", "Tanh", "Erf", "Relu", "Sigmoid",
                  "DynamicQuantizeLinear", "DequantizeLinear", "QuantizeLinear",
                  "LayerNormalization", "SkipLayerNormalization",
                  "SkipSimplifiedLayerNormalization",
                  "BiasGelu", "FastGelu", "Gelu", "QuickGelu", "Softmax"}


def _fill_contrib_shapes(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> None:
    """Shapes that ONNX shape inference left unknown after ONNX Runtime's contrib ops (a fused
    graph's Attention, SkipLayerNormalization, BiasGelu, QAttention), in graph order."""
    for node in model.graph.node:
        if not node.output or node.output[0] in shapes:
            continue
        inputs = [shapes.get(name) for name in node.input]
        if node.op_type in SAME_SHAPE_OPS:
            if node.op_type == "DynamicQuantizeLinear":
                inputs = inputs[:1]
            known = [shape for shape in inputs if shape is not None]
            if known and len(known) == len([name for name in node.input if name]):
                try:
                    shapes[node.output[0]] = list(np.broadcast_shapes(*map(tuple, known)))
                except ValueError:
                    pass
        elif node.op_type in ("MatMul", "MatMulInteger") and inputs[0] and len(inputs) > 1 \
                and inputs[1] and len(inputs[1]) == 2:
            shapes[node.output[0]] = [*inputs[0][:-1], inputs[1][-1]]
        elif node.op_type in ATTENTION_OPS and inputs[0] and len(inputs) > 1 and inputs[1]:
            shapes[node.output[0]] = [*inputs[0][:-1], inputs[1][-1] // 3]
        elif node.op_type == "Gather" and inputs[0] and len(inputs) > 1 and inputs[1] is not None:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0) % len(inputs[0])
            shapes[node.output[0]] = [*inputs[0][:axis], *inputs[1], *inputs[0][axis + 1:]]


def count_macs(model: onnx.ModelProto, example: Inputs | None = None) -> int:
    """Multiply-accumulates of one batch-1 inference, from the graph's Conv/Gemm/MatMul shapes;
    `example` (named inputs) sets the size of dynamic axes other than the batch."""
    return sum(macs_by_kind(model, example).values())


def macs_by_kind(model: onnx.ModelProto, example: Inputs | None = None) -> dict[str, int]:
    """count_macs split into {"conv": ..., "matmul": ...} (Gemm and MatMul count as matmul)."""
    total = {"conv": 0, "matmul": 0}
    for kind, macs in macs_by_node(model, example).values():
        total[kind] += macs
    return total


def macs_by_node(model: onnx.ModelProto,
                 example: Inputs | None = None) -> dict[str, tuple[str, int]]:
    """Node name (its output's where unnamed or taken) -> (kind, batch-1 MACs) for every Conv,
    Gemm, MatMul and fused Attention whose shapes are known."""
    model = _with_batch(model, 1, example)
    shapes = {init.name: list(init.dims) for init in model.graph.initializer}
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [d.dim_value for d in dims]
    # QDQ graphs feed weights through DequantizeLinear: give its output the weight's shape.
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in shapes:
            shapes.setdefault(node.output[0], shapes[node.input[0]])
    _fill_contrib_shapes(model, shapes)
    macs = {}
    for node in model.graph.node:
        out = shapes.get(node.output[0])
        key = node.name if node.name and node.name not in macs else node.output[0]
        if out is None:
            continue
        if node.op_type in ATTENTION_OPS:
            hidden, weight = shapes.get(node.input[0]), shapes.get(node.input[1])
            if hidden and weight:   # the q/k/v projection, then q.k^T and the weighted sum of v
                tokens, width = int(np.prod(hidden[:-1])), weight[-1] // 3
                macs[key] = ("matmul", tokens * hidden[-1] * weight[-1]
                             + 2 * tokens * hidden[-2] * width)
            continue
        if node.op_type in ("Conv", "ConvInteger", "QLinearConv"):
            weight = shapes.get(node.input[3 if node.op_type == "QLinearConv" else 1])
            if weight:
                macs[key] = ("conv", int(np.prod(out)) * int(np.prod(weight[1:])))
        elif node.op_type in ("Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"):
            left = shapes.get(node.input[0])
            if left:
                transposed = node.op_type == "Gemm" and any(
                    a.name == "transA" and a.i for a in node.attribute)
                macs[key] = ("matmul", int(np.prod(out)) * left[0 if transposed else -1])
    return macs
