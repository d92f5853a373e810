"""The full line against what a practitioner gets from single tools, measured side by side.

    python bench/line.py [--teacher models/teacher] [--data data/prepared] [--params params.yaml]
                         [--workdir /tmp/slimline-bench] [--runs 300]

Runs the real stages (python -m stages.X) into a scratch folder, builds the practitioner
baselines, then measures every model in ONE interleaved ONNX Runtime timing run (batch 1, one
thread), so machine noise hits all of them alike. Prints a table, the commands that produced
each model, and the issue's targets as PASS/FAIL lines.

Baselines:
  ort-int8     ONNX Runtime static int8 alone (the quantize stage on the teacher; uint8
               activations, int8 per-channel weights, MinMax calibration);
  tp50+ft+int8 Torch-Pruning L1 magnitude at 50% (per layer, classifier kept) + 2 epochs of
               fine-tuning + the same ONNX Runtime static int8.
"""
from __future__ import annotations

import argparse
import copy
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

TARGETS = {  # issue 4
    "ort-int8": {"size": 0.27, "speedup": 2.3, "drop": 0.3},
    "line": {"size": 1 / 16, "speedup": 6.0, "drop": 0.5},
}


def stage(name: str, params: Path, **paths) -> list[str]:
    command = [sys.executable, "-m", f"stages.{name}", "--params", str(params)]
    for key, value in paths.items():
        command += [f"--{key}", str(value)]
    return command


def run(command: list[str], log_to: Path, reuse: Path | None = None) -> float:
    if reuse is not None and (reuse / "model.onnx").is_file():
        print(f"(reusing {reuse}) $ {shlex.join(command)}", flush=True)
        return 0.0
    started = time.perf_counter()
    print(f"$ {shlex.join(command)}", flush=True)
    with open(log_to, "w") as log:
        result = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode:
        tail = log_to.read_text().strip().splitlines()[-3:]
        raise SystemExit(f"bench: {command[2]} failed ({result.returncode}); see {log_to}:\n" + "\n".join(tail))
    return time.perf_counter() - started


