"""Export a torch model to the ONNX graph that ships, and prove it computes the same thing."""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from slimline.data.splits import Inputs
from slimline.errors import SlimlineError

OPSET = 18  # torch 2.13's dynamo exporter converts at 18; asking for 17 fails.


def dynamic_shapes(example: dict[str, torch.Tensor], axes: dict[str, list] | None) -> tuple:
    """torch.export's dynamic_shapes, one dict per input: axis -> Dim. Axes sharing a name
    share one Dim (input_ids and attention_mask have the same batch and sequence length).
    Without `axes`, the first axis of every input is the batch."""
    dims = {"batch": torch.export.Dim("batch", min=1, max=4096)}
    shapes = []
    for name, tensor in example.items():
        names = (axes or {}).get(name) or ["batch"] + [None] * (tensor.dim() - 1)
        shapes.append({axis: dims.setdefault(label, torch.export.Dim(label, min=1, max=65536))
                       for axis, label in enumerate(names) if label})
    return tuple(shapes)


def export_onnx(model: nn.Module, example: dict[str, torch.Tensor] | torch.Tensor, path: Path, *,
                axes: dict[str, list] | None = None, output_name: str = "logits") -> None:
    """Dynamo export of a model on named inputs (ONNX input names = the keys, in order), with
    dynamic axes (`axes`: input name -> one axis name or None per dimension; default: batch);
    weights embedded so one file is the model."""
    from slimline.training.loop import as_tensor_inputs

    model, example = model.eval(), as_tensor_inputs(example)
    # The exporter narrates every step and warns about torchvision being absent, and its graph
    # optimizer warns about every constant it could not fold: keep logs readable.
    quiet = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                tuple(example.values()),
                str(path),
                input_names=list(example),
                output_names=[output_name],
                dynamic_shapes=dynamic_shapes(example, axes),
                external_data=False,
                opset_version=OPSET,
                verbose=False,
            )
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)
    strip_provenance(path)
    onnx.checker.check_model(str(path))


def strip_provenance(path: Path) -> None:
    """Drop the exporter's per-node notes (Python stack traces, source file paths, FX names):
    they are a large share of a small model's file, and they differ between machines for the same
    weights, so byte-identical builds and honest size figures both need them gone."""
    model = onnx.load(str(path))
    for node in model.graph.node:
        node.ClearField("metadata_props")
        node.doc_string = ""
    for value in [*model.graph.value_info, *model.graph.input, *model.graph.output]:
        value.ClearField("metadata_props")
    onnx.save(model, str(path))


def parity(model: nn.Module, onnx_path: Path, inputs: Inputs) -> float:
    """Max |torch - ONNX Runtime| over the logits of `inputs`."""
    from slimline.data.splits import as_inputs
    from slimline.measure.runtime import make_session
    from slimline.training.loop import forward, to_tensors

    session, inputs = make_session(onnx_path, threads=1), as_inputs(inputs)
    with torch.no_grad():
        expected = forward(model.eval(), to_tensors(inputs)).numpy()
    actual = session.run(None, inputs)[0]
    return float(np.abs(expected - actual).max())


def check_parity(difference: float, tolerance: float, where: str) -> None:
    if not difference <= tolerance:
        raise SlimlineError(
            f"{where}: torch/ONNX parity failed: max |logit diff| = {difference:.3g} > "
            f"{tolerance:g}"
        )
