"""The report's plots: accuracy against latency and size (the size / speed / accuracy triangle),
and the shipped model's confusion matrix."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

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


def candidates_plot(choice, path: Path) -> None:
    """distill.student_budget's candidates: speed-up against val cosine, with the two budgets as
    lines (slimline/report/candidates.py)."""
    figure, axis = plt.subplots(figsize=(6, 4.2))
    for row in choice.rows:
        trained = row["fidelity"] is not None
        point = (row["speedup"], row["fidelity"] if trained else row["initial_fidelity"])
        axis.scatter(*point, s=60 if row["depth"] == choice.chosen_depth else 40,
                     color="C0" if trained else "none", edgecolors="C0")
        label = f"{row['depth']} layers" + ("" if trained else " (untrained)") + (
            ", shipped" if row["depth"] == choice.chosen_depth else "")
        axis.annotate(label, point, textcoords="offset points", xytext=(5, 4), fontsize=9)
    axis.axvline(choice.min_speedup, color="grey", linestyle="--", linewidth=1)
    axis.axhline(choice.min_fidelity, color="grey", linestyle="--", linewidth=1)
    axis.margins(x=0.2, y=0.1)   # room for the labels right of the points
    axis.set_xlabel("speed-up over the fp32 teacher (int8, batch 1)")
    axis.set_ylabel("val cosine to the teacher")
    axis.set_title("Student candidates against the budgets")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
