"""A sentence encoder through `target: encoder` (profiles/encoder.yaml), end to end with dvc
repro: a tiny BERT encoder (no task head) and unlabelled texts, as a user hands them over. The
student keeps the first and last two layers, its vocabulary is trimmed to the training texts'
tokens, and it is distilled on embeddings and hidden states (and variants of the texts);
quantize fuses the graph and quantizes the embedding table too; evaluate judges embeddings by
nn@1, cosine and Spearman and does not re-time the disabled stages' copies."""
import json
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from slimline.artifact.recipe import ONNX, read_recipe
from slimline.artifact.store import load_model
from tests.conftest import make_project, reduced_params, run
from tests.helpers.text import save_tiny_bert, sentences, write_jsonl

pytestmark = pytest.mark.slow
UNUSED_WORDS = ["zebra quartz violin", "glacier harbour lantern"]


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
        distill={"trim_vocabulary": True},
        quantize={"latency_runs": 40, "latency_rounds": 4},
    )
    project = make_project(folder / "project", params)
    write_jsonl(rows, project / "texts.jsonl")
    # The tokenizer knows words the texts never use: the trimmed vocabulary drops them.
    save_tiny_bert(project / "user_model", [row["text"] for row in rows] + UNUSED_WORDS,
                   task="embedding", layers=4, hidden=32, heads=4)
    run(["dvc", "repro"], project, timeout=1200)
    return project


def metrics(project, stage):
    return json.loads((project / "metrics" / f"{stage}.json").read_text())


def test_the_student_keeps_the_first_and_last_two_layers_and_learned_from_the_teacher(
        encoder_line):
    model, recipe = load_model(encoder_line / "models" / "distilled")
    assert recipe.edits[-2] == {"op": "keep_layers", "module": "model.encoder.layer",
                                "indices": [0, 2, 3]}
    assert len(model.model.encoder.layer) == 3
    distill = metrics(encoder_line, "distill")
    assert recipe.edits[-1]["op"] == "trim_vocabulary"
    rows = model.model.get_input_embeddings().num_embeddings
    assert rows == distill["vocabulary_rows"] <= distill["vocabulary_rows_before"] - 6
    # The tiny random encoder's layers are near identity: the student starts at cosine 0.9999,
    # so the fidelity has no room to rise; the distillation loss must fall, the fidelity stay.
    assert distill["distilled_val_top1"] > 0.99
    log = (encoder_line / "logs" / "distill.log").read_text()
    losses = [float(line.rsplit(" ", 1)[1]) for line in log.splitlines()
              if "distill: epoch " in line and "mean loss" in line]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert "hidden-state MSE" in log and "{1: 2, 2: 3, 3: 4}" in log and "step " in log
    assert "each text and 8 edited variants of it" in log
    assert "vocabulary trimmed to the" in log
    assert distill["lineage.training_device"] == "cpu"


def test_quantize_fuses_the_graph_and_quantizes_the_embedding_table(encoder_line):
    quantize = metrics(encoder_line, "quantize")
    log = (encoder_line / "logs" / "quantize.log").read_text()
    assert "graph fusion: Attention 3" in log
    assert quantize["fused_attention"] == 3
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


def run_distill_with_budget(project, name, budget):
    """The distill stage on the line's prepared texts with distill.student_budget (the encoder
    profile's recipe, no target: the profile fixes student_layers)."""
    import yaml

    from slimline.config.profiles import load_profile

    params = yaml.safe_load((project / "params.yaml").read_text())
    recipe = load_profile(project / "profiles", "encoder").recipe
    params["target"] = None
    params["distill"] = {**params["distill"], **recipe["distill"], "student_layers": None,
                         "trim_vocabulary": False, "text_variants": 0, "student_budget": budget}
    params["distill"]["train"] = {**recipe["distill"]["train"], "epochs": 2}
    (project / f"{name}.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run([sys.executable, "-m", "stages.distill", "--params", f"{name}.yaml",
                  "--input", "models/decomposed", "--teacher", "models/teacher",
                  "--data", "data/prepared", "--output", f"{name}/model",
                  "--metrics", f"{name}/distill.json", "--log", f"{name}/distill.log"],
                 project, check=False)
    return result, project / name


def test_the_student_is_chosen_by_the_budgets_shallowest_first(encoder_line):
    # The tiny encoder's layers are near identity: every depth keeps cosine > 0.99.
    result, out = run_distill_with_budget(encoder_line, "budget_met",
                                          {"depths": [2, 3], "min_speedup": 0.01,
                                           "min_fidelity": 0.99})
    assert result.returncode == 0, result.stderr[-2000:]
    chosen = json.loads((out / "distill.json").read_text())
    assert chosen["student_depth"] == 2 and chosen["student_met_fidelity"]
    assert "candidate_3_layers.fidelity" not in chosen          # no deeper student trained
    assert chosen["candidate_3_layers.speedup"] > 0 and chosen["candidate_2_layers.fidelity"] > 0.99
    model, recipe = load_model(out / "model")
    assert len(model.model.encoder.layer) == 2 and recipe.edits[-1]["indices"][-1] == 3
    log = (out / "distill.log").read_text()
    assert "| depth | layers |" in log and "none in the 2 epochs" in log

    result, out = run_distill_with_budget(encoder_line, "budget_missed",
                                          {"depths": [2, 3], "min_speedup": 0.01,
                                           "min_fidelity": 1.0})
    assert result.returncode == 0, result.stderr[-2000:]
    missed = json.loads((out / "distill.json").read_text())
    assert not missed["student_met_fidelity"] and "candidate_3_layers.fidelity" in missed
    assert "NO student met distill.student_budget.min_fidelity = 1" in (
        out / "distill.log").read_text()
