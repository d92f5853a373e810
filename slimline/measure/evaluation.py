"""Every artifact of a night measured side by side in ONNX Runtime: quality on the test split
(paired with the reference, item by item), size, parameters, MACs, batch-1 latency and batch
throughput, timed interleaved. The first model is the reference (the teacher), the last the
shipped one.

A classifier is judged by test top-1. An embedding model (a transformer without a task head) is
judged by its embeddings, each test text encoded alone at its own length (a batch-1 user's
call; padding changes dynamic int8's results): nn@1 agreement item by item like top-1 (or
labelled pairs, data.text.pairs), and mean / minimum cosine, recall@10, MRR and the Spearman
correlation of pairwise similarities against the teacher (slimline/measure/embedding.py). Where
the data allow, also what the embeddings are for, each model on its own as MTEB scores it: with
class labels on the test texts (at least two classes), probe and k-NN accuracy; with pairs
scored by people, the STS Spearman; with queries labelled relevant to corpus texts, nDCG@10 and
recall@10 against the labels; and each one's difference from the teacher with its interval
(slimline/measure/embedding_tasks.py), which the gate judges.

Artifacts whose model.onnx bytes equal an earlier artifact's (a disabled stage's pass-through)
are not measured again: they share that artifact's outputs and timing, and the log says so.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from slimline.artifact.recipe import ONNX, Recipe, read_recipe
from slimline.config.params import EvaluateParams
from slimline.data.splits import Split
from slimline.errors import SlimlineError
from slimline.measure.embedding import (
    embedding_fidelity,
    embedding_outcomes,
    embedding_quality,
)
from slimline.measure.embedding_tasks import task_differences, task_outcomes, task_scores
from slimline.measure.graph import count_macs, count_parameters, file_size, load_onnx
from slimline.measure.latency import time_interleaved
from slimline.measure.runtime import check_feeds, make_session
from slimline.measure.stats import paired_difference, speedup_spread, too_noisy

# Per-model keys copied into the flat metrics file (`<model>.<key>`), for `dvc metrics diff`.
METRIC_KEYS = ("top1", "diff", "diff_low", "diff_high", "size_mb", "size_ratio", "parameters",
               "macs", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "speedup",
               "speedup_low", "speedup_high", "throughput", "throughput_ratio", "agreement",
               "mean_kl")
EMBEDDING_KEYS = ("cos_mean", "cos_min", "nn1", "recall10", "mrr", "spearman")
TASK_KEYS = ("probe_accuracy", "knn_accuracy", "sts_spearman", "ndcg_at_10",
             "labelled_recall_at_10")   # where the data allow them
# Each task's difference from the teacher and its interval (the gate judges them), per task key.
TASK_DIFF_SUFFIXES = ("_diff", "_diff_low", "_diff_high")
TASK_NAMES = {"probe_accuracy": "probe accuracy (logistic regression, 5 folds)",
              "knn_accuracy": "k-NN accuracy (10 nearest, leave one out)",
              "sts_spearman": "STS Spearman (cosine vs human scores)",
              "ndcg_at_10": "nDCG@10 (relevance labels)",
              "labelled_recall_at_10": "recall@10 (relevance labels)"}


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(1, keepdims=True))


def mean_kl(reference_logits: np.ndarray, logits: np.ndarray) -> float:
    """Mean KL(reference || model) of the output distributions."""
    p_log, q_log = log_softmax(reference_logits), log_softmax(logits)
    return float(np.mean(np.sum(np.exp(p_log) * (p_log - q_log), axis=1)))


@dataclass
class Evaluation:
    rows: list[dict]                         # one per model, in the given order
    outcomes: dict[str, tuple]               # model -> (labels, predictions) of the judged task
    judged: str                              # what the top-1 column counts, in words
    noisy: list[str] = field(default_factory=list)   # models whose speed-up the noise swamps

    @property
    def shipped(self) -> dict:
        return self.rows[-1]

    def metrics(self, task) -> dict:
        """The flat per-model keys of the metrics file."""
        metrics = {}
        for row in self.rows:
            for key in METRIC_KEYS:
                if not (task.is_embedding and key == "mean_kl"):
                    metrics[f"{row['name']}.{key}"] = row[key]
            if task.is_embedding:
                metrics[f"{row['name']}.embedding_fidelity"] = row["agreement"]
                metrics.update({f"{row['name']}.{key}": row[key] for key in EMBEDDING_KEYS})
                metrics.update({f"{row['name']}.{key}{suffix}": row[f"{key}{suffix}"]
                                for key in TASK_KEYS if key in row
                                for suffix in ("", *TASK_DIFF_SUFFIXES)})
        return metrics


def _judged_outcomes(outputs, test: Split, pair_outputs, pair_labels, task) -> tuple[dict, str]:
    """Per model (labels, predictions) of the task it is judged on (see the module docstring);
    `pair_labels`: the labelled pairs' 1/0, or None (no pairs, or pairs scored by people)."""
    if not task.is_embedding:
        return ({name: (test.labels, values.argmax(1)) for name, values in outputs.items()},
                "test top-1")
    reference = next(iter(outputs.values()))
    outcomes = {name: embedding_outcomes(
        reference, outputs[name], None if pair_labels is None else (*pair_outputs[name],
                                                                    pair_labels))
        for name in outputs}
    judged = ("labelled pairs judged similar/dissimilar at each model's best cosine threshold"
              if pair_labels is not None else "nn@1 agreement (test texts whose nearest other "
              "test text is the teacher's)")
    return outcomes, judged


