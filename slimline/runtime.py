"""ONNX Runtime sessions: the one place that decides how the shipped model is run."""
from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

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
