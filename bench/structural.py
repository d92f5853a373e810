"""Benchmark of the structural stages: teacher vs pruned vs decomposed, measured side by side.

    python bench/structural.py [--teacher models/teacher --pruned models/pruned
                                --decomposed models/decomposed --data data/prepared]
                               [--linear-heavy]

Every number comes from the ONNX graphs that ship, in ONNX Runtime (CPU, batch 1, one thread),
all models timed interleaved in one run so machine noise hits them alike. Top-1 is on the test
split. --linear-heavy adds the case where SVD is expected to pay: a wide MLP trained briefly on the
same digits, decomposed with the default decompose params (every layer measured before it is kept).

Issue 3's targets: pruned >= 3x lower latency at <= 0.5 point top-1 drop; decomposed never slower
than its input and <= 0.5 point drop.
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path

from slimline.artifact.recipe import ONNX
from slimline.data.splits import load_split
from slimline.measure.graph import count_macs, count_parameters, file_size, load_onnx
from slimline.measure.latency import time_interleaved
from slimline.measure.runtime import make_session, onnx_accuracy

ROOT = Path(__file__).resolve().parents[1]


def measure(paths: dict[str, Path], data_dir: Path, runs: int) -> list[dict]:
    test = load_split(data_dir / "test.npz")
    sessions = {name: make_session(path, threads=1) for name, path in paths.items()}
    timings = time_interleaved(sessions, test.images[:1], runs=runs, warmup=30, rounds=10)
    rows = []
    for name, path in paths.items():
        graph = load_onnx(path)
        rows.append({"model": name, "top1": 100 * onnx_accuracy(sessions[name], test),
                     "size_mb": file_size(path) / 1e6, "params": count_parameters(graph),
                     "macs": count_macs(graph), "p50_ms": timings[name].percentile(50)})
    return rows


def print_table(rows: list[dict], title: str) -> None:
    base = rows[0]
    print(f"\n{title}")
    print(f"{'model':<12} {'top-1 %':>8} {'drop pt':>8} {'size MB':>8} {'params':>10} {'MACs':>12} "
          f"{'p50 ms':>8} {'params x':>9} {'MACs x':>8} {'speedup':>8}")
    for row in rows:
        print(f"{row['model']:<12} {row['top1']:8.2f} {base['top1'] - row['top1']:8.2f} "
              f"{row['size_mb']:8.3f} {row['params']:10d} {row['macs']:12d} {row['p50_ms']:8.3f} "
              f"{row['params'] / base['params']:9.3f} {row['macs'] / base['macs']:8.3f} "
              f"{base['p50_ms'] / row['p50_ms']:7.2f}x")


def linear_heavy(data_dir: Path, runs: int) -> None:
    """Train a wide MLP briefly, decompose it with the default params, compare in ONNX Runtime."""
    import tempfile

    import torch
    from torch import nn

    from slimline.artifact.onnx_export import export_onnx
    from slimline.config.load import load_params
    from slimline.config.params import DecomposeParams, TrainParams
    from slimline.techniques.decompose import decompose_model
    from slimline.training.loop import fit, seed_everything

    seed_everything(0)
    train = load_split(data_dir / "train.npz")
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024),
                          nn.ReLU(), nn.Linear(1024, 10))
    fit(model, train, TrainParams(epochs=3, learning_rate=0.05), seed=0, description="wide MLP",
        log=lambda line: None)
    params_file = ROOT / "params.yaml"
    config = load_params(params_file).decompose if params_file.is_file() else DecomposeParams()
    decomposed = copy.deepcopy(model)
    report = decompose_model(decomposed, config, train.images[:64], train, None, seed=0,
                             log=lambda line: print("  " + line))
    with tempfile.TemporaryDirectory() as scratch:
        paths = {}
        for name, net in (("wide MLP", model), ("MLP decomp", decomposed)):
            paths[name] = Path(scratch) / f"{len(paths)}.onnx"
            export_onnx(net.eval(), torch.from_numpy(train.images[:1]), paths[name])
        print_table(
            measure(paths, data_dir, runs),
            f"Linear-heavy check: 784-1024-1024-10 MLP, {len(report.kept)} layer(s) factorized",
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, default=ROOT / "models/teacher")
    parser.add_argument("--pruned", type=Path, default=ROOT / "models/pruned")
    parser.add_argument("--decomposed", type=Path, default=ROOT / "models/decomposed")
    parser.add_argument("--data", type=Path, default=ROOT / "data/prepared")
    parser.add_argument("--runs", type=int, default=500, help="timed batch-1 runs per model")
    parser.add_argument(
        "--linear-heavy", action="store_true", help="also run the wide-MLP SVD check"
    )
    args = parser.parse_args()
    paths = {"teacher": args.teacher / ONNX, "pruned": args.pruned / ONNX,
             "decomposed": args.decomposed / ONNX}
    rows = measure(paths, args.data, args.runs)
    print_table(rows, "Structural compression on the default teacher (ONNX Runtime CPU, batch 1, "
                      "1 thread, interleaved; test split)")
    pruned, decomposed = rows[1], rows[2]
    print(f"\ndecomposed vs pruned (its input): {pruned['p50_ms'] / decomposed['p50_ms']:.2f}x "
          f"latency, {decomposed['params'] / pruned['params']:.3f}x params, "
          f"{decomposed['macs'] / pruned['macs']:.3f}x MACs, "
          f"{pruned['top1'] - decomposed['top1']:+.2f} point top-1 drop")
    if args.linear_heavy:
        linear_heavy(args.data, args.runs)


if __name__ == "__main__":
    main()
