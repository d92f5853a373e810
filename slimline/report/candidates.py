"""The student candidates of distill.student_budget in the report: each depth's measured speed-up
and val cosine against the two budgets, read back from the distill stage's flat metrics (the
stage that measured them; evaluate only shows them)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from slimline.errors import SlimlineError

_CANDIDATE_KEY = re.compile(
    r"^candidate_(\d+)_layers\.(initial_fidelity|speedup|fidelity|task_drop)$")


@dataclass
class StudentChoice:
    rows: list[dict]          # per depth: depth, initial_fidelity, speedup, fidelity (or None),
                              # task_drop (or None)
    chosen_depth: int
    met_budget: bool          # the shipped candidate met its budget (else none did)
    min_speedup: float
    min_fidelity: float
    max_task_drop: float | None = None   # set where the val texts' labelled tasks judged it


def student_choice(metrics: dict) -> StudentChoice | None:
    """The candidates in a distill metrics dict, or None where no budget chose the student."""
    rows: dict[int, dict] = {}
    for key, value in metrics.items():
        match = _CANDIDATE_KEY.match(key)
        if match:
            depth = int(match.group(1))
            rows.setdefault(depth, {"depth": depth, "fidelity": None, "task_drop": None})[
                match.group(2)] = value
    if not rows or "student_depth" not in metrics:
        return None
    return StudentChoice([rows[depth] for depth in sorted(rows)], int(metrics["student_depth"]),
                         bool(metrics["student_met_budget"]),
                         metrics["student_budget.min_speedup"],
                         metrics["student_budget.min_fidelity"],
                         metrics.get("student_budget.max_task_drop"))


def read_student_choice(path: Path) -> StudentChoice | None:
    try:
        return student_choice(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError) as exc:
        raise SlimlineError(f"{path}: not the distill stage's metrics ({exc})") from None


def choice_lines(choice: StudentChoice) -> list[str]:
    """The report's section: one row per candidate depth."""
    fast = (f"at least {choice.min_speedup:g}x faster than the fp32 teacher (each candidate as "
            "ONNX Runtime's dynamic int8, batch 1, timed by distill on the machine that ran it)")
    if choice.max_task_drop is not None:
        budget = (f"keeps the val texts' labelled tasks (probe, k-NN) within "
                  f"{choice.max_task_drop:g} points of the teacher (val cosine beside it)")
    else:
        budget = f"meets min_fidelity {choice.min_fidelity:g} in val cosine (no labels)"
    why = (f"distill.student_budget shipped the fastest depth {fast} that after distillation "
           f"{budget}." if choice.met_budget else
           f"**No candidate met the budget**: none that {budget}; distill.student_budget "
           f"shipped the best depth {fast}.")
    lines = ["## Student candidates", "", why, "",
             "| depth | val cosine before | speed-up | val cosine after | val task drop, judged "
             "| |",
             "|---|---|---|---|---|---|"]
    for row in choice.rows:
        after = "not trained" if row["fidelity"] is None else f"{row['fidelity']:.4f}"
        drop = "" if row["task_drop"] is None else f"{row['task_drop']:+.2f} points"
        lines.append(f"| {row['depth']} | {row['initial_fidelity']:.4f} | {row['speedup']:.2f}x "
                     f"| {after} | {drop} "
                     f"| {'shipped' if row['depth'] == choice.chosen_depth else ''} |")
    return lines + ["", "![student candidates](candidates.png)", ""]
