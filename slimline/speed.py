"""Latency of torch modules as they would ship: exported to ONNX, timed in ONNX Runtime.

A thin bridge to slimline/measure.py (the one place that times anything): the candidates are
exported to a scratch directory, opened with slimline/runtime.make_session and timed
interleaved, so a "faster" decision is always a measured one, never a MAC count.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn

from slimline.measure import time_interleaved
from slimline.onnx_export import export_onnx
from slimline.runtime import make_session
from slimline.train import as_tensor_inputs


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
        timings = time_interleaved(sessions, feed, runs=runs, warmup=warmup,
                                   rounds=rounds)
    return {name: timing.percentile(50) for name, timing in timings.items()}


def speedup(reference: nn.Module, candidate: nn.Module, example: dict[str, torch.Tensor], *,
            runs: int, threads: int = 1) -> tuple[float, float, float]:
    """(reference p50 ms, candidate p50 ms, reference / candidate); above 1 means faster."""
    p50 = p50_latencies({"reference": reference, "candidate": candidate}, example, runs=runs,
                        threads=threads)
    return p50["reference"], p50["candidate"], p50["reference"] / p50["candidate"]


def compressed_size(path: str | Path) -> int:
    """Bytes of the ONNX file after zlib (what a zipped download or a compressed store costs):
    the size that unstructured sparsity does shrink, unlike the raw file."""
    import zlib

    return len(zlib.compress(Path(path).read_bytes(), 6))


def compare_onnx(before: str | Path, after: str | Path, example: dict, *, runs: int,
                 threads: int = 1) -> dict[str, float]:
    """Parameters, MACs, sizes and p50 latency on `example` (named inputs, batch 1) of two ONNX
    models, measured side by side."""
    from slimline.measure import count_macs, count_parameters, file_size, load_onnx

    numbers = {}
    for label, path in (("before", before), ("after", after)):
        graph = load_onnx(path)
        numbers[f"parameters_{label}"] = count_parameters(graph)
        numbers[f"macs_{label}"] = count_macs(graph, example)
        numbers[f"onnx_bytes_{label}"] = file_size(path)
        numbers[f"onnx_zlib_bytes_{label}"] = compressed_size(path)
    sessions = {"before": make_session(before, threads), "after": make_session(after, threads)}
    timings = time_interleaved(sessions, example, runs=runs, warmup=20, rounds=10)
    numbers["latency_p50_ms_before"] = timings["before"].percentile(50)
    numbers["latency_p50_ms_after"] = timings["after"].percentile(50)
    numbers["parameter_ratio"] = numbers["parameters_after"] / numbers["parameters_before"]
    numbers["macs_ratio"] = numbers["macs_after"] / numbers["macs_before"]
    numbers["latency_speedup"] = numbers["latency_p50_ms_before"] / numbers["latency_p50_ms_after"]
    return numbers
