"""Two ONNX models side by side: a stage's input and output (what prune and decompose changed)
or an fp32 model and its quantized twin (what quantize changed), measured in one run.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

from slimline.data.splits import Inputs, Split
from slimline.measure.embedding import embedding_quality
from slimline.measure.graph import count_macs, count_parameters, file_size, load_onnx
from slimline.measure.latency import time_interleaved
from slimline.measure.runtime import make_session


def compressed_size(path: str | Path) -> int:
    """Bytes of the ONNX file after zlib (what a zipped download or a compressed store costs):
    the size that unstructured sparsity does shrink, unlike the raw file."""
    return len(zlib.compress(Path(path).read_bytes(), 6))


def compare_onnx(before: str | Path, after: str | Path, example: Inputs, *, runs: int,
                 threads: int = 1) -> dict[str, float]:
    """Parameters, MACs, sizes and p50 latency on `example` (named inputs, batch 1) of two ONNX
    models, measured side by side; flat keys, as the stages' metrics hold them."""
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


def describe_onnx_comparison(numbers: dict[str, float]) -> str:
    """compare_onnx's figures as the one log line a reviewer reads."""
    return ("ONNX Runtime (batch 1, 1 thread, interleaved): p50 {latency_p50_ms_before:.3f} ms -> "
            "{latency_p50_ms_after:.3f} ms ({latency_speedup:.2f}x faster); parameters "
            "{parameters_before:d} -> {parameters_after:d} ({parameter_ratio:.2f}x); MACs "
            "{macs_before:d} -> {macs_after:d} ({macs_ratio:.2f}x)").format(**numbers)


@dataclass
class PrecisionComparison:
    """An fp32 model and its quantized twin on val and test, timed side by side."""
    quality: dict[str, dict[str, float]]   # "fp32" / "int8" -> split -> task quality
    agreement: float | None                # classifier: test items where the two agree
    size_bytes: dict[str, int]
    latency_p50_ms: dict[str, float]
    embedding: dict[str, float] | None = None   # embedding model: int8 vs fp32 on test (nn@1...)

    @property
    def speedup(self) -> float:
        return self.latency_p50_ms["fp32"] / self.latency_p50_ms["int8"]

    @property
    def size_ratio(self) -> float:
        return self.size_bytes["int8"] / self.size_bytes["fp32"]

    def drop_points(self, split: str) -> float:
        return 100 * (self.quality["fp32"][split] - self.quality["int8"][split])

    def summary(self, task) -> list[str]:
        """The comparison as the quantize stage's log states it."""
        fp32, int8 = self.quality["fp32"], self.quality["int8"]
        if task.is_embedding:  # no labels: the int8 embeddings are judged against fp32's
            quality = (f"embedding fidelity of the quantized model to fp32, each text alone at its "
                       f"own length (mean cosine): val {int8['val']:.4f}, test {int8['test']:.4f}; "
                       "test cosine min {cos_min:.4f}, nn@1 agreement {nn1:.3f}, pairwise-"
                       "similarity Spearman {spearman:.4f}".format(**self.embedding))
        else:
            quality = (f"top-1 val: fp32 {100 * fp32['val']:.2f}% -> quantized "
                       f"{100 * int8['val']:.2f}% (drop {self.drop_points('val'):+.2f} points); "
                       f"test: {100 * fp32['test']:.2f}% -> {100 * int8['test']:.2f}% (drop "
                       f"{self.drop_points('test'):+.2f}); fp32/quantized agree on "
                       f"{100 * self.agreement:.2f}% of test items")
        sizes, latency = self.size_bytes, self.latency_p50_ms
        return [quality,
                f"size: {sizes['fp32'] / 1e3:.0f} kB -> {sizes['int8'] / 1e3:.0f} kB "
                f"({self.size_ratio:.3f}x); batch-1 latency p50, one thread, interleaved: fp32 "
                f"{latency['fp32']:.3f} ms, quantized {latency['int8']:.3f} ms "
                f"({self.speedup:.2f}x faster)"]

    def metrics(self, task) -> dict:
        """The flat keys of the quantize stage's metrics file."""
        fp32, int8 = self.quality["fp32"], self.quality["int8"]
        quality = ({"int8_val_embedding_fidelity": int8["val"],
                    "int8_test_embedding_fidelity": int8["test"],
                    **{f"int8_test_{key}": value for key, value in self.embedding.items()}}
                   if task.is_embedding else
                   {"fp32_val_top1": fp32["val"], "int8_val_top1": int8["val"],
                    "fp32_test_top1": fp32["test"], "int8_test_top1": int8["test"],
                    "val_top1_drop_points": round(self.drop_points("val"), 2),
                    "test_agreement": self.agreement})
        return {**quality, "fp32_size_bytes": self.size_bytes["fp32"],
                "int8_size_bytes": self.size_bytes["int8"], "size_ratio": self.size_ratio,
                "fp32_latency_p50_ms": self.latency_p50_ms["fp32"],
                "int8_latency_p50_ms": self.latency_p50_ms["int8"], "speedup": self.speedup,
                "int8_faster": self.speedup > 1}


def compare_precisions(fp32: Path, int8: Path, splits: dict[str, Split], task, *, runs: int,
                       rounds: int) -> PrecisionComparison:
    """Quality on each split (a classifier's top-1 on the labels; an embedding model's int8
    embeddings against fp32's, fp32 scoring 1), file sizes and batch-1 p50 latency."""
    sessions = {"fp32": make_session(fp32), "int8": make_session(int8)}
    outputs = {name: {split: task.predict_onnx(session, data.inputs)
                      for split, data in splits.items()} for name, session in sessions.items()}
    quality = {name: {split: task.output_quality(outputs[name][split], outputs["fp32"][split],
                                                 data.labels)
                      for split, data in splits.items()} for name in sessions}
    agreement = None if task.is_embedding else float(
        (outputs["fp32"]["test"].argmax(1) == outputs["int8"]["test"].argmax(1)).mean())
    example = splits["val"].head(1)
    timings = time_interleaved(sessions, example, runs=runs, warmup=max(10, runs // 10),
                               rounds=rounds)
    return PrecisionComparison(
        quality,
        agreement,
        {"fp32": file_size(fp32), "int8": file_size(int8)},
        {name: timing.percentile(50) for name, timing in timings.items()},
        embedding_quality(outputs["fp32"]["test"], outputs["int8"]["test"])
        if task.is_embedding else None,
    )
