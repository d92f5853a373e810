"""A shallower encoder student chosen by the budgets (distill.student_budget), not fixed in a
profile: the fastest depth that keeps the labelled task (without labels: meets the fidelity
budget), with the layers that measure best.

1. Layers, per candidate depth: backward elimination from the input model's stack, always
   keeping the last layer (the mean-pooled output space lives there): drop, one at a time, the
   layer whose removal leaves the highest val cosine to the teacher before any training. On
   all-MiniLM-L6-v2 the initial cosine ranks subsets as training ends them ([0, 4, 5] 0.73 and
   [0, 2, 5] 0.62 before training; 0.91 and below after), and [0, 2, 4, 5] (0.853) is the best
   of the ten 4-layer subsets that keep the last layer.
2. Speed, per depth: the untrained candidate as ONNX Runtime's own dynamic int8 per channel
   (unfused: the quantize stage's fusion and scheme only add to it, 1.84x against 1.66x on the
   whole MiniLM) against the fp32 teacher, batch 1 x max_length real tokens, interleaved on the
   machine that runs the night. ORT's call, not the quantize technique's: an edit to quantize
   must not retrain the distilled student (the DVC deps follow the imports).
3. The question the gate asks (slimline/report/gate.py): candidates that meet the speed budget
   are distilled fastest first (they share one set of teacher targets). Where the val texts have
   class labels, the first that keeps each labelled task within max_task_drop points of the
   teacher on val (probe and k-NN, at the favourable end of the paired interval, as the gate
   judges test) is kept, its val cosine reported beside it: a distilled student may move the
   teacher's neighbours and still classify as well (MiniLM's 3 layers: cosine 0.929, probe
   0.793 against 0.787). Without labels, the first whose val cosine meets min_fidelity. Either
   way no deeper student is trained for nothing; if none meets it, the best one is kept and the
   log says so in one line, with what the candidates measured here offer.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

from slimline.errors import SlimlineError

TIMING_RUNS, TIMING_ROUNDS = 200, 10    # batch-1 runs per candidate, interleaved rounds


@dataclass
class Candidate:
    depth: int
    layers: list[int]                     # input-model layers the student keeps
    initial_fidelity: float               # val cosine before distillation
    speedup: float | None = None          # int8 candidate vs fp32 teacher, batch 1
    fidelity: float | None = None         # val cosine after distillation (None: not trained)
    # The worst labelled task's drop on val in points, as judged (the favourable end of its
    # paired interval) and as estimated (None: not trained, or no labels).
    task_drop: float | None = None
    task_drop_estimate: float | None = None
    model: object = field(default=None, repr=False)

    def row(self) -> dict:
        return {"depth": self.depth, "layers": self.layers,
                "initial_fidelity": round(self.initial_fidelity, 4),
                "speedup": None if self.speedup is None else round(self.speedup, 2),
                "fidelity": None if self.fidelity is None else round(self.fidelity, 4),
                "task_drop": None if self.task_drop is None else round(self.task_drop, 2)}

    def meets(self, min_fidelity: float, max_task_drop: float | None) -> bool:
        """The budget the data allow: the labelled tasks' drop where there are labels (and a
        budget for it), else the val cosine."""
        if self.task_drop is not None and max_task_drop is not None:
            return self.task_drop <= max_task_drop
        return self.fidelity is not None and self.fidelity >= min_fidelity


def val_task_drop(teacher_embeddings, student_embeddings, labels
                  ) -> tuple[float, float] | None:
    """(judged, estimated): the worst of the labelled tasks' drops (points) of the student
    against the teacher on val, judged at the favourable end of each paired interval (the
    gate's interval rule), and the worst point estimate; None where the val texts have no class
    labels."""
    from slimline.measure.embedding_tasks import task_differences, task_outcomes

    teacher = task_outcomes(teacher_embeddings, labels)
    if not teacher:
        return None
    differences = task_differences(teacher, task_outcomes(student_embeddings, labels)).values()
    return (max(-100 * difference.high for difference in differences),
            max(-100 * difference.difference for difference in differences))


def describe_task_drop(candidate: Candidate) -> str:
    return (f"val task drop {candidate.task_drop_estimate:+.2f} points, "
            f"{candidate.task_drop:+.2f} at the favourable end of its interval")


def eliminate_layers(model, depths: list[int], fidelity_of) -> dict[int, tuple[list[int], float]]:
    """depth -> (kept layer indices, val cosine before training) by backward elimination (see
    the module docstring). `fidelity_of(model)` scores a model on val."""
    from slimline.models.huggingface import encoder_layers, keep_encoder_layers

    total = len(encoder_layers(model)[1])
    wanted = sorted({depth for depth in depths if 1 <= depth < total}, reverse=True)
    chosen, kept = {}, list(range(total))
    while wanted and len(kept) > wanted[-1]:
        trials = []
        for drop in kept[:-1]:
            layers = [index for index in kept if index != drop]
            trial = copy.deepcopy(model)
            keep_encoder_layers(trial, layers)
            trials.append((fidelity_of(trial), layers))
        score, kept = max(trials, key=lambda trial: trial[0])
        if len(kept) in wanted:
            chosen[len(kept)] = (kept, score)
    return chosen


def pick(candidates: list[Candidate], min_speedup: float, min_fidelity: float,
         max_task_drop: float | None = None) -> tuple[Candidate, str]:
    """(the student to ship, one line why) among trained candidates: the fastest that meets
    both budgets (Candidate.meets), else the best that meets the speed budget."""
    fast = [c for c in candidates if c.speedup is not None and c.speedup >= min_speedup
            and c.fidelity is not None]
    if not fast:
        raise SlimlineError(f"distill.student_budget: no candidate depth runs min_speedup = "
                            f"{min_speedup:g}x faster than the teacher here (measured: "
                            + ", ".join(f"{c.depth} layers {c.speedup:.2f}x" for c in candidates
                                        if c.speedup is not None) + ")")
    labelled = max_task_drop is not None and all(c.task_drop is not None for c in fast)
    good = [c for c in fast if c.meets(min_fidelity, max_task_drop)]
    if good:
        best = max(good, key=lambda c: c.speedup)
        judged = (f"{describe_task_drop(best)} (budget {max_task_drop:g}), "
                  f"val cosine {best.fidelity:.4f} beside it" if labelled
                  else f"val cosine {best.fidelity:.4f}")
        return best, (f"student: {best.depth} layers {best.layers}, {best.speedup:.2f}x faster, "
                      f"{judged}: the fastest that meets both budgets")
    if labelled:
        best = min(fast, key=lambda c: c.task_drop)
        return best, (f"NO student kept the labelled tasks within distill.student_budget."
                      f"max_task_drop = {max_task_drop:g} points on val: shipping the closest "
                      f"that meets the speed budget, {best.depth} layers {best.layers}, "
                      f"{describe_task_drop(best)}, {best.speedup:.2f}x faster")
    best = max(fast, key=lambda c: c.fidelity)
    offered = ", ".join(f"{c.depth} layers {c.fidelity:.4f} at {c.speedup:.2f}x" for c in
                        sorted(fast, key=lambda c: c.depth))
    return best, (f"NO student met distill.student_budget.min_fidelity = {min_fidelity:g}: no "
                  f"class labels on the val texts, so the budget asks val cosine "
                  f"{min_fidelity:g} of the student and the candidates fast enough here offer "
                  f"{offered}; shipping the most faithful, {best.depth} layers {best.layers} "
                  f"(label the texts to judge the task instead, or lower min_fidelity and "
                  f"evaluate.gate.min_embedding_fidelity knowingly)")


def int8_speedups(students: dict[int, object], teacher_onnx, example: dict, export, *,
                  runs: int = TIMING_RUNS, rounds: int = TIMING_ROUNDS,
                  log=print) -> dict[int, float]:
    """depth -> measured batch-1 speed-up of each student (untrained: speed does not depend on
    the weights) as ONNX Runtime's dynamic int8 per channel over the fp32 teacher graph, in one
    interleaved timing run. `export(model, path)` writes a model's fp32 ONNX graph; `example`:
    one text, every position real."""
    import tempfile
    from pathlib import Path

    from onnxruntime.quantization import QuantType, quantize_dynamic

    from slimline.measure.latency import time_interleaved
    from slimline.measure.runtime import make_session, quiet_ort
    from slimline.measure.stats import speedup_spread

    sessions = {"teacher": make_session(teacher_onnx)}
    with tempfile.TemporaryDirectory(prefix="slimline-candidates-") as tmp:
        for depth, student in students.items():
            fp32, int8 = Path(tmp) / f"{depth}.onnx", Path(tmp) / f"{depth}-int8.onnx"
            export(student, fp32)
            with quiet_ort():
                quantize_dynamic(str(fp32), str(int8), per_channel=True,
                                 weight_type=QuantType.QInt8)
            sessions[depth] = make_session(int8)
        timings = time_interleaved(sessions, example, runs=runs, warmup=10, rounds=rounds)
    speedups = {depth: speedup_spread(timings["teacher"].rounds, timings[depth].rounds).median
                for depth in students}
    log("candidate students as dynamic int8 vs the fp32 teacher, batch 1 x "
        f"{example['input_ids'].shape[1]} tokens, {runs} interleaved runs: "
        + ", ".join(f"{depth} layers {speedup:.2f}x" for depth, speedup in speedups.items()))
    return speedups