def onnx_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def evaluate_models(models: dict[str, Path], test: Split, task, settings: EvaluateParams, *,
                    pairs=None, pair_scores=None, retrieval=None, log=print) -> Evaluation:
    """Measure every model artifact (name -> folder) on `test`; `pairs` (side a, side b splits)
    are an embedding model's labelled pairs, if any, and `pair_scores` their human similarity
    scores where people scored them (then their labels are not judged); `retrieval` (queries,
    corpus splits, relevance) its queries with relevance labels, if any."""
    if pair_scores is not None and (pairs is None or len(pair_scores) != len(pairs[0])):
        raise SlimlineError(f"{len(pair_scores)} pair scores for "
                            f"{0 if pairs is None else len(pairs[0])} pairs")
    recipes: dict[str, Recipe] = {}
    sessions, graphs, outputs = {}, {}, {}
    first_with: dict[str, str] = {}     # ONNX digest -> the first model with those bytes
    same_as: dict[str, str] = {}        # model -> the earlier model with identical ONNX bytes
    for name, folder in models.items():
        recipes[name] = read_recipe(folder)
        graphs[name] = load_onnx(folder / ONNX)  # a clear line for a non-ONNX file or no outputs
        digest = onnx_digest(folder / ONNX)
        if digest in first_with:
            same_as[name] = first_with[digest]
            outputs[name] = outputs[same_as[name]]
            sessions[name] = sessions[same_as[name]]
            log(f"{name:<10} {folder / ONNX} has the same bytes as {same_as[name]}'s: not run or "
                f"timed again (its outputs and timing are {same_as[name]}'s)")
            continue
        first_with[digest] = name
        sessions[name] = make_session(folder / ONNX, threads=settings.threads)
        check_feeds(sessions[name], test.inputs, str(folder / ONNX))
        outputs[name] = task.predict_onnx(sessions[name], test.inputs)
    names = list(models)
    reference = names[0]
    pair_outputs = {}     # name -> the embeddings of sides a and b of the pairs
    if pairs is not None and task.is_embedding:
        for name in names:
            pair_outputs[name] = pair_outputs[same_as[name]] if name in same_as else tuple(
                task.predict_onnx(sessions[name], side.inputs) for side in pairs)
    retrieval_outputs = {}   # name -> (query embeddings, corpus embeddings, relevance)
    if retrieval is not None and task.is_embedding:
        for name in names:
            retrieval_outputs[name] = retrieval_outputs[same_as[name]] if name in same_as else (
                *(task.predict_onnx(sessions[name], side.inputs) for side in retrieval[:2]),
                retrieval[2])
    judged_pair_labels = pairs[0].labels if pair_outputs and pair_scores is None else None
    outcomes, judged = _judged_outcomes(outputs, test, pair_outputs, judged_pair_labels, task)
    quality = {}
    if task.is_embedding:
        per_item = {}
        for name in names:
            scored = (*pair_outputs[name], pair_scores) if (
                pair_outputs and pair_scores is not None) else None
            per_item[name] = task_outcomes(outputs[name], test.labels, scored,
                                           retrieval_outputs.get(name))
            quality[name] = {**embedding_quality(outputs[reference], outputs[name]),
                             **task_scores(per_item[name], pair_scores)}
            differences = task_differences(per_item[reference], per_item[name], pair_scores,
                                           settings.gate.confidence)
            for key, difference in differences.items():
                quality[name].update({f"{key}_diff": difference.difference,
                                      f"{key}_diff_low": difference.low,
                                      f"{key}_diff_high": difference.high})
    for name in names:
        labels, predictions = outcomes[name]
        fidelity = "" if not task.is_embedding else (
            ", cosine to the teacher mean {cos_mean:.4f} / min {cos_min:.4f}, recall@10 "
            "{recall10:.3f}, MRR {mrr:.3f}, pairwise-similarity Spearman {spearman:.4f}".format(
                **quality[name])
            + "".join(f", {TASK_NAMES[key]} {quality[name][key]:.4f}" for key in TASK_KEYS
                      if key in quality[name]))
        log(f"{name:<10} {models[name]}, made by {' -> '.join(recipes[name].history)}: {judged} "
            f"{100 * (predictions == labels).mean():.2f}%{fidelity}")

    timed = {name: session for name, session in sessions.items() if name not in same_as}
    log(f"timing batch 1: {settings.latency_runs} runs per model in {settings.rounds} interleaved "
        f"rounds, {settings.threads} thread(s); {len(timed)} distinct graphs of {len(names)}")
    latency = time_interleaved(timed, test.head(1), runs=settings.latency_runs,
                               warmup=settings.warmup_runs, rounds=settings.rounds)
    batch_size = min(len(test), settings.throughput_batch)
    throughput_timing = time_interleaved(
        timed,
        test.head(batch_size),
        runs=settings.throughput_runs,
        warmup=2,
        rounds=min(settings.rounds, settings.throughput_runs),
    )
    for name, original in same_as.items():
        latency[name], throughput_timing[name] = latency[original], throughput_timing[original]

    reference_correct = np.equal(*outcomes[reference])
    rows, spreads = [], {}
    for name in names:
        labels, predictions = outcomes[name]
        paired = paired_difference(
            reference_correct, predictions == labels, settings.gate.confidence
        )
        spreads[name] = speedup_spread(latency[reference].rounds, latency[name].rounds)
        history = recipes[name].history
        rows.append(
            {
                "name": name,
                "status": history[-1] if history else "?",
                "items": len(labels),
                "top1": float((predictions == labels).mean()),
                "diff": paired.difference,
                "diff_low": paired.low,
                "diff_high": paired.high,
                "gained": paired.gained,
                "lost": paired.lost,
                "p_value": paired.p_value,
                "paired": paired,
                "size_mb": file_size(models[name] / ONNX) / 1e6,
                "parameters": count_parameters(graphs[name]),
                "macs": count_macs(graphs[name], test.head(1)),
                "latency_p50_ms": latency[name].percentile(50),
                "latency_p95_ms": latency[name].percentile(95),
                "latency_p99_ms": latency[name].percentile(99),
                "speedup": spreads[name].median,
                "speedup_low": spreads[name].low,
                "speedup_high": spreads[name].high,
                "throughput": batch_size / (throughput_timing[name].percentile(50) / 1e3),
                # An embedding model's agreement is its fidelity; KL between softmaxed embeddings
                # would mean nothing (NaN: not applicable).
                "agreement": (
                    embedding_fidelity(outputs[reference], outputs[name])
                    if task.is_embedding
                    else float((predictions == outcomes[reference][1]).mean())
                ),
                "mean_kl": float("nan")
                if task.is_embedding
                else mean_kl(outputs[reference], outputs[name]),
                "same_onnx_as": same_as.get(name, ""),
                # A distilled student is a different network from the teacher's (gate.py).
                "student": "distill" in history,
                **quality.get(name, {}),
            }
        )
    for row in rows:
        row["size_ratio"] = row["size_mb"] / rows[0]["size_mb"]
        row["throughput_ratio"] = row["throughput"] / rows[0]["throughput"]
        log(
            f"{row['name']:<10} {task.judged} {100 * row['top1']:.2f}% "
            f"({100 * row['diff']:+.1f} pts, CI "
            f"{100 * row['diff_low']:+.1f}..{100 * row['diff_high']:+.1f}), "
            f"{row['size_mb']:.3f} MB ({row['size_ratio']:.3f}x), "
            f"p50 {row['latency_p50_ms']:.3f} ms ({row['speedup']:.2f}x "
            f"faster, rounds {row['speedup_low']:.2f}-{row['speedup_high']:.2f}), "
            f"{row['throughput']:.0f} {task.throughput_unit}"
        )
    noisy = [name for name in names[1:] if too_noisy(spreads[name], settings.max_speedup_spread)]
    return Evaluation(rows, outcomes, judged, noisy)
