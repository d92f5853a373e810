"""ONNX Runtime sessions: the one place that decides how the shipped model is run, and how
named inputs are fed to it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from slimline.data.splits import Inputs, Split, as_inputs, batches
from slimline.errors import SlimlineError


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
