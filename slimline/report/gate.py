"""The gate: the shipped model against its budgets; publish runs only when every check passes.

Accuracy is judged on the paired interval by default ("interval" rule): the run fails only when
even the most favourable end of the 95% interval drops more than allowed. On a 1,000-image test
split one image is 0.1 point, so a point-estimate rule would flap on two images; with the interval
rule a two-item difference never fails the gate and a real regression of a few points always does.
"""
from __future__ import annotations

from dataclasses import dataclass

from slimline.measure.stats import PairedDifference


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
                  embeddings: dict | None = None) -> list[BudgetCheck]:
    """`gate` is params.evaluate.gate; drops are in points (100 x fraction) of `judged` (top-1,
    or an embedding model's nn@1 agreement, the teacher's being 100%). `embeddings`: an
    embedding model's quality (cos_mean, recall10: slimline/measure/embedding.py), judged by
    min_embedding_fidelity and min_recall_at_10 instead of the item-by-item drop, which is
    judged only where max_nn1_drop is set (nn@1 on a few hundred close texts is brittle: int8
    of an unchanged MiniLM already loses 15 of its points at cosine 0.993)."""
    drop_points = -100 * shipped_drop.difference
    # The most favourable drop inside the interval (its lower end), or the point estimate.
    judged_drop = -100 * shipped_drop.high if gate.rule == "interval" else drop_points
    drop_budget = gate.max_top1_drop if embeddings is None else gate.max_nn1_drop
    checks = [] if drop_budget is None else [
        BudgetCheck(f"{judged} drop vs teacher", drop_budget, drop_points, judged_drop, False,
                    "points")]
    optional = [("batch-1 latency p50", gate.max_latency_ms, latency_ms, False, "ms"),
                ("ONNX file size", gate.max_size_mb, size_mb, False, "MB"),
                ("batch throughput", gate.min_throughput, throughput, True, throughput_unit),
                ("size vs teacher", gate.max_size_ratio, size_ratio, False, "x"),
                ("speed-up vs teacher", gate.min_speedup, speedup, True, "x")]
    if embeddings is not None:
        optional += [("embedding fidelity", gate.min_embedding_fidelity, embeddings["cos_mean"],
                      True, "mean cosine"),
                     ("retrieval recall@10", gate.min_recall_at_10, embeddings["recall10"],
                      True, "share")]
    checks += [BudgetCheck(name, budget, value, value, higher, unit)
               for name, budget, value, higher, unit in optional if budget is not None]
    return checks
