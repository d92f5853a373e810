"""The pieces the stages glue together, in-process: the Task chosen from a recipe, the evaluation
rows of several artifacts, the fp32-vs-int8 comparison, the replay check and the student."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from slimline.artifact.edits import resize_edits
from slimline.artifact.recipe import Recipe, write_onnx_artifact
from slimline.artifact.store import check_replay, write_artifact
from slimline.artifact.student import build_student
from slimline.config.params import DistillParams, EvaluateParams
from slimline.data.splits import Split
from slimline.errors import SlimlineError
from slimline.measure.comparison import compare_precisions
from slimline.measure.evaluation import evaluate_models
from slimline.models.architectures import build_model
from slimline.task import CLASSIFICATION, EMBEDDING, Task, task_of

FEATURES, CLASSES = 6, 3


def linear_graph(path, weight: np.ndarray) -> None:
    """An ONNX classifier `logits = input @ weight` with a dynamic batch axis."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "weight"], ["logits"])], "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", weight.shape[1]])],
        [numpy_helper.from_array(weight.astype(np.float32), "weight")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))


def linear_artifact(folder, weight, history) -> None:
    scratch = folder.with_suffix(".onnx")
    linear_graph(scratch, weight)
    recipe = Recipe(
        "onnx",
        {"file": "model.onnx"},
        [{"name": "input", "dtype": "float32", "shape": [1, FEATURES], "axes": ["batch", None]}],
        history=history,
    )
    write_onnx_artifact(folder, scratch, recipe)


@pytest.fixture()
def test_split() -> Split:
    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((200, FEATURES)).astype(np.float32)
    return Split(inputs, np.argmax(inputs[:, :CLASSES], axis=1).astype(np.int64))


def test_the_task_comes_from_the_recipe_and_says_how_it_is_judged():
    encoder = Recipe("huggingface", {"config": {}, "task": "embedding"}, [])
    assert task_of(encoder) == Task(EMBEDDING, "texts")
    assert task_of(encoder).metric == "embedding fidelity"
    assert task_of(encoder).throughput_unit == "texts/s"
    assert task_of(encoder).judged == "nn@1 agreement"
    assert task_of(Recipe("resnet_digits", {}, [])) == Task(CLASSIFICATION)
    assert task_of(Recipe("resnet_digits", {}, [])).throughput_unit == "images/s"
    outputs = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert Task(CLASSIFICATION).output_quality(outputs, outputs, np.array([0, 0])) == 0.5
    assert Task(EMBEDDING).output_quality(outputs, outputs, np.array([0, 0])) == pytest.approx(1.0)


def test_evaluation_rows_pair_each_model_with_the_reference(tmp_path, test_split):
    perfect = np.zeros((FEATURES, CLASSES))
    perfect[np.arange(CLASSES), np.arange(CLASSES)] = 1.0
    worse = perfect.copy()
    worse[:, 2] = worse[:, 0]  # class 2 ties with class 0, which argmax prefers: never class 2
    linear_artifact(tmp_path / "teacher", perfect, ["prepare"])
    linear_artifact(tmp_path / "shipped", worse, ["prepare", "quantize"])
    settings = EvaluateParams(latency_runs=200, warmup_runs=1, rounds=2, throughput_runs=2,
                              throughput_batch=8)
    lines = []
    evaluation = evaluate_models({"teacher": tmp_path / "teacher", "shipped": tmp_path / "shipped"},
                                 test_split, Task(CLASSIFICATION), settings, log=lines.append)
    teacher, shipped = evaluation.rows
    missed = int((test_split.labels == 2).sum())
    assert teacher["top1"] == 1.0 and shipped["top1"] == pytest.approx(1 - missed / 200)
    assert shipped["lost"] == missed and shipped["gained"] == 0 and shipped["diff_high"] < 0
    assert shipped["status"] == "quantize" and teacher["size_ratio"] == 1.0
    assert shipped["parameters"] == FEATURES * CLASSES and shipped["latency_p50_ms"] > 0
    metrics = evaluation.metrics(Task(CLASSIFICATION))
    assert metrics["shipped.top1"] == shipped["top1"] and "shipped.mean_kl" in metrics
    assert any("shipped" in line and "test top-1" in line for line in lines)


