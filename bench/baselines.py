"""What a practitioner gets from single tools, and the one interleaved measurement every line
benchmark uses (bench/line.py, bench/search.py).

Baselines (issue 4):
  ort-int8     ONNX Runtime static int8 alone (the quantize stage on the teacher; uint8
               activations, int8 per-channel weights, MinMax calibration);
  tp50+ft+int8 Torch-Pruning L1 magnitude at 50% (per layer, classifier kept) + 2 epochs of
               fine-tuning + the same ONNX Runtime static int8.
"""
from __future__ import annotations

import copy
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Built:
    """A model a benchmark measures, with the command that made it and how long that took."""
    path: Path
    command: str
    seconds: float = 0.0


def stage(name: str, params: Path, **paths) -> list[str]:
    command = [sys.executable, "-m", f"stages.{name}", "--params", str(params)]
    for key, value in paths.items():
        command += [f"--{key}", str(value)]
    return command


def run(command: list[str], log_to: Path, reuse: Path | None = None) -> float:
    """Run a stage command (output to log_to); with `reuse`, skip it when that model exists."""
    if reuse is not None and (reuse / "model.onnx").is_file():
        print(f"(reusing {reuse}) $ {shlex.join(command)}", flush=True)
        return 0.0
    started = time.perf_counter()
    print(f"$ {shlex.join(command)}", flush=True)
    with open(log_to, "w") as log:
        result = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode:
        tail = log_to.read_text().strip().splitlines()[-3:]
        raise SystemExit(
            f"bench: {command[2]} failed ({result.returncode}); see {log_to}:\n" + "\n".join(tail)
        )
    return time.perf_counter() - started


def torch_pruning_baseline(teacher_dir: Path, data: Path, target: Path, seed: int) -> None:
    """What a practitioner does with Torch-Pruning alone: L1 at 50%, 2 epochs of fine-tuning."""
    import torch
    import torch_pruning as tp

    from slimline.artifact.edits import resize_edits
    from slimline.artifact.store import load_model, write_artifact
    from slimline.config.params import TrainParams
    from slimline.data.splits import load_split
    from slimline.training.loop import fit, seed_everything

    seed_everything(seed)
    teacher, recipe = load_model(teacher_dir)
    model = copy.deepcopy(teacher)
    train, val = load_split(data / "train.npz"), load_split(data / "val.npz")
    example = torch.from_numpy(val.images[:1])
    pruner = tp.pruner.MagnitudePruner(
        model,
        example,
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=0.5,
        ignored_layers=[model.fc],
    )
    pruner.step()
    fit(
        model,
        train,
        TrainParams(epochs=2, learning_rate=0.01),
        seed=seed,
        description="tp fine-tune",
        log=lambda message: None,
    )
    edited = recipe.derive("torch-pruning L1 50% + 2 epochs", edits=resize_edits(teacher, model))
    write_artifact(target, model, edited, val.images[:64], tolerance=1e-3)


def build_baselines(teacher: Path, data: Path, params: Path, work: Path, seed: int,
                    reuse: bool) -> dict[str, Built]:
    """Both single-tool baselines, built into `work` with the quantize stage of `params`."""
    built = {}
    command = stage("quantize", params, input=teacher, data=data, output=work / "ort-int8",
                    metrics=work / "ort-int8.json", log=work / "ort-int8.log")
    seconds = run(command, work / "ort-int8.stdout", reuse=work / "ort-int8" if reuse else None)
    built["ort-int8"] = Built(work / "ort-int8", shlex.join(command[1:]), seconds)

    started = time.perf_counter()
    if not (reuse and (work / "tp50-ft" / "model.onnx").is_file()):
        torch_pruning_baseline(teacher, data, work / "tp50-ft", seed)
    command = stage("quantize", params, input=work / "tp50-ft", data=data,
                    output=work / "tp50+ft+int8", metrics=work / "tp50.json", log=work / "tp50.log")
    run(command, work / "tp50.stdout", reuse=work / "tp50+ft+int8" if reuse else None)
    built["tp50+ft+int8"] = Built(
        work / "tp50+ft+int8",
        "torch_pruning.MagnitudePruner(p=1, ratio 0.5) + slimline.training.loop.fit(2 epochs, "
        "lr 0.01) in bench/baselines.py; then " + shlex.join(command[1:]),
        time.perf_counter() - started,
    )
    return built


@dataclass
class Measured:
    test_top1: float
    size_bytes: int
    latency_p50_ms: float


def measure_all(models: dict[str, Path], data: Path, runs: int) -> dict[str, Measured]:
    """Test top-1, file size and batch-1 p50 of every model, timed in ONE interleaved run."""
    from slimline.data.splits import load_split
    from slimline.measure.graph import file_size
    from slimline.measure.latency import time_interleaved
    from slimline.measure.runtime import make_session, onnx_accuracy

    test = load_split(data / "test.npz")
    sessions = {name: make_session(path / "model.onnx") for name, path in models.items()}
    print(
        f"\ntiming {len(sessions)} models interleaved: {runs} batch-1 runs each, one thread ...",
        flush=True,
    )
    timing = time_interleaved(sessions, test.images[:1], runs=runs, warmup=30, rounds=10)
    return {
        name: Measured(
            onnx_accuracy(sessions[name], test),
            file_size(models[name] / "model.onnx"),
            timing[name].percentile(50),
        )
        for name in models
    }


def print_table(
    measured: dict[str, Measured], base: str = "teacher", notes: dict[str, str] | None = None
) -> None:
    notes = notes or {}
    header = (f"{'model':<16} {'test top-1':>10} {'drop (pt)':>9} {'size kB':>9} {'smaller':>8} "
              f"{'p50 ms':>8} {'faster':>7}  note")
    print("\n" + header + "\n" + "-" * len(header))
    reference = measured[base]
    for name, m in measured.items():
        drop = 100 * (reference.test_top1 - m.test_top1)
        print(f"{name:<16} {100 * m.test_top1:>9.2f}% {drop:>+9.2f} {m.size_bytes / 1e3:>9.0f} "
              f"{reference.size_bytes / m.size_bytes:>7.1f}x {m.latency_p50_ms:>8.3f} "
              f"{reference.latency_p50_ms / m.latency_p50_ms:>6.2f}x  {notes.get(name, '')}")


def beats(measured: dict[str, Measured], model: str, baseline: str) -> str:
    """The PASS/FAIL line of 'faster and smaller at equal or better accuracy'."""
    m, b = measured[model], measured[baseline]
    ok = (
        m.size_bytes < b.size_bytes
        and m.latency_p50_ms < b.latency_p50_ms
        and m.test_top1 >= b.test_top1
    )
    return (
        f"{'PASS' if ok else 'FAIL'}  {model} vs {baseline}: smaller ({m.size_bytes / 1e3:.0f} vs "
        f"{b.size_bytes / 1e3:.0f} kB), "
        f"faster ({m.latency_p50_ms:.3f} vs {b.latency_p50_ms:.3f} ms), "
        f"top-1 {100 * m.test_top1:.2f}% vs {100 * b.test_top1:.2f}%"
    )
