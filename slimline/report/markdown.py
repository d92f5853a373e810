"""The night's report: one Markdown table, the gate, the plots, the lineage."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from slimline.artifact.atomic import atomic_dir, write_json
from slimline.report.candidates import StudentChoice, choice_lines
from slimline.report.plots import candidates_plot, confusion_plot, triangle_plot
from slimline.report.trend import COMPARISON_FILE

TASK_COLUMNS = (("probe_accuracy", "probe acc %"), ("knn_accuracy", "k-NN acc %"),
                ("sts_spearman", "STS Spearman"), ("ndcg_at_10", "nDCG@10 (labels)"),
                ("labelled_recall_at_10", "recall@10 (labels)"))
TASK_NOTES = {
    "probe_accuracy": "Probe: test accuracy of a logistic regression on the frozen embeddings "
                      "(the test texts' labels, 5 stratified folds fixed by a seed).",
    "knn_accuracy": "k-NN: the majority class of each test text's 10 nearest other test texts "
                    "(cosine, leave one out).",
    "sts_spearman": "STS: the Spearman of each pair's cosine against the similarity people gave "
                    "it.",
    "ndcg_at_10": "nDCG@10: each labelled query's 10 nearest corpus texts (cosine) against its "
                  "relevance labels.",
    "labelled_recall_at_10": "recall@10 (labels): the share of each query's relevant texts among "
                             "its 10 nearest.",
}


def _task_cell(row: dict, key: str) -> str:
    """A task's score (accuracy in %, Spearman as is) and its difference from the teacher."""
    scale, digits = (100, 1) if key.endswith("accuracy") else (1, 4)
    if f"{key}_diff" not in row:
        return f"{scale * row[key]:.{digits}f}"
    return (f"{scale * row[key]:.{digits}f} ({100 * row[f'{key}_diff']:+.1f}, "
            f"{100 * row[f'{key}_diff_low']:+.1f}..{100 * row[f'{key}_diff_high']:+.1f})")


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def markdown_report(*, rows: list[dict], checks, gate_rule: str, shipped: str, detectable: float,
                    noisy: list[str], per_class: list[float] | None, lineage: dict,
                    settings: dict,
                    throughput_unit: str = "images/s", choice: StudentChoice | None = None) -> str:
    lines = ["# Slimline report", ""]
    passed = all(check.passed for check in checks)
    lines += [f"**Gate: {'PASSED' if passed else 'FAILED'}** for the shipped model `{shipped}` "
              f"(rule: `{gate_rule}`).", ""]
    if noisy:
        lines += [f"> **Warning: the machine was too noisy to trust the speed-up of "
                  f"{', '.join(noisy)}**: per-round speed-ups spread more than "
                  f"{100 * settings['max_speedup_spread']:.0f}% (see the spread column).", ""]
    lines += ["## Models", ""]
    embedding = "nn1" in rows[0]
    # What the embeddings are for, where the data allow it (slimline/measure/embedding.py).
    tasks = [(key, title) for key, title in TASK_COLUMNS if key in rows[0]]
    copies = [row for row in rows if row.get("same_onnx_as")]
    header = [
        "model",
        "stage",
        "nn@1 agreement %" if embedding else "top-1 %",
        "Δ vs teacher (95% CI), points",
        "flips +/−",
        "size MB",
        "× size",
        "params",
        "MACs",
        "p50 / p95 / p99 ms",
        "speed-up (round spread)",
        f"{throughput_unit} @{settings['throughput_batch']}",
        "× thr",
        *(["cosine mean / min", "recall@10", "MRR", "Spearman"] if embedding
          else ["agree %", "KL"]),
        *[title for _, title in tasks],
    ]
    table = []
    for row in rows:
        table.append(
            [
                row["name"],
                row["status"],
                f"{100 * row['top1']:.2f}",
                f"{100 * row['diff']:+.1f} "
                f"({100 * row['diff_low']:+.1f}, {100 * row['diff_high']:+.1f})",
                f"{row['gained']}/{row['lost']}",
                f"{row['size_mb']:.3f}",
                f"{row['size_ratio']:.3f}",
                f"{row['parameters']:,}",
                f"{row['macs'] / 1e6:.1f} M",
                f"{row['latency_p50_ms']:.3f} / {row['latency_p95_ms']:.3f} / "
                f"{row['latency_p99_ms']:.3f}",
                f"{row['speedup']:.2f}× ({row['speedup_low']:.2f}–{row['speedup_high']:.2f})",
                f"{row['throughput']:.0f}",
                f"{row['throughput_ratio']:.2f}",
                *([f"{row['cos_mean']:.4f} / {row['cos_min']:.4f}", f"{row['recall10']:.3f}",
                   f"{row['mrr']:.3f}", f"{row['spearman']:.4f}"]
                  if embedding else [f"{100 * row['agreement']:.1f}", f"{row['mean_kl']:.4f}"]),
                *[_task_cell(row, key) for key, _ in tasks],
            ]
        )
    lines += _table(header, table)
    lines += [
        "",
        f"Latency: ONNX Runtime CPU execution provider, batch 1, "
        f"{settings['threads']} intra-op thread(s), {settings['warmup_runs']} warm-up runs, "
        f"{settings['latency_runs']} timed runs per model in {settings['rounds']} interleaved "
        f"rounds; measured on `{lineage['cpu']['model']}` "
        f"({lineage['cpu']['logical_cores']} logical cores, int8 flags: "
        f"{', '.join(lineage['cpu']['int8_flags']) or 'none'}). "
        "Size counts the whole ONNX file. Flips: test items the model got right and the "
        "teacher wrong (+) and the reverse (−).",
        "",
        *([
            "Embeddings: each test text encoded alone at its own length. nn@1 agreement: the "
            "share of test texts whose nearest other test text is the teacher's; cosine: of each "
            "text's embedding to the teacher's; recall@10: the share of each test text's 10 "
            "nearest under the teacher that are among its 10 nearest; MRR: the mean of 1 / the "
            "rank of the teacher's nearest; Spearman: of all pairwise similarities against "
            "the teacher's. The gate judges each labelled task below; where none is labelled, "
            "and for the teacher's own network, mean cosine and recall@10.", ""]
          if embedding else []),
        *([" ".join(TASK_NOTES[key] for key, _ in tasks)
           + " Each model is scored on its own, on the same test texts and folds; in brackets "
           "its difference from the teacher in points and the 95% interval (accuracies: exact "
           "paired, from the texts that flipped; STS and retrieval: paired bootstrap over the "
           "pairs or queries), which "
           "the gate judges like top-1.", ""]
          if tasks else []),
        *(["Not run or timed again (same ONNX bytes as an earlier model): " + ", ".join(
            f"{row['name']} = {row['same_onnx_as']}" for row in copies) + ".", ""]
          if copies else []),
        f"The {rows[0]['items']}-item test split can detect differences of "
        f"{100 * detectable:.1f} points or more (exact McNemar test, 95%); smaller differences "
        "are indistinguishable from noise.",
        "",
    ]
    lines += [
        "## Gate",
        "",
        "Budgets for the shipped model. Accuracy rule "
        f"`{gate_rule}`: "
        + (
            "the drop judged is the most favourable end of the paired 95% "
            "interval, so a difference of a couple of test items cannot "
            "flip the gate while a regression of several points always does."
            if gate_rule == "interval"
            else "the point estimate of the drop is compared with the budget."
        ),
        "",
    ]
    lines += _table(["budget", "limit", "measured", "judged", "margin", "result"],
                    [[c.name, f"{c.budget:g} {c.unit}", f"{c.measured:.3f}", f"{c.judged:.3f}",
                      f"{c.margin:+.3f}", "pass" if c.passed else "FAIL"] for c in checks])
    lines += [
        "",
        f"Night over night: a published night's comparison with the previous one (paired "
        f"accuracy change, `dvc metrics diff`, trend) is `{COMPARISON_FILE}`, committed beside "
        "`dvc.lock` on the versioning branch.",
        "",
    ]
    if choice is not None:
        lines += choice_lines(choice)
    lines += ["## Plots", "", "![triangle](triangle.png)", ""]
    if per_class is not None:
        lines += [
            f"![confusion matrix of {shipped}](confusion.png)",
            "",
            f"Per-class test accuracy of `{shipped}`: "
            + ", ".join(f"{label}: {100 * value:.1f}%" for label, value in enumerate(per_class)),
            "",
        ]
    lines += ["## Lineage", "", "```"]
    lines += [f"{key}: {value}" for key, value in lineage.items()]
    lines += ["```", ""]
    return "\n".join(lines)


