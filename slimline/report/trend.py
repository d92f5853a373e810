"""Night over night: the shipped model against the previous published night, and the trend.

Evaluate records which test items the shipped model got right (`predictions.json`, kept in git
beside the metrics), so a later night can compare on the same items with a paired interval.
Publish writes that comparison into its own files (NIGHT_FOLDER, committed in git with dvc.lock),
never into evaluate's report: a DVC output edited after its stage pushed it leaves the pushed
version orphaned in the remote.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from slimline.measure.stats import paired_difference

NIGHT_FOLDER = Path("night")  # publish's own output, in git on the versioning branch
COMPARISON_FILE = NIGHT_FOLDER / "comparison.md"
TREND_PLOT = NIGHT_FOLDER / "trend.png"
TREND_KEYS = (("quantized.top1", "top-1 %", 100.0), ("quantized.size_mb", "size MB", 1.0),
              ("quantized.latency_p50_ms", "p50 ms", 1.0), ("quantized.speedup", "speed-up ×", 1.0))
GATE_KEY = "gate_passed"  # evaluate stores it as 1 / 0 (a DVC metric must be a number)


def predictions_record(labels: np.ndarray, predictions: np.ndarray, test_sha256: str) -> dict:
    return {
        "test_sha256": test_sha256,
        "labels": labels.tolist(),
        "predictions": predictions.tolist(),
    }


def compare_nights(previous: dict, current: dict, confidence: float = 0.95) -> str:
    """A Markdown paragraph: the accuracy change since the previous night, paired on test items."""
    if previous.get("test_sha256") != current.get("test_sha256"):
        return ("The test split changed since the previous night, so the accuracy change cannot be "
                "paired item by item; compare the top-1 values in the trend table instead.")
    labels = np.asarray(current["labels"])
    paired = paired_difference(np.asarray(previous["predictions"]) == labels,
                               np.asarray(current["predictions"]) == labels, confidence)
    return (f"Shipped top-1 against the previous night: {100 * paired.difference:+.1f} points "
            f"(paired {100 * confidence:.0f}% interval {100 * paired.low:+.1f} to "
            f"{100 * paired.high:+.1f}; {paired.gained} test items gained, {paired.lost} lost; "
            f"exact McNemar p = {paired.p_value:.3f}).")


def _cell(value, scale: float) -> str:
    return f"{value * scale:.3f}" if isinstance(value, (int, float)) else "–"


def _gate_cell(value) -> str:
    return "–" if value is None else ("pass" if value else "fail")


def trend_section(nights: list[tuple[str, dict]], plot_path: Path) -> str:
    """Markdown table + plot of the key metrics over `nights` (oldest first, (tag, metrics))."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    header = "| night | " + " | ".join(label for _, label, _ in TREND_KEYS) + " | gate |"
    lines = ["## Trend over the last nights", "", header, "|" + "---|" * (len(TREND_KEYS) + 2)]
    for tag, metrics in nights:
        cells = [_cell(metrics.get(key), scale) for key, _, scale in TREND_KEYS]
        cells.append(_gate_cell(metrics.get(GATE_KEY)))
        lines.append(f"| {tag} | " + " | ".join(cells) + " |")
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for axis, (key, label, scale) in zip(axes, TREND_KEYS[:3]):
        values = [metrics.get(key) for _, metrics in nights]
        points = [(i, v * scale) for i, v in enumerate(values) if isinstance(v, (int, float))]
        if points:
            axis.plot(*zip(*points), marker="o")
        axis.set_xticks(range(len(nights)), [tag.split("/")[-1] for tag, _ in nights], rotation=45,
                        fontsize=7)
        axis.set_title(label)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(plot_path, dpi=100)
    plt.close(figure)
    return "\n".join(lines + ["", f"![trend]({plot_path.name})", ""])


def _git_json(repo: Path, revision: str, path: str):
    import json
    import subprocess

    shown = subprocess.run(["git", "show", f"{revision}:{path}"], cwd=repo, capture_output=True,
                           text=True)
    return json.loads(shown.stdout) if shown.returncode == 0 else None


def night_tag(repo: Path, commit: str) -> str | None:
    """The `nightly/...` tag of a night's commit, if it has one."""
    import subprocess

    result = subprocess.run(["git", "describe", "--tags", "--exact-match", "--match", "nightly/*",
                             commit], cwd=repo, capture_output=True, text=True)
    return result.stdout.strip() or None


def published_nights(repo: Path, tip: str, limit: int = 10) -> list[tuple[str, dict]]:
    """(name, evaluate metrics) of the last `limit` nights on the versioning branch, oldest first.

    Each night commit's first parent is the night before, so the first-parent chain is the history.
    """
    import subprocess

    log = subprocess.run(["git", "log", "--first-parent", f"-n{limit}", "--format=%H", tip],
                         cwd=repo, capture_output=True, text=True)
    nights = []
    for commit in log.stdout.split():
        metrics = _git_json(repo, commit, "metrics/evaluate.json")
        if metrics is None:
            continue
        nights.append((night_tag(repo, commit) or commit[:10], metrics))
    return nights[::-1]


def nights_section(workspace: Path, previous: str | None) -> str:
    """The paired comparison with the previous night and the trend table/plot, as Markdown."""
    import json

    current_metrics = json.loads((workspace / "metrics" / "evaluate.json").read_text())
    current_predictions = workspace / "metrics" / "predictions.json"
    nights = published_nights(workspace, previous) if previous else []
    lines = []
    if previous:
        before = _git_json(workspace, previous, "metrics/predictions.json")
        if before is not None and current_predictions.is_file():
            lines += [compare_nights(before, json.loads(current_predictions.read_text())), ""]
    plot = workspace / TREND_PLOT
    plot.parent.mkdir(parents=True, exist_ok=True)
    lines.append(trend_section([*nights, ("tonight", current_metrics)], plot))
    return "\n".join(lines)