def test_an_artifact_with_the_same_onnx_bytes_is_not_run_or_timed_again(tmp_path, test_split):
    perfect = np.eye(FEATURES, CLASSES)
    linear_artifact(tmp_path / "teacher", perfect, ["prepare"])
    linear_artifact(tmp_path / "pruned", perfect, ["prepare", "prune (disabled)"])
    linear_artifact(tmp_path / "shipped", perfect * 2, ["prepare", "quantize"])
    settings = EvaluateParams(latency_runs=200, warmup_runs=1, rounds=2, throughput_runs=2,
                              throughput_batch=8)
    lines = []
    evaluation = evaluate_models({name: tmp_path / name for name in ("teacher", "pruned",
                                                                      "shipped")},
                                 test_split, Task(CLASSIFICATION), settings, log=lines.append)
    teacher, pruned, shipped = evaluation.rows
    assert pruned["same_onnx_as"] == "teacher" and shipped["same_onnx_as"] == ""
    assert pruned["latency_p50_ms"] == teacher["latency_p50_ms"] and pruned["speedup"] == 1.0
    assert any("same bytes as teacher" in line for line in lines)
    assert any("2 distinct graphs of 3" in line for line in lines)


def test_precision_comparison_reports_drop_agreement_size_and_speed(tmp_path, test_split):
    perfect = np.eye(FEATURES, CLASSES)
    linear_graph(tmp_path / "fp32.onnx", perfect)
    linear_graph(tmp_path / "int8.onnx", np.round(perfect * 0.5) * 2)  # class 0..2 survive
    splits = {"val": test_split, "test": test_split}
    compared = compare_precisions(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", splits,
                                  Task(CLASSIFICATION), runs=20, rounds=2)
    assert compared.quality["fp32"]["val"] == 1.0
    assert compared.drop_points("test") == pytest.approx(
        100 * (1 - compared.quality["int8"]["test"])
    )
    assert 0 <= compared.agreement <= 1 and compared.size_ratio == pytest.approx(1.0, abs=0.05)
    assert compared.speedup > 0
    metrics = compared.metrics(Task(CLASSIFICATION))
    assert metrics["int8_test_top1"] == compared.quality["int8"]["test"] and metrics["speedup"] > 0
    assert "agree on" in compared.summary(Task(CLASSIFICATION))[0]
    embedded = compare_precisions(tmp_path / "fp32.onnx", tmp_path / "fp32.onnx", splits,
                                  Task(EMBEDDING), runs=20, rounds=2)
    assert embedded.agreement is None and embedded.quality["int8"]["test"] == pytest.approx(1.0)


ARGUMENTS = {"in_channels": 1, "num_classes": 10, "widths": [4, 8, 8], "blocks_per_stage": 1}


