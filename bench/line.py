"""The full line against what a practitioner gets from single tools, measured side by side.

    python bench/line.py [--teacher models/teacher] [--data data/prepared] [--params params.yaml]
                         [--workdir /tmp/slimline-bench] [--runs 300] [--reuse]

Runs the real stages (python -m stages.X) into a scratch folder, builds the practitioner
baselines (bench/baselines.py: ort-int8, tp50+ft+int8), then measures every model in ONE
interleaved ONNX Runtime timing run (batch 1, one thread), so machine noise hits all of them
alike. Prints a table, the commands that produced each model, and the issue's targets as
PASS/FAIL lines.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
from pathlib import Path

import yaml
from baselines import ROOT, Built, beats, build_baselines, measure_all, print_table, run, stage

TARGETS = {  # issue 4
    "ort-int8": {"size": 0.27, "speedup": 2.3, "drop": 0.3},
    "line": {"size": 1 / 16, "speedup": 6.0, "drop": 0.5},
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--teacher", type=Path, default=ROOT / "models/teacher")
    parser.add_argument("--data", type=Path, default=ROOT / "data/prepared")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/slimline-bench"))
    parser.add_argument("--runs", type=int, default=300, help="timed batch-1 runs per model")
    parser.add_argument("--reuse", action="store_true",
                        help="keep models already in --workdir (delete a folder to redo its step)")
    args = parser.parse_args()

    from slimline.config.load import load_params

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    params = load_params(args.params)
    raw = yaml.safe_load(args.params.read_text())
    for section in ("distill", "quantize"):   # the bench measures the techniques, switched on
        raw.setdefault(section, {})["enabled"] = True
    bench_params = work / "params.yaml"
    bench_params.write_text(yaml.safe_dump(raw, sort_keys=False))

    built = {"teacher": Built(args.teacher, "(the prepare stage)")}
    previous = args.teacher
    for name, out in (("prune", "pruned"), ("decompose", "decomposed"), ("distill", "distilled"),
                      ("quantize", "quantized")):
        paths = {"input": previous, **({"teacher": args.teacher} if name == "distill" else {}),
                 "data": args.data}
        paths.update(output=work / out, metrics=work / f"{name}.json", log=work / f"{name}.log")
        command = stage(name, bench_params, **paths)
        seconds = run(command, work / f"{name}.stdout", reuse=work / out if args.reuse else None)
        built[out] = Built(work / out, shlex.join(command[1:]), seconds)
        previous = work / out
    built.update(
        build_baselines(args.teacher, args.data, bench_params, work, params.seed, args.reuse)
    )

    measured = measure_all({name: b.path for name, b in built.items()}, args.data, args.runs)
    print_table(measured)
    print("\ncommands:")
    for name, b in built.items():
        print(f"  {name:<14} {b.command}" + (f"  [{b.seconds:.0f} s]" if b.seconds else ""))

    def verdict(name: str) -> list[str]:
        goal = TARGETS[name]
        model, base = measured["quantized" if name == "line" else name], measured["teacher"]
        ratio, speedup = (
            model.size_bytes / base.size_bytes,
            base.latency_p50_ms / model.latency_p50_ms,
        )
        drop = 100 * (base.test_top1 - model.test_top1)
        def mark(ok: bool) -> str:
            return "PASS" if ok else "FAIL"

        return [
            f"{mark(ratio <= goal['size'])}  {name}: size {ratio:.3f}x of fp32 "
            f"(target <= {goal['size']:.3f}x)",
            f"{mark(speedup >= goal['speedup'])}  {name}: {speedup:.2f}x faster "
            f"(target >= {goal['speedup']}x)",
            f"{mark(drop <= goal['drop'])}  {name}: top-1 drop {drop:+.2f} points "
            f"(target <= {goal['drop']})",
        ]

    print("\ntargets (issue 4):")
    for line in verdict("ort-int8") + verdict("line"):
        print("  " + line)
    for baseline in ("ort-int8", "tp50+ft+int8"):
        print("  " + beats(measured, "quantized", baseline))
    (work / "bench.json").write_text(
        json.dumps({n: dataclasses.asdict(m) for n, m in measured.items()}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
