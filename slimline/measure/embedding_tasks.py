"""What the embeddings are for, where the data have labels: each model's task scores
(slimline/measure/embedding.py measures them as MTEB does) and what a compressed encoder loses of
each against the teacher, with the interval the gate judges (slimline/report/gate.py) as it
judges a classifier's test top-1.

* Class labels: the probe's and k-NN's per-text correctness against the teacher's on the same
  texts and folds: the exact paired interval of the accuracy difference (stats.paired_difference).
* Pairs scored by people: the STS Spearman difference, its interval a paired bootstrap over the
  pairs (a rank correlation is not a mean over items, so no flip count gives it).
* Queries with relevance labels over a corpus: nDCG@10 and recall@10 of the corpus ranked by
  cosine, against the labels (not against the teacher's ranking), per query; the difference of
  their means with a paired bootstrap over the queries.

Differences are fractions (Spearman: of the correlation), model minus teacher: -0.01 is one point
lost.
"""
from __future__ import annotations

import numpy as np

from slimline.measure.embedding import (
    cosine_rows,
    knn_correct,
    probe_correct,
    spearman,
    unit_rows,
)
from slimline.measure.stats import paired_bootstrap, paired_difference

ACCURACY_TASKS = ("probe_accuracy", "knn_accuracy")
RETRIEVAL_TASKS = ("ndcg_at_10", "labelled_recall_at_10")   # per query, means compared
RETRIEVAL_DEPTH = 10


def retrieval_scores(queries: np.ndarray, corpus: np.ndarray, relevance: np.ndarray,
                     k: int = RETRIEVAL_DEPTH) -> dict[str, np.ndarray]:
    """Per query (rows of `relevance`, graded 0 = not relevant, over the corpus's texts) with at
    least one relevant text: nDCG@k (gain 2^relevance - 1, discount log2(rank + 1)) and recall@k
    (the share of its relevant texts among the k nearest by cosine)."""
    relevance = np.asarray(relevance, dtype=np.float64)
    judged = relevance.max(1) > 0
    relevance = relevance[judged]
    k = min(k, relevance.shape[1])
    similarities = unit_rows(queries[judged]) @ unit_rows(corpus).T
    top = np.argsort(-similarities, axis=1, kind="stable")[:, :k]
    discount = 1 / np.log2(np.arange(2, k + 2))
    found = np.take_along_axis(relevance, top, 1)
    ideal = -np.sort(-relevance, axis=1)[:, :k]
    ndcg = ((2 ** found - 1) @ discount) / ((2 ** ideal - 1) @ discount)
    recall = (found > 0).sum(1) / (relevance > 0).sum(1)
    return {"ndcg_at_10": ndcg, "labelled_recall_at_10": recall}


def task_outcomes(embeddings: np.ndarray, labels: np.ndarray | None = None,
                  scored_pairs: tuple | None = None,
                  retrieval: tuple | None = None) -> dict[str, np.ndarray]:
    """Per task the data allow, what each item contributes: with at least two classes among
    `labels`, the probe's and k-NN's per-text correctness; with `scored_pairs` (embeddings a,
    embeddings b, human scores), each pair's cosine; with `retrieval` (query embeddings, corpus
    embeddings, relevance labels), each query's nDCG@10 and recall@10."""
    outcomes = {}
    if labels is not None and len(np.unique(labels)) >= 2:
        outcomes["probe_accuracy"] = probe_correct(embeddings, labels)
        outcomes["knn_accuracy"] = knn_correct(embeddings, labels)
    if scored_pairs is not None:
        outcomes["sts_spearman"] = cosine_rows(*scored_pairs[:2])
    if retrieval is not None:
        outcomes.update(retrieval_scores(*retrieval))
    return outcomes


def task_scores(outcomes: dict[str, np.ndarray], human_scores: np.ndarray | None = None
                ) -> dict[str, float]:
    """Each task's score from its outcomes: accuracy or a mean over queries, or the STS
    Spearman against the human scores."""
    return {key: spearman(values, human_scores) if key == "sts_spearman"
            else float(values.mean()) for key, values in outcomes.items()}


def task_quality(embeddings: np.ndarray, labels: np.ndarray | None = None,
                 scored_pairs: tuple | None = None) -> dict[str, float]:
    """The task scores the labelled data allow (task_outcomes; a file without labels gives
    zeros, so none)."""
    human_scores = None if scored_pairs is None else scored_pairs[2]
    return task_scores(task_outcomes(embeddings, labels, scored_pairs), human_scores)


def task_differences(teacher: dict[str, np.ndarray], model: dict[str, np.ndarray],
                     human_scores: np.ndarray | None = None, confidence: float = 0.95) -> dict:
    """Per task, the model's difference from the teacher with its interval (.difference, .low,
    .high)."""
    differences = {}
    for key, values in model.items():
        if key in ACCURACY_TASKS:
            differences[key] = paired_difference(teacher[key], values, confidence)
        elif key in RETRIEVAL_TASKS:
            differences[key] = paired_bootstrap(
                lambda items, mine=values, theirs=teacher[key]: mine[items].mean()
                - theirs[items].mean(), len(values), confidence)
        else:
            differences[key] = paired_bootstrap(
                lambda items, mine=values, theirs=teacher[key]: spearman(
                    mine[items], human_scores[items]) - spearman(theirs[items],
                                                                 human_scores[items]),
                len(values), confidence)
    return differences
