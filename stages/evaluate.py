"""evaluate: measure every artifact in ONNX Runtime (slimline/measure/evaluation.py), judge the
shipped one against the gate's budgets (slimline/report/gate.py), write the report
(slimline/report/markdown.py). A failed gate is exit 2: publish does not run."""
from __future__ import annotations

from pathlib import Path

from slimline.artifact.atomic import write_json
from slimline.artifact.recipe import read_recipe
from slimline.data.splits import (
    SPLITS,
    load_pair_scores,
    load_pair_splits,
    load_retrieval,
    load_split,
)
from slimline.errors import SlimlineError
from slimline.measure.evaluation import evaluate_models
from slimline.measure.lineage import flatten, lineage
from slimline.measure.stats import smallest_detectable_difference
from slimline.report.candidates import read_student_choice
from slimline.report.gate import check_budgets
from slimline.report.markdown import write_report
from slimline.report.trend import predictions_record
from slimline.stage import stage_main, write_metrics
from slimline.task import task_of


def add_arguments(parser):
    parser.add_argument("--data", type=Path, required=True, help="folder of split .npz files")
    parser.add_argument("--model", action="append", required=True, metavar="NAME=FOLDER",
                        help="an artifact to measure; the first is the reference (teacher), "
                             "the last is the shipped model")
    parser.add_argument("--report", type=Path, required=True, help="output: report folder")
    parser.add_argument("--metrics", type=Path, required=True, help="output: metrics JSON")
    parser.add_argument("--predictions", type=Path,
                        help="output: the shipped model's test predictions (for night-over-night)")
    parser.add_argument("--candidates", type=Path,
                        help="the distill stage's metrics: the student candidates it measured, "
                             "where distill.student_budget chose the student")


def parse_models(specs: list[str]) -> dict[str, Path]:
    models = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise SlimlineError(f"--model {spec!r}: expected NAME=FOLDER")
        models[name] = Path(folder)
    return models


def main(args, params, log):
    settings = params.evaluate
    models = parse_models(args.model)
    test = load_split(args.data / "test.npz", params.model.num_classes)
    task = task_of(read_recipe(next(iter(models.values()))))
    pairs = load_pair_splits(args.data) if task.is_embedding else None
    pair_scores = load_pair_scores(args.data) if pairs is not None else None
    retrieval = load_retrieval(args.data) if task.is_embedding else None
    evaluation = evaluate_models(models, test, task, settings, pairs=pairs,
                                 pair_scores=pair_scores, retrieval=retrieval, log=log.info)
    for name in evaluation.noisy:
        log.warning("%s: per-round speed-ups spread more than %.0f%%: the machine was too noisy "
                    "to trust this ratio", name, 100 * settings.max_speedup_spread)

    shipped = evaluation.shipped
    checks = check_budgets(settings.gate, shipped["paired"], shipped["latency_p50_ms"],
                           shipped["size_mb"], shipped["throughput"],
                           size_ratio=shipped["size_ratio"], speedup=shipped["speedup"],
                           judged=task.judged,
                           throughput_unit=task.throughput_unit,
                           embeddings=shipped if task.is_embedding else None,
                           student=shipped["student"])
    gate_passed = all(check.passed for check in checks)
    if task.is_embedding and not any(check.unit == "mean cosine" for check in checks):
        log.info("gate: the labelled tasks judge this distilled student; its cosine %.4f and "
                 "recall@10 %.3f to the teacher are reported, not judged", shipped["cos_mean"],
                 shipped["recall10"])
    for check in checks:
        log.info("gate: %-22s limit %g %s, measured %.3f, judged %.3f, margin %+.3f -> %s",
                 check.name, check.budget, check.unit, check.measured, check.judged, check.margin,
                 "pass" if check.passed else "FAIL")

    origin = lineage(params_file=args.params,
                     data_files={name: args.data / f"{name}.npz" for name in SPLITS},
                     seed=params.seed, threads=settings.threads)
    detectable = smallest_detectable_difference(shipped["items"], settings.gate.confidence)
    write_report(args.report, evaluation, checks, gate_rule=settings.gate.rule,
                 num_classes=None if task.is_embedding else params.model.num_classes,
                 detectable=detectable, lineage=origin, settings=settings.model_dump(),
                 throughput_unit=task.throughput_unit,
                 choice=read_student_choice(args.candidates) if args.candidates else None)

    metrics = {"gate_passed": gate_passed, "noisy_machine": bool(evaluation.noisy),
               "test_items": shipped["items"], "smallest_detectable_diff": detectable,
               "seed": params.seed, "threads": settings.threads, **evaluation.metrics(task)}
    for check in checks:
        metrics[f"gate.{check.name.replace(' ', '_')}.margin"] = check.margin
    metrics.update(flatten({"data_sha256": origin["data_sha256"]}))
    write_metrics(args.metrics, metrics)
    if args.predictions:
        write_json(args.predictions, predictions_record(*evaluation.outcomes[shipped["name"]],
                                                        origin["data_sha256"]["test"]))
    log.info(
        "report: %s; gate %s", args.report / "report.md", "PASSED" if gate_passed else "FAILED"
    )
    if not gate_passed:
        raise SlimlineError(f"gate failed for the shipped model '{shipped['name']}': see "
                            f"{args.report / 'report.md'}")


if __name__ == "__main__":
    stage_main("evaluate", main, add_arguments)
