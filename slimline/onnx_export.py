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

from slimline.errors import SlimlineError

OPSET = 18  # torch 2.13's dynamo exporter converts at 18; asking for 17 fails.


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, *,
                input_name: str = "input", output_name: str = "logits") -> None:
    """Dynamo export with a dynamic batch dimension; weights embedded so one file is the model."""
    model = model.eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    # The exporter narrates every step and warns about torchvision being absent: keep logs readable.
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(path), input_names=[input_name],
                              output_names=[output_name], dynamic_shapes=({0: batch},),
                              external_data=False, opset_version=OPSET, verbose=False)
    finally:
        quiet.setLevel(level)
    onnx.checker.check_model(str(path))


def parity(model: nn.Module, onnx_path: Path, inputs: np.ndarray) -> float:
    """Max |torch - ONNX Runtime| over the logits of `inputs`."""
    from slimline.runtime import make_session

    session = make_session(onnx_path, threads=1)
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(inputs)).numpy()
    actual = session.run(None, {session.get_inputs()[0].name: inputs})[0]
    return float(np.abs(expected - actual).max())


def check_parity(difference: float, tolerance: float, where: str) -> None:
    if not difference <= tolerance:
        raise SlimlineError(
            f"{where}: torch/ONNX parity failed: max |logit diff| = {difference:.3g} > {tolerance:g}")
