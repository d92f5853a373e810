"""A sentence encoder through `target: encoder` (profiles/encoder.yaml), end to end with dvc
repro: a tiny BERT encoder (no task head) and unlabelled texts, as a user hands them over. The
student is chosen by the profile's budgets (depth and layers measured) and distilled on
embeddings and hidden states from teacher targets cached once; the report shows every
candidate; quantize fuses the graph and quantizes the embedding table too; evaluate judges
embeddings by cosine and recall@10 and does not re-time the disabled stages' copies. The same
recipe with fixed layers, text variants and a trimmed vocabulary runs the distill stage alone."""
import json
import sys

import numpy as np
import onnx
import pytest
import yaml
from onnx import numpy_helper

from slimline.artifact.recipe import ONNX, read_recipe
from slimline.artifact.store import load_model
from slimline.config.params import deep_merge
from slimline.config.profiles import apply_profile
from tests.conftest import make_project, reduced_params, run
from tests.helpers.text import save_tiny_bert, sentences, write_jsonl

pytestmark = pytest.mark.slow
UNUSED_WORDS = ["zebra quartz violin", "glacier harbour lantern"]
# The tiny encoder's layers are near identity: every depth keeps cosine > 0.99, and any student
# runs faster than the teacher by far less than the real profile asks of MiniLM.
TINY_BUDGET = {"depths": [2, 3], "min_speedup": 0.01, "min_fidelity": 0.99}


@pytest.fixture(scope="module")
def encoder_line(tmp_path_factory):
    folder = tmp_path_factory.mktemp("encoder_line")
    rows = [{"text": row["text"]} for row in sentences(500)]
    params = reduced_params(
        target="encoder",
        data={"source": "text", "path": "texts.jsonl",
              "text": {"label_column": None, "max_length": 16},
              "val_size": 60, "test_size": 120, "calibration_size": 32},
        model={"source": "huggingface", "path": "user_model"},
        quantize={"latency_runs": 40, "latency_rounds": 4},
    )
    project = make_project(folder / "project", params)
    # The user tunes the profile's budgets to their model, as its description says.
    profile_path = project / "profiles" / "encoder.yaml"
    profile = yaml.safe_load(profile_path.read_text())
    profile["recipe"]["distill"]["student_budget"] = TINY_BUDGET
    profile_path.write_text(yaml.safe_dump(profile, sort_keys=False))
    write_jsonl(rows, project / "texts.jsonl")
    # The tokenizer knows words the texts never use: the trimmed vocabulary drops them.
    save_tiny_bert(project / "user_model", [row["text"] for row in rows] + UNUSED_WORDS,
                   task="embedding", layers=4, hidden=32, heads=4)
    run(["dvc", "repro"], project, timeout=1200)
    return project


def metrics(project, stage):
    return json.loads((project / "metrics" / f"{stage}.json").read_text())


def test_the_budget_chose_the_shallowest_student_and_the_report_shows_every_candidate(
        encoder_line):
    distill = metrics(encoder_line, "distill")
    assert distill["student_depth"] == 2 and distill["student_met_budget"]
    assert "candidate_3_layers.fidelity" not in distill          # no deeper student trained
    assert distill["candidate_3_layers.speedup"] > 0 and distill["distilled_val_top1"] > 0.99
    model, recipe = load_model(encoder_line / "models" / "distilled")
    assert len(model.model.encoder.layer) == 2 and recipe.edits[-1]["indices"][-1] == 3
    log = (encoder_line / "logs" / "distill.log").read_text()
    epochs = yaml.safe_load((encoder_line / "profiles" / "encoder.yaml").read_text())[
        "recipe"]["distill"]["train"]["epochs"]
    losses = [float(line.rsplit(" ", 1)[1]) for line in log.splitlines()
              if "distill: epoch " in line and "mean loss" in line]
    assert len(losses) == epochs and losses[-1] < losses[0]
    # 440 training texts in many batches: the teacher ran once over them, never in an epoch.
    assert f"none in the {epochs} epochs" in log and "| depth | layers |" in log
    assert distill["lineage.training_device"] == "cpu"
    report = (encoder_line / "reports" / "report.md").read_text()
    assert "## Student candidates" in report and "| 2 |" in report and "shipped" in report
    assert "| 3 |" in report and "not trained" in report
    assert (encoder_line / "reports" / "candidates.png").stat().st_size > 0


