"""Latency of torch modules as they would ship: exported to ONNX, timed in ONNX Runtime.

A thin bridge to slimline/measure/latency.py (the one place that times anything): the candidates
are exported to a scratch directory, opened with slimline/measure/runtime.make_session and timed
interleaved, so a "faster" decision is always a measured one, never a MAC count. Decompose takes
`p50_latencies` (with its runs bound) as its latency measurer.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn

from slimline.artifact.onnx_export import export_onnx
from slimline.measure.latency import time_interleaved
from slimline.measure.runtime import make_session
from slimline.training.loop import as_tensor_inputs


def p50_latencies(models: dict[str, nn.Module], example: dict[str, torch.Tensor], *, runs: int,
                  warmup: int = 20, rounds: int = 10, threads: int = 1) -> dict[str, float]:
    """Median latency (ms) of each model on `example` (named inputs, usually batch 1) in ONNX
    Runtime, timed side by side."""
    with tempfile.TemporaryDirectory(prefix="slimline-speed-") as scratch:
        example, sessions = as_tensor_inputs(example), {}
        for index, (name, model) in enumerate(models.items()):
            path = Path(scratch) / f"{index}.onnx"
            export_onnx(model.eval(), example, path)
            sessions[name] = make_session(path, threads=threads)
        feed = {name: tensor.numpy() for name, tensor in example.items()}
        timings = time_interleaved(sessions, feed, runs=runs, warmup=warmup, rounds=rounds)
    return {name: timing.percentile(50) for name, timing in timings.items()}
