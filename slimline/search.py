"""Budget-driven search over the joint space of the four techniques.

Optuna's NSGA-II sampler proposes recipes (keep ratio and importance criterion, decomposition
strength, distillation on/off, quantization scheme and calibration method); every candidate runs
the real stages and is measured for real on the validation split (accuracy) and in ONNX Runtime
(batch-1 latency interleaved with the teacher, file size). Trials live in a SQLite study on disk,
so an interrupted search resumes where it stopped.

A new study starts from the target profile's own recipe (its first trial), so the search explores
around a known-good point instead of spending its first generation on random ones; and dynamic
int8 is offered only to MatMul-heavy models (it leaves convolutions fp32; see
slimline/config/schemes.py).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import yaml

from slimline.artifact.recipe import ONNX
from slimline.config.params import deep_merge
from slimline.config.schemes import SCHEMES
from slimline.data.splits import load_split
from slimline.errors import SlimlineError
from slimline.measure.graph import file_size, load_onnx, macs_by_kind
from slimline.measure.latency import time_interleaved
from slimline.measure.runtime import make_session, onnx_accuracy

TECHNIQUE_STAGES = (("prune", "pruned"), ("decompose", "decomposed"), ("distill", "distilled"),
                    ("quantize", "quantized"))
OBJECTIVES = ("val_top1", "latency_ms", "size_mb")   # maximise, minimise, minimise


KEEP_RATIO_RANGE = (0.3, 0.8, 0.05)   # (low, high, step)
# The decomposition knob the search varies is params.yaml's rank_rule's: (low, high, step).
DECOMPOSE_RANGES = {"energy": (0.8, 0.99, 0.01), "param_reduction": (0.2, 0.8, 0.05)}


def quantize_schemes(teacher_onnx: Path, example) -> tuple[str, ...]:
    """The quantization choices worth trying (slimline/config/schemes.py), and none: a scheme that
    touches MatMul only is tried only when most MACs are in MatMul/Gemm."""
    macs = macs_by_kind(load_onnx(teacher_onnx), example)
    matmul_heavy = macs["matmul"] >= macs["conv"]
    return (*(scheme.name for scheme in SCHEMES.values()
              if scheme.searched and (matmul_heavy or not scheme.matmul_only)), "none")


def _snap(value: float, low: float, high: float, step: float) -> float:
    return round(min(max(round(value / step) * step, low), high), 2)


@dataclass(frozen=True)
class Space:
    """The joint space: keep ratio and importance, decomposition on/off and strength, distillation
    on/off, quantization scheme and calibration method."""
    schemes: tuple[str, ...]
    rank_rule: str            # "energy" | "param_reduction"

    def sample(self, trial: optuna.Trial) -> dict:
        """One point of the space, as params.yaml overrides."""
        quantize = trial.suggest_categorical("quantize_scheme", list(self.schemes))
        # Stepped floats come back as 0.6000000000000001; recipes end up in profiles: round them.
        low, high, step = KEEP_RATIO_RANGE
        recipe = {
            "prune": {
                "enabled": True,
                "keep_ratio": round(trial.suggest_float("keep_ratio", low, high, step=step), 2),
                "importance": trial.suggest_categorical(
                    "importance", ["l1", "l2", "bn_scale", "taylor"]
                ),
            },
            "decompose": {"enabled": trial.suggest_categorical("decompose", [True, False])},
            "distill": {
                "enabled": trial.suggest_categorical("distill", [True, False]),
                "compare_without_teacher": False,
            },
            "quantize": {"enabled": quantize != "none"},
        }
        if recipe["decompose"]["enabled"]:
            low, high, step = DECOMPOSE_RANGES[self.rank_rule]
            strength = round(trial.suggest_float(self.rank_rule, low, high, step=step), 2)
            recipe["decompose"].update({"rank_rule": self.rank_rule, self.rank_rule: strength})
        if quantize != "none":
            recipe["quantize"]["scheme"] = quantize
        if quantize == "static":
            recipe["quantize"]["calibration_method"] = trial.suggest_categorical(
                "calibration_method", ["minmax", "entropy", "percentile"])
        return recipe

    def point(self, params: dict) -> dict | None:
        """The coordinates of `params` (params.yaml with a profile's recipe merged in), or None
        when that recipe lies outside the space (pruning off, 4-bit, QAT)."""
        prune, decompose = params["prune"], params["decompose"]
        quantize = params["quantize"]["scheme"] if params["quantize"]["enabled"] else "none"
        if not prune["enabled"] or quantize not in self.schemes:
            return None
        point = {"quantize_scheme": quantize, "importance": prune["importance"],
                 "keep_ratio": _snap(prune["keep_ratio"], *KEEP_RATIO_RANGE),
                 "decompose": decompose["enabled"], "distill": params["distill"]["enabled"]}
        if decompose["enabled"]:
            point[self.rank_rule] = _snap(
                decompose[self.rank_rule], *DECOMPOSE_RANGES[self.rank_rule]
            )
        if quantize == "static":
            point["calibration_method"] = params["quantize"]["calibration_method"]
        return point


def start_from(study: optuna.Study, point: dict | None, log) -> None:
    """Queue the profile's point as the first trial of a new study."""
    if point is None or study.get_trials(deepcopy=False):
        return
    study.enqueue_trial(point)
    log(
        "search: the first trial is the target profile's recipe "
        f"{json.dumps(point, sort_keys=True)}"
    )


@dataclass(frozen=True)
class Candidate:
    number: int
    recipe: dict
    val_top1: float
    latency_ms: float
    size_mb: float
    seconds: float

    def dominates(self, other: Candidate) -> bool:
        at_least = (self.val_top1 >= other.val_top1 and self.latency_ms <= other.latency_ms
                    and self.size_mb <= other.size_mb)
        better = (self.val_top1 > other.val_top1 or self.latency_ms < other.latency_ms
                  or self.size_mb < other.size_mb)
        return at_least and better


def pareto_front(candidates: list[Candidate]) -> list[Candidate]:
    return [c for c in candidates if not any(o.dominates(c) for o in candidates if o is not c)]


def meets(candidate: Candidate, budgets, teacher: dict) -> bool:
    """Budgets of a profile, judged on validation figures (point estimates); `teacher` has the
    teacher's val_top1, latency_ms and size_mb, for the drop and the relative budgets."""
    if 100 * (teacher["val_top1"] - candidate.val_top1) > budgets.max_top1_drop:
        return False
    if budgets.max_latency_ms is not None and candidate.latency_ms > budgets.max_latency_ms:
        return False
    if budgets.max_size_mb is not None and candidate.size_mb > budgets.max_size_mb:
        return False
    if (budgets.max_size_ratio is not None
            and candidate.size_mb > budgets.max_size_ratio * teacher["size_mb"]):
        return False
    return (budgets.min_speedup is None
            or teacher["latency_ms"] >= budgets.min_speedup * candidate.latency_ms)


def best_within_budgets(front: list[Candidate], budgets, teacher: dict):
    """The fastest front member that meets the budgets (then the smallest), or None."""
    fitting = [c for c in front if meets(c, budgets, teacher)]
    return min(fitting, key=lambda c: (c.latency_ms, c.size_mb), default=None)


class TrialRunner:
    """Runs one recipe through the real technique stages in its own folder, then measures it."""

    def __init__(self, base_params: dict, data: Path, teacher: Path, trials_dir: Path,
                 latency_runs: int, log):
        self.base_params, self.data, self.teacher = base_params, data, teacher
        self.trials_dir, self.latency_runs, self.log = trials_dir, latency_runs, log
        self.val = load_split(data / "val.npz")
        self.teacher_session = make_session(teacher / ONNX, threads=1)

    def teacher_latency(self) -> float:
        timing = time_interleaved({"teacher": self.teacher_session}, self.val.head(1),
                                  runs=self.latency_runs, warmup=10, rounds=5)
        return timing["teacher"].percentile(50)

    def run(self, number: int, recipe: dict) -> Candidate:
        folder = self.trials_dir / f"trial-{number:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        params = deep_merge({**self.base_params, "target": None}, recipe)
        (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        started = time.perf_counter()
        source = self.teacher
        for stage, output in TECHNIQUE_STAGES:
            command = [
                sys.executable,
                "-m",
                f"stages.{stage}",
                "--params",
                str(folder / "params.yaml"),
                "--input",
                str(source),
                "--data",
                str(self.data),
                "--output",
                str(folder / output),
                "--metrics",
                str(folder / f"{stage}.json"),
                "--log",
                str(folder / f"{stage}.log"),
            ]
            if stage == "distill":
                command += ["--teacher", str(self.teacher)]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                raise SlimlineError(
                    f"trial {number}: stage {stage} failed: "
                    f"{result.stderr.strip().splitlines()[-1] if result.stderr else '?'}"
                )
            source = folder / output
        session = make_session(source / ONNX, threads=1)
        timing = time_interleaved({"teacher": self.teacher_session, "candidate": session},
                                  self.val.head(1), runs=self.latency_runs, warmup=10, rounds=5)
        candidate = Candidate(number, recipe, onnx_accuracy(session, self.val),
                              timing["candidate"].percentile(50), file_size(source / ONNX) / 1e6,
                              time.perf_counter() - started)
        (folder / "result.json").write_text(json.dumps(candidate.__dict__, indent=2))
        return candidate


def open_study(storage: Path, name: str, seed: int) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage.parent.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{storage}",
                                directions=["maximize", "minimize", "minimize"],
                                sampler=optuna.samplers.NSGAIISampler(seed=seed),
                                load_if_exists=True)
    # A trial still RUNNING in the database was cut off by an interruption: close it as failed
    # so the resumed search neither waits for it nor counts it.
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    return study


def completed(study: optuna.Study) -> list[Candidate]:
    return [Candidate(t.number, t.user_attrs["recipe"], *t.values, t.user_attrs["seconds"])
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]


def search(study: optuna.Study, runner: TrialRunner, space: Space, *, max_trials: int,
           wall_clock_s: float, log) -> list[Candidate]:
    """Run trials until `max_trials` are complete or the next one would overrun the clock."""
    started = time.perf_counter()
    durations = [c.seconds for c in completed(study)]
    while len(completed(study)) < max_trials:
        elapsed = time.perf_counter() - started
        expected = max(durations) if durations else 0.0
        if elapsed + expected > wall_clock_s:
            log(f"search: stopping, {elapsed:.0f} s used and a trial takes about {expected:.0f} s "
                f"(budget {wall_clock_s:.0f} s)")
            break
        trial = study.ask()
        recipe = space.sample(trial)
        log(f"trial {trial.number}: {json.dumps(recipe, sort_keys=True)}")
        try:
            candidate = runner.run(trial.number, recipe)
        except SlimlineError as exc:
            log(f"trial {trial.number} failed: {exc}")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        trial.set_user_attr("recipe", recipe)
        trial.set_user_attr("seconds", candidate.seconds)
        study.tell(trial, [candidate.val_top1, candidate.latency_ms, candidate.size_mb])
        durations.append(candidate.seconds)
        log(
            f"trial {trial.number}: val top-1 {100 * candidate.val_top1:.2f}%, "
            f"p50 {candidate.latency_ms:.3f} ms, {candidate.size_mb:.3f} MB, "
            f"{candidate.seconds:.0f} s"
        )
    return completed(study)


def front_plot(candidates: list[Candidate], front: list[Candidate], pick, path: Path,
               teacher: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, key, label in ((axes[0], "latency_ms", "batch-1 latency p50 (ms)"),
                             (axes[1], "size_mb", "ONNX file size (MB)")):
        axis.scatter([getattr(c, key) for c in candidates], [100 * c.val_top1 for c in candidates],
                     c="lightgrey", label="trial")
        axis.scatter([getattr(c, key) for c in front], [100 * c.val_top1 for c in front],
                     c="tab:blue", label="Pareto front")
        axis.scatter([teacher[key]], [100 * teacher["val_top1"]], marker="s", c="black",
                     label="teacher")
        if pick is not None:
            axis.scatter([getattr(pick, key)], [100 * pick.val_top1], marker="*", s=200,
                         c="tab:red", label="pick")
        axis.set_xlabel(label)
        axis.set_ylabel("val top-1 (%)")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
