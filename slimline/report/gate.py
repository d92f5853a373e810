"""The gate: the shipped model against its budgets; publish runs only when every check passes.

Accuracy is judged on the paired interval by default ("interval" rule): the run fails only when
even the most favourable end of the 95% interval drops more than allowed. On a 1,000-image test
split one image is 0.1 point, so a point-estimate rule would flap on two images; with the interval
rule a two-item difference never fails the gate and a real regression of a few points always does.

An embedding model is judged by the tasks its data label, the same way: each labelled task's drop
against the teacher (probe and k-NN accuracy on class labels, exact paired interval; STS Spearman
on pairs scored by people, nDCG@10 and recall@10 on queries with relevance labels, bootstrap
intervals) within max_task_drop. Mean cosine and recall@10 of
the teacher's neighbours gate only where no task is judged, and for the teacher's own network
(int8 of it should keep them): a distilled student may move neighbours and still classify and
rank as well as the teacher (MiniLM's 3-layer student: cosine 0.929, probe 0.793 against 0.787).
"""
from __future__ import annotations

from dataclasses import dataclass

from slimline.measure.stats import PairedDifference

# The labelled tasks an embedding model is judged on, by their keys in an evaluation row.
TASK_CHECKS = {"probe_accuracy": "probe accuracy", "knn_accuracy": "k-NN accuracy",
               "sts_spearman": "STS Spearman", "ndcg_at_10": "nDCG@10 (labels)",
               "labelled_recall_at_10": "recall@10 (labels)"}


@dataclass(frozen=True)
class BudgetCheck:
    name: str
    budget: float
    measured: float        # the point estimate, as a person reads it
    judged: float          # the value the rule compares with the budget
    higher_is_better: bool
    unit: str

    @property
    def margin(self) -> float:
        """Positive: room left; negative: by how much the budget is missed."""
        return self.judged - self.budget if self.higher_is_better else self.budget - self.judged

    @property
    def passed(self) -> bool:
        return self.margin >= 0


def check_budgets(gate, shipped_drop: PairedDifference, latency_ms: float, size_mb: float,
                  throughput: float, *, size_ratio: float = 1.0, speedup: float = 1.0,
                  judged: str = "top-1", throughput_unit: str = "images/s",
                  embeddings: dict | None = None, student: bool = False) -> list[BudgetCheck]:
    """`gate` is params.evaluate.gate; drops are in points (100 x fraction) of `judged` (top-1,
    or an embedding model's nn@1 agreement, the teacher's being 100%). `embeddings`: an
    embedding model's evaluation row (cos_mean, recall10, and per labelled task its difference
    from the teacher with the interval: slimline/measure/evaluation.py), judged by
    max_task_drop on each labelled task, and by min_embedding_fidelity and min_recall_at_10
    where no task is judged or the model is not a distilled `student` (see the module
    docstring). The item-by-item nn@1 drop is judged only where max_nn1_drop is set (nn@1 on a
    few hundred close texts is brittle: int8 of an unchanged MiniLM already loses 15 of its
    points at cosine 0.993)."""
    drop_budget = gate.max_top1_drop if embeddings is None else gate.max_nn1_drop
    checks = [] if drop_budget is None else [
        _drop_check(gate, f"{judged} drop vs teacher", drop_budget, shipped_drop.difference,
                    shipped_drop.high)]
    optional = [("batch-1 latency p50", gate.max_latency_ms, latency_ms, False, "ms"),
                ("ONNX file size", gate.max_size_mb, size_mb, False, "MB"),
                ("batch throughput", gate.min_throughput, throughput, True, throughput_unit),
                ("size vs teacher", gate.max_size_ratio, size_ratio, False, "x"),
                ("speed-up vs teacher", gate.min_speedup, speedup, True, "x")]
    tasks = [] if embeddings is None or gate.max_task_drop is None else [
        key for key in TASK_CHECKS if f"{key}_diff" in embeddings]
    checks += [_drop_check(gate, f"{TASK_CHECKS[key]} drop vs teacher", gate.max_task_drop,
                           embeddings[f"{key}_diff"], embeddings[f"{key}_diff_high"])
               for key in tasks]
    if embeddings is not None and not (tasks and student):
        optional += [("embedding fidelity", gate.min_embedding_fidelity, embeddings["cos_mean"],
                      True, "mean cosine"),
                     ("retrieval recall@10", gate.min_recall_at_10, embeddings["recall10"],
                      True, "share")]
    checks += [BudgetCheck(name, budget, value, value, higher, unit)
               for name, budget, value, higher, unit in optional if budget is not None]
    return checks


def _drop_check(gate, name: str, budget: float, difference: float, high: float) -> BudgetCheck:
    """A drop against the teacher in points (differences are fractions, model minus teacher),
    judged at the most favourable end of its interval (`high`: the interval rule) or at the
    point estimate."""
    judged_drop = -100 * high if gate.rule == "interval" else -100 * difference
    return BudgetCheck(name, budget, -100 * difference, judged_drop, False, "points")