def test_a_recipe_that_does_not_rebuild_the_model_is_refused_before_anything_is_written(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet_digits", **ARGUMENTS)
    narrower = build_model("resnet_digits", **{**ARGUMENTS, "widths": [4, 4, 8]})
    recipe = Recipe("resnet_digits", ARGUMENTS, [1, 1, 28, 28])
    check_replay(recipe, model)
    with pytest.raises(SlimlineError, match="do not reproduce the model"):
        check_replay(recipe, narrower)
    with pytest.raises(SlimlineError, match="do not reproduce the model"):
        write_artifact(
            tmp_path / "bad", narrower, recipe, np.zeros((2, 1, 28, 28), np.float32), 1e-3
        )
    assert not (tmp_path / "bad").exists()
    # the edits that describe the narrower model make its recipe rebuild it
    check_replay(recipe.derive("prune", edits=resize_edits(model, narrower)), narrower)


def test_the_student_is_the_input_model_or_a_fresh_narrower_one(tmp_path):
    torch.manual_seed(0)
    teacher = build_model("resnet_digits", **ARGUMENTS)
    recipe = Recipe("resnet_digits", ARGUMENTS, [1, 1, 28, 28], history=["prepare"])
    write_artifact(tmp_path / "input", teacher, recipe, np.zeros((2, 1, 28, 28), np.float32), 1e-3)
    same = build_student(tmp_path / "input", recipe, DistillParams(), seed=0)
    assert same.recipe.history == ["prepare", "distill"] and "the input model" in same.description
    fresh = build_student(
        tmp_path / "input", recipe, DistillParams(student_widths=[2, 4, 4]), seed=0
    )
    assert fresh.recipe.arguments["widths"] == [2, 4, 4] and "fresh" in fresh.description
    assert sum(p.numel() for p in fresh.model.parameters()) < sum(
        p.numel() for p in teacher.parameters()
    )
    with pytest.raises(SlimlineError, match="student_layers is for transformers"):
        build_student(tmp_path / "input", recipe, DistillParams(student_layers=[0]), seed=0)


def test_an_embedding_model_with_labels_and_scored_pairs_is_scored_on_its_task(tmp_path):
    """The test texts' classes give each model a probe and a k-NN accuracy, pairs scored by
    people an STS Spearman, all in the rows, the metrics and the report; without labels and
    scores, none of them."""
    from slimline.report.markdown import markdown_report

    rng = np.random.default_rng(0)
    classes = np.repeat(np.arange(3), 40)
    features = (3 * rng.standard_normal((3, FEATURES)))[classes] + 0.3 * rng.standard_normal(
        (120, FEATURES))
    test = Split({"input": features.astype(np.float32)}, classes)
    pairs = (Split({"input": features[:20].astype(np.float32)}, np.zeros(20, np.int64)),
             Split({"input": features[20:40].astype(np.float32)}, np.zeros(20, np.int64)))
    people = np.sum(features[:20] * features[20:40], 1) / np.linalg.norm(
        features[:20], axis=1) / np.linalg.norm(features[20:40], axis=1)    # the teacher's order
    linear_artifact(tmp_path / "teacher", np.eye(FEATURES), ["prepare"])
    # The shipped encoder keeps one of six dimensions: the classes blur.
    linear_artifact(tmp_path / "shipped", np.eye(FEATURES)[:, :1].repeat(FEATURES, 1),
                    ["prepare", "quantize"])
    settings = EvaluateParams(latency_runs=200, warmup_runs=1, rounds=2, throughput_runs=2,
                              throughput_batch=8)
    task = Task(EMBEDDING, "texts")
    models = {"teacher": tmp_path / "teacher", "shipped": tmp_path / "shipped"}
    lines = []
    # Queries with relevance labels: each of 10 queries relevant to the corpus texts of its class.
    queries = Split({"input": features[:120:12].astype(np.float32)}, np.zeros(10, np.int64))
    corpus = Split({"input": features.astype(np.float32)}, np.zeros(120, np.int64))
    relevance = (classes[:120:12, None] == classes[None, :]).astype(np.float64)
    evaluation = evaluate_models(models, test, task, settings, pairs=pairs, pair_scores=people,
                                 retrieval=(queries, corpus, relevance), log=lines.append)
    teacher, shipped = evaluation.rows
    assert teacher["ndcg_at_10"] == 1.0 and teacher["labelled_recall_at_10"] < 1.0   # 40 relevant
    assert shipped["ndcg_at_10_diff"] < 0 and "shipped.ndcg_at_10_diff_high" in evaluation.metrics(
        task)
    assert teacher["probe_accuracy"] == 1.0 and teacher["knn_accuracy"] == 1.0
    assert shipped["probe_accuracy"] < 0.9 and shipped["knn_accuracy"] < 0.9
    assert teacher["sts_spearman"] == pytest.approx(1.0) and shipped["sts_spearman"] < 0.9
    # Scored pairs are not judged as 1/0 labels: the item-by-item column stays nn@1.
    assert "nn@1 agreement" in evaluation.judged
    metrics = evaluation.metrics(task)
    assert metrics["shipped.probe_accuracy"] == shipped["probe_accuracy"]
    assert "teacher.knn_accuracy" in metrics and "shipped.sts_spearman" in metrics
    assert any("probe accuracy" in line and "shipped" in line for line in lines)
    report = markdown_report(rows=evaluation.rows, checks=[], gate_rule="interval",
                             shipped="shipped", detectable=0.01, noisy=[], per_class=None,
                             lineage={"cpu": {"model": "x", "logical_cores": 2,
                                              "int8_flags": []}},
                             settings=settings.model_dump(), throughput_unit="texts/s")
    assert "probe acc %" in report and "k-NN acc %" in report and "STS Spearman" in report
    assert "confusion" not in report and "Per-class" not in report
    # The teacher's probe, k-NN and STS, each with its difference from itself and the interval.
    assert "| 100.0 (+0.0, +0.0..+0.0) | 100.0 (+0.0, +0.0..+0.0) | 1.0000 (+0.0, " in report
    # The shipped model's drops, with intervals, in the rows and the metrics: what the gate
    # judges (tests/unit/test_task_gate.py).
    for key in ("probe_accuracy", "knn_accuracy", "sts_spearman"):
        assert shipped[f"{key}_diff_low"] <= shipped[f"{key}_diff"] <= shipped[f"{key}_diff_high"]
        assert shipped[f"{key}_diff"] < -0.1 and metrics[f"shipped.{key}_diff_high"] < 0
    assert shipped["probe_accuracy_diff"] == pytest.approx(
        shipped["probe_accuracy"] - teacher["probe_accuracy"])
    assert not shipped["student"]                    # prepare -> quantize: the teacher's network

    unlabelled = Split(test.inputs, np.zeros(120, np.int64))
    plain = evaluate_models(models, unlabelled, task, settings, log=lines.append)
    assert not {"probe_accuracy", "knn_accuracy", "sts_spearman", "ndcg_at_10"} & set(
        plain.rows[0])
    assert not any(key.endswith("probe_accuracy") for key in plain.metrics(task))
