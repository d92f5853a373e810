"""ONNX Runtime sessions: the one place that decides how the shipped model is run, and how
named inputs are fed to it."""
from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from slimline.data.splits import Inputs, Split, as_inputs, batches
from slimline.errors import SlimlineError


@contextlib.contextmanager
def quiet_ort():
    """ORT's quantizer prints progress and warnings to stdout/logging; the stage log is enough."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def make_session(path: str | Path, threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own untyped Fail/InvalidGraph errors
        message = str(exc).strip().splitlines()[0][:300]
        raise SlimlineError(f"{path}: ONNX Runtime cannot load this model ({message})") from None


def check_feeds(session, inputs: Inputs, where: str) -> None:
    """The graph's inputs and the data's must have the same names, or nothing can be fed."""
    wanted = [value.name for value in session.get_inputs()]
    if sorted(wanted) != sorted(inputs):
        raise SlimlineError(f"{where}: the ONNX graph takes inputs {wanted}, the data provides "
                            f"{list(inputs)}; they must have the same names")


def onnx_predict(session, inputs: Inputs | np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The first output (logits) of the session on named inputs, in batches."""
    return np.concatenate([session.run(None, batch)[0]
                           for batch in batches(as_inputs(inputs), batch_size)])


def onnx_accuracy(session, data: Split) -> float:
    return float((onnx_predict(session, data.inputs).argmax(1) == data.labels).mean())


def unpadded(inputs: Inputs, mask_name: str = "attention_mask"):
    """Each example alone at its own length (its padding dropped), as a batch-1 deployment runs
    it: name -> (1, length) arrays, one dict per example. Inputs without a padding mask are
    yielded one example at a time as they are."""
    inputs = as_inputs(inputs)
    count = len(next(iter(inputs.values())))
    mask = inputs.get(mask_name)
    for row in range(count):
        if mask is None or mask.ndim != 2:
            yield {name: array[row:row + 1] for name, array in inputs.items()}
            continue
        keep = np.flatnonzero(mask[row]) if mask[row].any() else np.arange(1)
        yield {name: array[row:row + 1, keep] if array.ndim == 2 and array.shape == mask.shape
               else array[row:row + 1] for name, array in inputs.items()}


def onnx_predict_unpadded(session, inputs: Inputs) -> np.ndarray:
    """The first output for each example alone, at its own length (see unpadded): how dynamic
    int8, which quantizes activations per call, behaves for a batch-1 user; padding would change
    its activation ranges, hence its results."""
    return np.concatenate([session.run(None, feed)[0] for feed in unpadded(inputs)])
