"""search: the budget-driven search over all four techniques for a target profile.

Not a dvc.yaml stage (it runs the technique stages many times): run it by hand or from the
`slimline_search` DAG, then run the written profile nightly with `target: <name>`.

    python -m stages.search --target phone --minutes 30 --write-profile phone_searched
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from slimline.artifact.atomic import write_json, write_text
from slimline.artifact.recipe import ONNX
from slimline.config.params import deep_merge
from slimline.config.profiles import load_profile
from slimline.errors import SlimlineError
from slimline.measure.graph import file_size
from slimline.measure.runtime import onnx_accuracy
from slimline.search import (
    OBJECTIVES,
    Space,
    TrialRunner,
    best_within_budgets,
    front_plot,
    open_study,
    pareto_front,
    quantize_schemes,
    search,
    start_from,
)
from slimline.stage import stage_main


def add_arguments(parser):
    parser.add_argument("--target", required=True, help="profile whose budgets the pick must meet")
    parser.add_argument("--data", type=Path, default=Path("data/prepared"), help="prepared splits")
    parser.add_argument(
        "--teacher", type=Path, default=Path("models/teacher"), help="teacher artifact"
    )
    parser.add_argument("--out", type=Path, default=Path("search"),
                        help="study database, trial folders and the front report go here")
    parser.add_argument("--study-name", default="slimline", help="resume a study by its name")
    parser.add_argument(
        "--max-trials", type=int, default=20, help="stop after this many complete trials"
    )
    parser.add_argument(
        "--minutes", type=float, default=30, help="wall-clock budget of this invocation"
    )
    parser.add_argument("--latency-runs", type=int, default=200, help="batch-1 runs per candidate")
    parser.add_argument("--write-profile", metavar="NAME",
                        help="write the pick as profiles/NAME.yaml (recipe + the target's budgets)")


def main(args, params, log):
    if args.max_trials < 1 or args.minutes <= 0:
        raise SlimlineError(
            f"--max-trials {args.max_trials} / --minutes {args.minutes}: must be positive"
        )
    profiles = args.params.parent / "profiles"
    profile = load_profile(profiles, args.target, "--target")
    for path in (args.data / "val.npz", args.teacher / ONNX):
        if not path.is_file():
            raise SlimlineError(f"{path}: not found (run `dvc repro prepare` first)")
    base = yaml.safe_load(args.params.read_text())
    runner = TrialRunner(
        base, args.data, args.teacher, args.out / "trials", args.latency_runs, log.info
    )
    study = open_study(args.out / "study.db", args.study_name, params.seed)
    space = Space(
        quantize_schemes(args.teacher / ONNX, runner.val.head(1)), params.decompose.rank_rule
    )
    log.info("search: quantization schemes tried: %s; decomposition by %s",
             ", ".join(space.schemes), space.rank_rule)
    start_from(study, space.point(deep_merge(params.model_dump(), profile.recipe)), log.info)
    candidates = search(study, runner, space, max_trials=args.max_trials,
                        wall_clock_s=60 * args.minutes, log=log.info)
    if not candidates:
        raise SlimlineError("search: no trial completed within the budget; raise --minutes")

    teacher_val = onnx_accuracy(runner.teacher_session, runner.val)
    teacher = {"val_top1": teacher_val, "size_mb": file_size(args.teacher / ONNX) / 1e6,
               "latency_ms": runner.teacher_latency()}
    front = sorted(pareto_front(candidates), key=lambda c: c.latency_ms)
    pick = best_within_budgets(front, profile.budgets, teacher)
    front_plot(candidates, front, pick, args.out / "front.png", teacher)
    lines = [f"# Search for `{args.target}`", "", f"{len(candidates)} complete trials; "
             f"teacher: val top-1 {100 * teacher_val:.2f}%, {teacher['latency_ms']:.3f} ms, "
             f"{teacher['size_mb']:.3f} MB.", "", "## Pareto front (val top-1, latency, size)", "",
             "| trial | val top-1 % | p50 ms | size MB | recipe |", "|---|---|---|---|---|"]
    lines += [f"| {c.number} | {100 * c.val_top1:.2f} | {c.latency_ms:.3f} | {c.size_mb:.3f} | "
              f"`{json.dumps(c.recipe, sort_keys=True)}` |" for c in front]
    verdict = (f"Pick: trial {pick.number} (fastest front member within the budgets)." if pick else
               "No front member meets the budgets of this profile.")
    lines += ["", verdict, "", "![front](front.png)", ""]
    write_text(args.out / "front.md", "\n".join(lines))
    write_json(args.out / "front.json", {"objectives": list(OBJECTIVES), "teacher": teacher,
                                         "front": [c.__dict__ for c in front],
                                         "pick": pick.__dict__ if pick else None})
    log.info("%s; front of %d in %s", verdict, len(front), args.out / "front.md")
    if args.write_profile:
        if pick is None:
            raise SlimlineError(f"--write-profile {args.write_profile}: no candidate meets the "
                                f"budgets of '{args.target}'; nothing written")
        body = {"description": f"Found by `python -m stages.search --target {args.target}` "
                               f"(trial {pick.number}).",
                "recipe": pick.recipe,
                "budgets": profile.budgets.model_dump(exclude_none=True)}
        write_text(profiles / f"{args.write_profile}.yaml", yaml.safe_dump(body, sort_keys=False))
        log.info(
            "wrote %s: run it nightly with `target: %s`",
            profiles / f"{args.write_profile}.yaml",
            args.write_profile,
        )


if __name__ == "__main__":
    stage_main("search", main, add_arguments)
