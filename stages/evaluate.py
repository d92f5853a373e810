"""evaluate: measure every artifact in ONNX Runtime, judge the shipped one, write the report.

A classifier is judged by test top-1. An embedding model (a transformer without a task head) is
judged by its embeddings: fidelity (mean cosine to the teacher's) and, item by item like top-1,
labelled pairs (data.text.pairs) or, without them, whether each test text's embedding retrieves
the teacher's embedding of the same text.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from slimline.artifact import ONNX, read_recipe
from slimline.atomic import atomic_dir, write_json
from slimline.data import SPLITS, load_split
from slimline.text_data import load_pair_splits
from slimline.embedding import embedding_fidelity, embedding_outcomes, is_embedding_model
from slimline.errors import SlimlineError
from slimline.gate import check_budgets
from slimline.lineage import flatten, lineage
from slimline.measure import (check_feeds, count_macs, count_parameters, file_size, load_onnx,
                              onnx_predict, time_interleaved)
from slimline.report import confusion_plot, markdown_report, triangle_plot
from slimline.runtime import make_session
from slimline.stage import run_stage, write_metrics
from slimline.stats import paired_difference, smallest_detectable_difference, speedup_spread, too_noisy
from slimline.trend import predictions_record


def add_arguments(parser):
    parser.add_argument("--data", type=Path, required=True, help="folder of split .npz files")
    parser.add_argument("--model", action="append", required=True, metavar="NAME=FOLDER",
                        help="an artifact to measure; the first is the reference (teacher), "
                             "the last is the shipped model")
    parser.add_argument("--report", type=Path, required=True, help="output: report folder")
    parser.add_argument("--metrics", type=Path, required=True, help="output: metrics JSON")
    parser.add_argument("--predictions", type=Path,
                        help="output: the shipped model's test predictions (for night-over-night)")


def parse_models(specs: list[str]) -> dict[str, Path]:
    models = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise SlimlineError(f"--model {spec!r}: expected NAME=FOLDER")
        models[name] = Path(folder)
    return models


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(1, keepdims=True))


def mean_kl(reference_logits: np.ndarray, logits: np.ndarray) -> float:
    """Mean KL(reference || model) of the output distributions."""
    p_log, q_log = log_softmax(reference_logits), log_softmax(logits)
    return float(np.mean(np.sum(np.exp(p_log) * (p_log - q_log), axis=1)))


def judged_outcomes(sessions, logits, test, pairs, embedding: bool) -> dict[str, tuple]:
    """Per model (labels, predictions) of the task it is judged on (see the module docstring)."""
    if not embedding:
        return {name: (test.labels, values.argmax(1)) for name, values in logits.items()}
    reference = next(iter(logits.values()))
    outcomes = {}
    for name, session in sessions.items():
        pair_embeddings = None if pairs is None else (
            onnx_predict(session, pairs[0].inputs), onnx_predict(session, pairs[1].inputs), pairs[0].labels)
        outcomes[name] = embedding_outcomes(reference, logits[name], pair_embeddings)
    return outcomes


def main(args, params, log):
    settings = params.evaluate
    models = parse_models(args.model)
    test = load_split(args.data / "test.npz", params.model.num_classes)
    sessions, recipes, graphs, logits = {}, {}, {}, {}
    for name, folder in models.items():
        recipes[name] = read_recipe(folder)
        graphs[name] = load_onnx(folder / ONNX)  # a clear line for a non-ONNX file or no outputs
        sessions[name] = make_session(folder / ONNX, threads=settings.threads)
        check_feeds(sessions[name], test.inputs, str(folder / ONNX))
        logits[name] = onnx_predict(sessions[name], test.inputs)
    embedding = is_embedding_model(recipes[next(iter(models))])
    pairs = load_pair_splits(args.data) if embedding else None
    outcomes = judged_outcomes(sessions, logits, test, pairs, embedding)
    task = ("labelled pairs judged similar/dissimilar at each model's best cosine threshold"
            if pairs else "test texts whose embedding retrieves the teacher's embedding of the same "
            "text" if embedding else "test top-1")
    for name, folder in models.items():
        labels, predictions = outcomes[name]
        log.info("%-10s %s, made by %s: %s %.2f%%%s", name, folder, " -> ".join(recipes[name].history),
                 task, 100 * (predictions == labels).mean(),
                 f", embedding fidelity {embedding_fidelity(logits[next(iter(models))], logits[name]):.4f}"
                 if embedding else "")

    log.info("timing batch 1: %d runs per model in %d interleaved rounds, %d thread(s)",
             settings.latency_runs, settings.rounds, settings.threads)
    latency = time_interleaved(sessions, test.head(1), runs=settings.latency_runs,
                               warmup=settings.warmup_runs, rounds=settings.rounds)
    batch_size = min(len(test), settings.throughput_batch)
    batch = test.head(batch_size)
    throughput_timing = time_interleaved(sessions, batch, runs=settings.throughput_runs, warmup=2,
                                         rounds=min(settings.rounds, settings.throughput_runs))

    names = list(models)
    reference, shipped = names[0], names[-1]
    reference_correct = np.equal(*outcomes[reference])
    rows = []
    for name in names:
        labels, predictions = outcomes[name]
        paired = paired_difference(reference_correct, predictions == labels, settings.gate.confidence)
        spread = speedup_spread(latency[reference].rounds, latency[name].rounds)
        history = recipes[name].history
        rows.append({
            "name": name, "status": history[-1] if history else "?", "items": len(labels),
            "top1": float((predictions == labels).mean()), "diff": paired.difference,
            "diff_low": paired.low, "diff_high": paired.high, "gained": paired.gained,
            "lost": paired.lost, "p_value": paired.p_value, "paired": paired,
            "size_mb": file_size(models[name] / ONNX) / 1e6, "parameters": count_parameters(graphs[name]),
            "macs": count_macs(graphs[name], test.head(1)), "latency_p50_ms": latency[name].percentile(50),
            "latency_p95_ms": latency[name].percentile(95),
            "latency_p99_ms": latency[name].percentile(99), "speedup": spread.median,
            "speedup_low": spread.low, "speedup_high": spread.high, "spread": spread,
            "throughput": batch_size / (throughput_timing[name].percentile(50) / 1e3),
            # An embedding model's agreement is its fidelity; KL between softmaxed embeddings
            # would mean nothing (NaN: not applicable).
            "agreement": (embedding_fidelity(logits[reference], logits[name]) if embedding else
                          float((predictions == outcomes[reference][1]).mean())),
            "mean_kl": float("nan") if embedding else mean_kl(logits[reference], logits[name]),
        })
    for row in rows:
        row["size_ratio"] = row["size_mb"] / rows[0]["size_mb"]
        row["throughput_ratio"] = row["throughput"] / rows[0]["throughput"]
        log.info("%-10s top-1 %.2f%% (%+.1f pts, CI %+.1f..%+.1f), %.3f MB (%.3fx), p50 %.3f ms "
                 "(%.2fx faster, rounds %.2f-%.2f), %.0f img/s", row["name"], 100 * row["top1"],
                 100 * row["diff"], 100 * row["diff_low"], 100 * row["diff_high"], row["size_mb"],
                 row["size_ratio"], row["latency_p50_ms"], row["speedup"], row["speedup_low"],
                 row["speedup_high"], row["throughput"])

    noisy = [row["name"] for row in rows[1:] if too_noisy(row["spread"], settings.max_speedup_spread)]
    for name in noisy:
        log.warning("%s: per-round speed-ups spread more than %.0f%%: the machine was too noisy "
                    "to trust this ratio", name, 100 * settings.max_speedup_spread)
    final = rows[-1]
    checks = check_budgets(settings.gate, final["paired"], final["latency_p50_ms"], final["size_mb"],
                           final["throughput"])
    gate_passed = all(check.passed for check in checks)
    for check in checks:
        log.info("gate: %-22s limit %g %s, measured %.3f, judged %.3f, margin %+.3f -> %s",
                 check.name, check.budget, check.unit, check.measured, check.judged, check.margin,
                 "pass" if check.passed else "FAIL")

    split_files = {name: args.data / f"{name}.npz" for name in SPLITS}
    origin = lineage(params_file=args.params, data_files=split_files, seed=params.seed,
                     threads=settings.threads)
    confusion = np.zeros((2 if embedding else params.model.num_classes,) * 2, dtype=int)
    np.add.at(confusion, outcomes[shipped], 1)
    per_class = (np.diag(confusion) / np.maximum(confusion.sum(1), 1)).tolist()
    detectable = smallest_detectable_difference(len(reference_correct), settings.gate.confidence)

    with atomic_dir(args.report) as tmp:
        plain = [{key: value for key, value in row.items() if key not in ("paired", "spread")}
                 for row in rows]
        write_json(tmp / "models.json", plain)
        write_json(tmp / "lineage.json", origin)
        triangle_plot(plain, tmp / "triangle.png")
        confusion_plot(confusion, f"{shipped}: confusion matrix (test split)", tmp / "confusion.png")
        (tmp / "report.md").write_text(markdown_report(
            rows=plain, checks=checks, gate_rule=settings.gate.rule, shipped=shipped,
            detectable=detectable, noisy=noisy, per_class=per_class, lineage=origin,
            settings=settings.model_dump()))

    metrics = {"gate_passed": gate_passed, "noisy_machine": bool(noisy),
               "test_items": len(reference_correct), "smallest_detectable_diff": detectable,
               "seed": params.seed, "threads": settings.threads}
    for row in rows:
        for key in ("top1", "diff", "diff_low", "diff_high", "size_mb", "size_ratio", "parameters",
                    "macs", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "speedup",
                    "speedup_low", "speedup_high", "throughput", "throughput_ratio", "agreement",
                    "mean_kl"):
            if not (embedding and key == "mean_kl"):
                metrics[f"{row['name']}.{key}"] = row[key]
        if embedding:
            metrics[f"{row['name']}.embedding_fidelity"] = row["agreement"]
    for check in checks:
        metrics[f"gate.{check.name.replace(' ', '_')}.margin"] = check.margin
    metrics.update(flatten({"data_sha256": origin["data_sha256"]}))
    write_metrics(args.metrics, metrics)
    if args.predictions:
        write_json(args.predictions, predictions_record(*outcomes[shipped], origin["data_sha256"]["test"]))
    log.info("report: %s; gate %s", args.report / "report.md", "PASSED" if gate_passed else "FAILED")
    if not gate_passed:
        raise SlimlineError(f"gate failed for the shipped model '{shipped}': see {args.report / 'report.md'}")


if __name__ == "__main__":
    run_stage("evaluate", main, add_arguments)