def torch_pruning_baseline(teacher_dir: Path, data: Path, target: Path, seed: int) -> None:
    """What a practitioner does with Torch-Pruning alone: L1 at 50%, 2 epochs of fine-tuning."""
    import torch
    import torch_pruning as tp

    from slimline.artifact import load_model, write_artifact
    from slimline.data import load_split
    from slimline.params import TrainParams
    from slimline.recipe import resize_edits
    from slimline.train import fit, seed_everything

    seed_everything(seed)
    teacher, recipe = load_model(teacher_dir)
    model = copy.deepcopy(teacher)
    train, val = load_split(data / "train.npz"), load_split(data / "val.npz")
    example = torch.from_numpy(val.images[:1])
    pruner = tp.pruner.MagnitudePruner(model, example, importance=tp.importance.MagnitudeImportance(p=1),
                                       pruning_ratio=0.5, ignored_layers=[model.fc])
    pruner.step()
    fit(model, train, TrainParams(epochs=2, learning_rate=0.01), seed=seed, description="tp fine-tune",
        log=lambda message: None)
    edited = recipe.derive("torch-pruning L1 50% + 2 epochs", edits=resize_edits(teacher, model))
    write_artifact(target, model, edited, val.images[:64], tolerance=1e-3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path, default=ROOT / "models/teacher")
    parser.add_argument("--data", type=Path, default=ROOT / "data/prepared")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/slimline-bench"))
    parser.add_argument("--runs", type=int, default=300, help="timed batch-1 runs per model")
    parser.add_argument("--reuse", action="store_true",
                        help="keep models already in --workdir (delete a folder to redo its step)")
    args = parser.parse_args()

    from slimline.data import load_split
    from slimline.measure import file_size, onnx_accuracy, time_interleaved
    from slimline.params import load_params
    from slimline.runtime import make_session

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    params = load_params(args.params)
    raw = yaml.safe_load(args.params.read_text())
    for section in ("distill", "quantize"):   # the bench measures the techniques, switched on
        raw.setdefault(section, {})["enabled"] = True
    bench_params = work / "params.yaml"
    bench_params.write_text(yaml.safe_dump(raw, sort_keys=False))

    models, commands, seconds = {"teacher": args.teacher}, {"teacher": "(the prepare stage)"}, {}
    previous = args.teacher
    for name, out in (("prune", "pruned"), ("decompose", "decomposed"), ("distill", "distilled"),
                      ("quantize", "quantized")):
        paths = {"input": previous, **({"teacher": args.teacher} if name == "distill" else {}),
                 "data": args.data}
        paths.update(output=work / out, metrics=work / f"{name}.json", log=work / f"{name}.log")
        command = stage(name, bench_params, **paths)
        seconds[out] = run(command, work / f"{name}.stdout", reuse=work / out if args.reuse else None)
        models[out], commands[out], previous = work / out, shlex.join(command[1:]), work / out

    command = stage("quantize", bench_params, input=args.teacher, data=args.data, output=work / "ort-int8",
                    metrics=work / "ort-int8.json", log=work / "ort-int8.log")
    seconds["ort-int8"] = run(command, work / "ort-int8.stdout", reuse=work / "ort-int8" if args.reuse else None)
    models["ort-int8"], commands["ort-int8"] = work / "ort-int8", shlex.join(command[1:])

    started = time.perf_counter()
    if not (args.reuse and (work / "tp50-ft" / "model.onnx").is_file()):
        torch_pruning_baseline(args.teacher, args.data, work / "tp50-ft", params.seed)
    command = stage("quantize", bench_params, input=work / "tp50-ft", data=args.data,
                    output=work / "tp50+ft+int8", metrics=work / "tp50.json", log=work / "tp50.log")
    run(command, work / "tp50.stdout", reuse=work / "tp50+ft+int8" if args.reuse else None)
    seconds["tp50+ft+int8"] = time.perf_counter() - started
    models["tp50+ft+int8"] = work / "tp50+ft+int8"
    commands["tp50+ft+int8"] = ("torch_pruning.MagnitudePruner(p=1, ratio 0.5) + slimline.train.fit(2 epochs, "
                                "lr 0.01) in bench/line.py; then " + shlex.join(command[1:]))

    test = load_split(args.data / "test.npz")
    sessions = {name: make_session(path / "model.onnx") for name, path in models.items()}
    top1 = {name: onnx_accuracy(session, test) for name, session in sessions.items()}
    size = {name: file_size(path / "model.onnx") for name, path in models.items()}
    print(f"\ntiming {len(sessions)} models interleaved: {args.runs} batch-1 runs each, one thread ...", flush=True)
    timing = time_interleaved(sessions, test.images[:1], runs=args.runs, warmup=30, rounds=10)
    p50 = {name: t.percentile(50) for name, t in timing.items()}

    base = "teacher"
    header = f"{'model':<14} {'test top-1':>10} {'drop (pt)':>9} {'size kB':>9} {'smaller':>8} {'p50 ms':>8} {'faster':>7}"
    print("\n" + header + "\n" + "-" * len(header))
    for name in models:
        drop = 100 * (top1[base] - top1[name])
        print(f"{name:<14} {100 * top1[name]:>9.2f}% {drop:>+9.2f} {size[name] / 1e3:>9.0f} "
              f"{size[base] / size[name]:>7.1f}x {p50[name]:>8.3f} {p50[base] / p50[name]:>6.2f}x")
    print("\ncommands:")
    for name, command in commands.items():
        extra = f"  [{seconds[name]:.0f} s]" if name in seconds else ""
        print(f"  {name:<14} {command}{extra}")

    def verdict(name: str) -> list[str]:
        goal = TARGETS[name]
        model = "quantized" if name == "line" else name
        ratio, speedup = size[model] / size[base], p50[base] / p50[model]
        drop = 100 * (top1[base] - top1[model])
        return [f"{'PASS' if ratio <= goal['size'] else 'FAIL'}  {name}: size {ratio:.3f}x of fp32 (target <= {goal['size']:.3f}x)",
                f"{'PASS' if speedup >= goal['speedup'] else 'FAIL'}  {name}: {speedup:.2f}x faster (target >= {goal['speedup']}x)",
                f"{'PASS' if drop <= goal['drop'] else 'FAIL'}  {name}: top-1 drop {drop:+.2f} points (target <= {goal['drop']})"]

    print("\ntargets (issue 4):")
    for line in verdict("ort-int8") + verdict("line"):
        print("  " + line)
    for baseline in ("ort-int8", "tp50+ft+int8"):
        beats = (size["quantized"] < size[baseline] and p50["quantized"] < p50[baseline]
                 and top1["quantized"] >= top1[baseline])
        print(f"  {'PASS' if beats else 'FAIL'}  line vs {baseline}: smaller ({size['quantized'] / 1e3:.0f} vs "
              f"{size[baseline] / 1e3:.0f} kB), faster ({p50['quantized']:.3f} vs {p50[baseline]:.3f} ms), "
              f"top-1 {100 * top1['quantized']:.2f}% vs {100 * top1[baseline]:.2f}%")
    results = {name: {"test_top1": top1[name], "size_bytes": size[name], "latency_p50_ms": p50[name]}
               for name in models}
    (work / "bench.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
