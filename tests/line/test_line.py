"""The real line (dvc repro) on a reduced configuration: outputs a user relies on."""
import json

import numpy as np
import onnx
import pytest

from slimline.artifact.recipe import ONNX, read_recipe
from slimline.artifact.store import load_model
from slimline.data.splits import load_split
from slimline.measure.runtime import make_session, onnx_accuracy
from tests.conftest import run

pytestmark = pytest.mark.slow
MODELS = ("teacher", "pruned", "decomposed", "distilled", "quantized")


def test_every_stage_wrote_metrics_and_lineage(line):
    for stage in ("prepare", "prune", "decompose", "distill", "quantize", "evaluate"):
        metrics = json.loads((line / "metrics" / f"{stage}.json").read_text())
        assert metrics["lineage.seed"] == 0
        assert len(metrics["lineage.params_sha256"]) == 64
        assert (line / "logs" / f"{stage}.log").read_text().strip()


def test_teacher_is_plausible_and_onnx_matches_torch(line):
    prepare = json.loads((line / "metrics" / "prepare.json").read_text())
    assert 0.5 < prepare["teacher_test_top1"] <= 1.0
    assert prepare["onnx_parity_max_abs_diff"] < 1e-3
    model, recipe = load_model(line / "models" / "teacher")
    assert recipe.history == ["prepare"]
    test = load_split(line / "data" / "prepared" / "test.npz")
    accuracy = onnx_accuracy(make_session(line / "models" / "teacher" / ONNX), test)
    assert accuracy == pytest.approx(prepare["teacher_test_top1"], abs=0.003)


def test_evaluate_measured_every_artifact(line):
    metrics = json.loads((line / "metrics" / "evaluate.json").read_text())
    assert metrics["gate_passed"] == 1
    for name in MODELS:
        assert 0.5 < metrics[f"{name}.top1"] <= 1.0
        assert 0 < metrics[f"{name}.latency_p50_ms"] <= metrics[f"{name}.latency_p95_ms"]
        assert metrics[f"{name}.latency_p95_ms"] <= metrics[f"{name}.latency_p99_ms"]
        assert metrics[f"{name}.throughput"] > 0 and metrics[f"{name}.macs"] > 0
        onnx_file = line / "models" / name / ONNX
        assert metrics[f"{name}.size_mb"] == pytest.approx(onnx_file.stat().st_size / 1e6)
        assert read_recipe(line / "models" / name).history[0] == "prepare"
    assert metrics["teacher.speedup"] == pytest.approx(1.0)
    report = (line / "reports" / "report.md").read_text()
    assert "Gate: PASSED" in report and "| teacher |" in report and "code_revision" in report
    for plot in ("triangle.png", "confusion.png"):
        assert (line / "reports" / plot).read_bytes()[:4] == b"\x89PNG"
    rows = json.loads((line / "reports" / "models.json").read_text())
    assert [row["name"] for row in rows] == list(MODELS)


def test_exported_graph_has_dynamic_batch(line):
    graph = onnx.load(str(line / "models" / "teacher" / ONNX)).graph
    assert not graph.input[0].type.tensor_type.shape.dim[0].HasField("dim_value")
    session = make_session(line / "models" / "teacher" / ONNX)
    out = session.run(None, {"input": np.zeros((3, 1, 28, 28), np.float32)})[0]
    assert out.shape == (3, 10)


def test_second_repro_does_no_work_and_metrics_diff_works(line):
    result = run(["dvc", "repro"], line)
    assert "Running stage" not in result.stdout
    assert "didn't change" in result.stdout
    shown = run(["dvc", "metrics", "show", "--json"], line)
    assert "teacher.top1" in shown.stdout
    run(["dvc", "metrics", "diff"], line)
    run(["dvc", "plots", "show", "--json"], line)


def test_editing_orchestration_or_another_stages_technique_reruns_nothing_else(line, tmp_path):
    """A scratch copy of the finished line: an edit to orchestration or the search
    leaves every stage up to date; an edit to quantize's technique invalidates quantize alone
    (and what reads its output), never the teacher."""
    import shutil

    scratch = tmp_path / "scratch"
    shutil.copytree(line, scratch, symlinks=True)
    for edited in (
        "slimline/nightly/publish.py",
        "slimline/nightly/tasks.py",
        "slimline/search.py",
    ):
        with open(scratch / edited, "a") as handle:
            handle.write("# an edit that changes no stage\n")
    assert "Data and pipelines are up to date" in run(["dvc", "status"], scratch).stdout
    with open(scratch / "slimline/techniques/quantize.py", "a") as handle:
        handle.write("# a quantize-only edit\n")
    changed = json.loads(run(["dvc", "status", "--json"], scratch).stdout)
    assert set(changed) == {"quantize"}
