"""The search's pick for a target against the single-tool baselines, measured side by side.

    python bench/search.py [--target phone] [--teacher models/teacher] [--data data/prepared]
                           [--params params.yaml] [--workdir /tmp/slimline-bench-search]
                           [--minutes 60] [--max-trials 12] [--runs 300] [--reuse]
                           [--set prune.finetune.epochs=3 ...]

Runs (or resumes) `python -m stages.search` for the target, builds the practitioner baselines of
bench/baselines.py, then measures the teacher, every Pareto-front member and both baselines in ONE
interleaved ONNX Runtime run (batch 1, one thread) on the test split — the search chose on the
validation split, so these are fresh figures. Issue 7's target: the pick is faster and smaller
than both baselines at equal or better accuracy. `--set key=value` changes the params the search's
trials run with (e.g. a shorter fine-tuning schedule on a busy machine); the table says which.
"""
from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

import yaml
from baselines import ROOT, Built, beats, build_baselines, measure_all, print_table, run, stage


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", default="phone")
    parser.add_argument("--teacher", type=Path, default=ROOT / "models/teacher")
    parser.add_argument("--data", type=Path, default=ROOT / "data/prepared")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/slimline-bench-search"))
    parser.add_argument("--minutes", type=float, default=60, help="the search's wall-clock budget")
    parser.add_argument("--max-trials", type=int, default=12)
    parser.add_argument("--runs", type=int, default=300, help="timed batch-1 runs per model")
    parser.add_argument("--reuse", action="store_true", help="keep baselines already in --workdir")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="params override for the search's trials (dotted key, YAML value)")
    args = parser.parse_args()

    from slimline.config.load import load_params
    from slimline.nightly.overrides import merge_overrides

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    seed = load_params(args.params).seed
    overrides = {
        key: yaml.safe_load(value) for key, _, value in (item.partition("=") for item in args.set)
    }
    search_params = work / "search-params.yaml"  # beside a link to profiles/, as the search expects
    search_params.write_text(yaml.safe_dump(
        merge_overrides(yaml.safe_load(args.params.read_text()), overrides), sort_keys=False))
    if not (work / "profiles").exists():
        (work / "profiles").symlink_to(args.params.resolve().parent / "profiles")
    search_out = work / "search"
    # The search resumes its study in search_out: a re-run adds trials, never redoes them.
    command = stage(
        "search",
        search_params,
        target=args.target,
        data=args.data,
        teacher=args.teacher,
        out=search_out,
        minutes=args.minutes,
        **{"max-trials": args.max_trials},
        log=work / "search.log",
    )
    seconds = run(command, work / "search.stdout")
    front = json.loads((search_out / "front.json").read_text())
    if front["pick"] is None:
        raise SystemExit(
            f"bench: no candidate meets the '{args.target}' budgets; see {search_out / 'front.md'}"
        )
    pick = front["pick"]["number"]

    built = {"teacher": Built(args.teacher, "(the prepare stage)")}
    notes = {"teacher": ""}
    for member in front["front"]:
        name = f"trial {member['number']}" + (" PICK" if member["number"] == pick else "")
        built[name] = Built(search_out / "trials" / f"trial-{member['number']:04d}" / "quantized",
                            f"trial {member['number']} of: {shlex.join(command[1:])}")
        notes[name] = f"val {100 * member['val_top1']:.2f}%  " + json.dumps(
            member["recipe"], sort_keys=True
        )
    quantize_params = work / "params.yaml"   # baselines quantize with the line's own settings, on
    raw = yaml.safe_load(args.params.read_text())
    raw.setdefault("quantize", {})["enabled"] = True
    quantize_params.write_text(yaml.safe_dump(raw, sort_keys=False))
    built.update(build_baselines(args.teacher, args.data, quantize_params, work, seed, args.reuse))

    measured = measure_all({name: b.path for name, b in built.items()}, args.data, args.runs)
    print(f"\nsearch for '{args.target}': {len(front['front'])} front members "
          f"(search ran {seconds / 60:.0f} min this time; front.md and front.png in {search_out}); "
          f"trial params overridden: {overrides or 'none'}")
    print_table(measured, notes=notes)
    print("\ncommands:")
    for name in ("ort-int8", "tp50+ft+int8"):
        print(f"  {name:<14} {built[name].command}")
    print(f"  search         {shlex.join(command[1:])}")
    pick_name = next(name for name in built if name.endswith("PICK"))
    print(
        "\ntarget (issue 7): the pick is faster and smaller at equal or better accuracy than both"
    )
    for baseline in ("ort-int8", "tp50+ft+int8"):
        print("  " + beats(measured, pick_name, baseline))


if __name__ == "__main__":
    main()