def test_quantize_fuses_the_graph_and_quantizes_the_embedding_table(encoder_line):
    quantize = metrics(encoder_line, "quantize")
    log = (encoder_line / "logs" / "quantize.log").read_text()
    assert "graph fusion: Attention 2" in log            # the 2-layer student the budget chose
    assert quantize["fused_attention"] == 2
    graph = onnx.load(str(encoder_line / "models" / "quantized" / ONNX)).graph
    tables = [numpy_helper.to_array(init) for init in graph.initializer
              if init.name.endswith("_quantized") and "word_embeddings" in init.name]
    assert tables and tables[0].dtype in (np.int8, np.uint8)
    assert read_recipe(encoder_line / "models" / "quantized").precision == "int8-dynamic"
    assert quantize["int8_test_nn1"] > 0 and "int8_test_spearman" in quantize


def test_evaluate_judges_embeddings_and_does_not_time_copies_twice(encoder_line):
    evaluate = metrics(encoder_line, "evaluate")
    for name in ("teacher", "distilled", "quantized"):
        for key in ("nn1", "cos_mean", "cos_min", "spearman"):
            assert f"{name}.{key}" in evaluate
    assert evaluate["teacher.nn1"] == 1.0 and evaluate["teacher.cos_min"] == pytest.approx(1.0)
    assert evaluate["quantized.nn1"] < 1.0 or evaluate["quantized.cos_mean"] < 1.0
    log = (encoder_line / "logs" / "evaluate.log").read_text()
    assert "pruned" in log and "same bytes as teacher's" in log   # prune and decompose are off
    assert evaluate["pruned.latency_p50_ms"] == evaluate["teacher.latency_p50_ms"]
    report = (encoder_line / "reports" / "report.md").read_text()
    assert "texts/s" in report and "nn@1 agreement" in report and "img/s" not in report
    # An embedding model has no classes: no confusion matrix of nn@1 agreement as if it were one.
    assert "Per-class" not in report and not (encoder_line / "reports" / "confusion.png").exists()


def run_distill(project, name, **distill):
    """The distill stage alone on the line's prepared texts: the encoder profile's recipe folded
    in with these distill settings instead, no target (so the profile overrides nothing)."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params = deep_merge(apply_profile(params, project / "profiles"), {"distill": distill})
    params["target"] = None
    (project / f"{name}.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run([sys.executable, "-m", "stages.distill", "--params", f"{name}.yaml",
                  "--input", "models/decomposed", "--teacher", "models/teacher",
                  "--data", "data/prepared", "--output", f"{name}/model",
                  "--metrics", f"{name}/distill.json", "--log", f"{name}/distill.log"],
                 project, check=False)
    return result, project / name


def test_a_missed_fidelity_budget_ships_the_most_faithful_fast_student_and_says_so(
        encoder_line):
    result, out = run_distill(encoder_line, "budget_missed",
                              student_budget={**TINY_BUDGET, "min_fidelity": 1.0})
    assert result.returncode == 0, result.stderr[-2000:]
    missed = json.loads((out / "distill.json").read_text())
    assert not missed["student_met_budget"] and "candidate_3_layers.fidelity" in missed
    assert "NO student met distill.student_budget.min_fidelity = 1" in (
        out / "distill.log").read_text()


def test_fixed_layers_with_text_variants_and_a_trimmed_vocabulary(encoder_line):
    result, out = run_distill(encoder_line, "fixed", student_budget=None,
                              student_layers=[0, -2, -1], trim_vocabulary=True, text_variants=8,
                              train={"epochs": 2})
    assert result.returncode == 0, result.stderr[-2000:]
    model, recipe = load_model(out / "model")
    assert recipe.edits[-2] == {"op": "keep_layers", "module": "model.encoder.layer",
                                "indices": [0, 2, 3]}
    assert recipe.edits[-1]["op"] == "trim_vocabulary"
    distill = json.loads((out / "distill.json").read_text())
    rows = model.model.get_input_embeddings().num_embeddings
    assert rows == distill["vocabulary_rows"] <= distill["vocabulary_rows_before"] - 6
    assert distill["distilled_val_top1"] > 0.99
    log = (out / "distill.log").read_text()
    assert "hidden-state MSE" in log and "{1: 2, 2: 3, 3: 4}" in log and "step " in log
    assert "each text and 8 edited variants of it" in log
    assert "vocabulary trimmed to the" in log