def write_report(target: Path, evaluation, checks, *, gate_rule: str, num_classes: int | None,
                 detectable: float, lineage: dict, settings: dict,
                 throughput_unit: str = "images/s", choice: StudentChoice | None = None) -> None:
    """The report folder, written atomically: report.md, models.json (the rows DVC plots read),
    lineage.json, the triangle plot, a classifier's confusion matrix (num_classes None: an
    embedding model, whose judged outcome is agreement, not a class) and, where
    distill.student_budget chose the student, its candidates' plot."""
    shipped = evaluation.shipped["name"]
    confusion = per_class = None
    if num_classes is not None:
        confusion = np.zeros((num_classes, num_classes), dtype=int)
        np.add.at(confusion, evaluation.outcomes[shipped], 1)
        per_class = (np.diag(confusion) / np.maximum(confusion.sum(1), 1)).tolist()
    plain = [
        {key: value for key, value in row.items() if key != "paired"} for row in evaluation.rows
    ]
    with atomic_dir(target) as tmp:
        write_json(tmp / "models.json", plain)
        write_json(tmp / "lineage.json", lineage)
        triangle_plot(plain, tmp / "triangle.png")
        if confusion is not None:
            confusion_plot(
                confusion, f"{shipped}: confusion matrix (test split)", tmp / "confusion.png"
            )
        if choice is not None:
            candidates_plot(choice, tmp / "candidates.png")
        (tmp / "report.md").write_text(markdown_report(
            rows=plain, checks=checks, gate_rule=gate_rule, shipped=shipped, detectable=detectable,
            noisy=evaluation.noisy, per_class=per_class, lineage=lineage, settings=settings,
            throughput_unit=throughput_unit, choice=choice))
