"""The night's report: one Markdown table, the triangle plots, the gate, the lineage."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from slimline.trend import COMPARISON_FILE  # noqa: E402


X_AXIS_MARGIN = 1.15  # the triangle plot's x axis runs from 0 to this times the largest x


def label_lifts(points: list[tuple[float, float]], label_width: float = 0.15,
                near_y: float = 0.06) -> list[int]:
    """How many label lines to lift each point's label, so labels that would overprint stack.

    A label runs right of its point for about `label_width` of the x axis, so two labels collide
    when their points are that close in x and within `near_y` of the y span. Each label takes the
    lowest line no colliding earlier label holds.
    """
    xs, ys = zip(*points)
    x_axis, y_span = max(X_AXIS_MARGIN * max(xs), 1e-9), max(max(ys) - min(ys), 1e-9)
    lifts: list[int] = []
    for x, y in points:
        taken = {lift for lift, (x0, y0) in zip(lifts, points)
                 if abs(x - x0) <= label_width * x_axis and abs(y - y0) <= near_y * y_span}
        lifts.append(min(set(range(len(taken) + 1)) - taken))
    return lifts


def triangle_plot(rows: list[dict], path: Path) -> None:
    """Accuracy vs latency and accuracy vs size: the size / speed / accuracy triangle."""
    # A switched-off or skipped stage's pass-through copy would sit exactly on its input's point.
    # Their status is "<stage> (disabled)" or "<stage> (skipped: why)".
    rows = [row for row in rows if not row["status"].endswith(")")]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, key, label in ((axes[0], "latency_p50_ms", "batch-1 latency p50 (ms, ONNX Runtime)"),
                             (axes[1], "size_mb", "ONNX file size (MB)")):
        points = [(row[key], 100 * row["top1"]) for row in rows]
        for row, point, lift in zip(rows, points, label_lifts(points)):
            axis.scatter(*point, s=50)
            axis.annotate(row["name"], point, textcoords="offset points", xytext=(5, 4 + 11 * lift),
                          fontsize=9)
        axis.set_xlim(left=0, right=X_AXIS_MARGIN * max(x for x, _ in points))
        axis.set_xlabel(label)
        axis.set_ylabel("test top-1 (%)")
        axis.grid(alpha=0.3)
    figure.suptitle("Size / speed / accuracy of every artifact")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def confusion_plot(confusion: np.ndarray, title: str, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(5.5, 5))
    image = axis.imshow(confusion, cmap="Blues")
    for (row, col), count in np.ndenumerate(confusion):
        if count:
            axis.text(col, row, str(count), ha="center", va="center", fontsize=7,
                      color="white" if count > confusion.max() / 2 else "black")
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_xticks(range(len(confusion)))
    axis.set_yticks(range(len(confusion)))
    axis.set_title(title)
    figure.colorbar(image, ax=axis, fraction=0.046)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def markdown_report(*, rows: list[dict], checks, gate_rule: str, shipped: str, detectable: float,
                    noisy: list[str], per_class: list[float], lineage: dict, settings: dict) -> str:
    lines = ["# Slimline report", ""]
    passed = all(check.passed for check in checks)
    lines += [f"**Gate: {'PASSED' if passed else 'FAILED'}** for the shipped model `{shipped}` "
              f"(rule: `{gate_rule}`).", ""]
    if noisy:
        lines += [f"> **Warning: the machine was too noisy to trust the speed-up of "
                  f"{', '.join(noisy)}**: per-round speed-ups spread more than "
                  f"{100 * settings['max_speedup_spread']:.0f}% (see the spread column).", ""]
    lines += ["## Models", ""]
    header = ["model", "stage", "top-1 %", "Δ vs teacher (95% CI), points", "flips +/−",
              "size MB", "× size", "params", "MACs", "p50 / p95 / p99 ms", "speed-up (round spread)",
              f"img/s @{settings['throughput_batch']}", "× thr", "agree %", "KL"]
    table = []
    for row in rows:
        table.append([
            row["name"], row["status"], f"{100 * row['top1']:.2f}",
            f"{100 * row['diff']:+.1f} ({100 * row['diff_low']:+.1f}, {100 * row['diff_high']:+.1f})",
            f"{row['gained']}/{row['lost']}", f"{row['size_mb']:.3f}", f"{row['size_ratio']:.3f}",
            f"{row['parameters']:,}", f"{row['macs'] / 1e6:.1f} M",
            f"{row['latency_p50_ms']:.3f} / {row['latency_p95_ms']:.3f} / {row['latency_p99_ms']:.3f}",
            f"{row['speedup']:.2f}× ({row['speedup_low']:.2f}–{row['speedup_high']:.2f})",
            f"{row['throughput']:.0f}", f"{row['throughput_ratio']:.2f}",
            f"{100 * row['agreement']:.1f}", f"{row['mean_kl']:.4f}"])
    lines += _table(header, table)
    lines += ["", f"Latency: ONNX Runtime CPU execution provider, batch 1, "
              f"{settings['threads']} intra-op thread(s), {settings['warmup_runs']} warm-up runs, "
              f"{settings['latency_runs']} timed runs per model in {settings['rounds']} interleaved "
              f"rounds; measured on `{lineage['cpu']['model']}` "
              f"({lineage['cpu']['logical_cores']} logical cores, int8 flags: "
              f"{', '.join(lineage['cpu']['int8_flags']) or 'none'}). "
              "Size counts the whole ONNX file. Flips: test items the model got right and the "
              "teacher wrong (+) and the reverse (−).",
              "", f"The {rows[0]['items']}-image test split can detect differences of "
              f"{100 * detectable:.1f} points or more (exact McNemar test, 95%); smaller differences "
              "are indistinguishable from noise.", ""]
    lines += ["## Gate", "", "Budgets for the shipped model. Accuracy rule "
              f"`{gate_rule}`: " + ("the drop judged is the most favourable end of the paired 95% "
                                    "interval, so a difference of a couple of test items cannot "
                                    "flip the gate while a regression of several points always does."
                                    if gate_rule == "interval" else
                                    "the point estimate of the drop is compared with the budget."),
              ""]
    lines += _table(["budget", "limit", "measured", "judged", "margin", "result"],
                    [[c.name, f"{c.budget:g} {c.unit}", f"{c.measured:.3f}", f"{c.judged:.3f}",
                      f"{c.margin:+.3f}", "pass" if c.passed else "FAIL"] for c in checks])
    lines += ["", f"Night over night: a published night's comparison with the previous one (paired "
              f"accuracy change, `dvc metrics diff`, trend) is `{COMPARISON_FILE}`, committed beside "
              "`dvc.lock` on the versioning branch.", ""]
    lines += ["## Plots", "", "![triangle](triangle.png)", "",
              f"![confusion matrix of {shipped}](confusion.png)", "",
              f"Per-class test accuracy of `{shipped}`: " +
              ", ".join(f"{label}: {100 * value:.1f}%" for label, value in enumerate(per_class)), ""]
    lines += ["## Lineage", "", "```"]
    lines += [f"{key}: {value}" for key, value in lineage.items()]
    lines += ["```", ""]
    return "\n".join(lines)
