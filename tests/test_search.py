"""The budget-driven search: real trials, a non-dominated front, resumable after interruption."""
import json
import subprocess
import sys

import numpy as np
import onnx
import optuna
import pytest
import yaml
from onnx import TensorProto, helper

from slimline.params import GateParams, deep_merge, load_params
from slimline.profiles import load_profile
from slimline.search import (Candidate, Space, best_within_budgets, pareto_front, quantize_schemes,
                             start_from)
from tests.conftest import ROOT, reduced_params


def candidate(number, top1, latency, size):
    return Candidate(number, {}, top1, latency, size, 1.0)


def test_front_holds_only_non_dominated_points():
    points = [candidate(0, 0.98, 1.0, 1.0), candidate(1, 0.97, 0.5, 0.5),
              candidate(2, 0.96, 0.6, 0.6),    # dominated by 1
              candidate(3, 0.99, 2.0, 0.9), candidate(4, 0.97, 0.5, 0.5)]  # 4 ties with 1
    front = pareto_front(points)
    assert {c.number for c in front} == {0, 1, 3, 4}
    budgets = GateParams(max_top1_drop=1.5, max_latency_ms=1.5)
    assert best_within_budgets(front, budgets, teacher_val_top1=0.984).number in (1, 4)
    assert best_within_budgets(front, GateParams(max_top1_drop=0.1), 0.999) is None


def test_a_new_study_starts_from_the_target_profile_recipe():
    params = deep_merge(load_params(ROOT / "params.yaml").model_dump(),
                        load_profile(ROOT / "profiles", "phone").recipe)
    space = Space(("static", "none"), params["decompose"]["rank_rule"])
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    start_from(study, space.point(params), log=lambda line: None)
    recipe = space.sample(study.ask())
    for section, values in recipe.items():   # the first trial runs exactly the profile's params
        for key, value in values.items():
            if key != "compare_without_teacher":
                assert params[section][key] == value, (section, key)
    start_from(study, space.point(params), log=lambda line: None)   # a resumed study: no second copy
    assert len(study.get_trials()) == 1


def graph_file(folder, op, weight_shape, input_shape):
    weight = helper.make_tensor("w", TensorProto.FLOAT, weight_shape, [0.0] * int(np.prod(weight_shape)))
    node = helper.make_node(op, ["x", "w"], ["y"])
    graph = helper.make_graph([node], op, [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight])
    path = folder / f"{op}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def test_dynamic_int8_is_offered_only_to_matmul_heavy_models(tmp_path):
    conv = graph_file(tmp_path, "Conv", [8, 1, 3, 3], [1, 1, 28, 28])
    matmul = graph_file(tmp_path, "MatMul", [64, 32], [1, 64])
    assert "dynamic" not in quantize_schemes(conv, None)
    assert quantize_schemes(matmul, None) == ("static", "dynamic", "none")


@pytest.mark.slow
def test_reduced_search_resumes_and_writes_a_profile(tiny_teacher, tmp_path):
    params = reduced_params(
        prune={"finetune": {"epochs": 1}, "latency_runs": 20},
        decompose={"finetune": {"epochs": 1}, "latency_runs": 20},
        distill={"train": {"epochs": 1}}, quantize={"latency_runs": 20})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "loose.yaml").write_text(yaml.safe_dump(
        {"description": "anything goes", "budgets": {"max_top1_drop": 100.0}}))

    def search(max_trials, *extra):
        return subprocess.run(
            [sys.executable, "-m", "stages.search", "--params", str(tmp_path / "params.yaml"),
             "--target", "loose", "--data", str(tiny_teacher / "data"),
             "--teacher", str(tiny_teacher / "teacher"), "--out", str(tmp_path / "search"),
             "--max-trials", str(max_trials), "--minutes", "30", "--latency-runs", "30", *extra],
            cwd=ROOT, capture_output=True, text=True, timeout=1800)

    first = search(1)
    assert first.returncode == 0, first.stderr
    assert "the first trial is the target profile's recipe" in first.stdout
    assert "quantization schemes tried: static, none" in first.stdout   # a conv net: no dynamic
    made = (tmp_path / "search" / "trials" / "trial-0000" / "result.json").stat().st_mtime
    second = search(2, "--write-profile", "found")  # resumes: trial 0 is not run again
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "search" / "trials" / "trial-0000" / "result.json").stat().st_mtime == made
    assert "trial 0:" not in second.stdout and "trial 1:" in second.stdout

    report = json.loads((tmp_path / "search" / "front.json").read_text())
    front = [Candidate(**c) for c in report["front"]]
    assert front and not any(a.dominates(b) for a in front for b in front)
    assert report["pick"] is not None
    profile = yaml.safe_load((tmp_path / "profiles" / "found.yaml").read_text())
    assert profile["recipe"] == report["pick"]["recipe"]
    assert (tmp_path / "search" / "front.png").read_bytes()[:4] == b"\x89PNG"


def test_unknown_target_is_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(reduced_params()))
    (tmp_path / "profiles").mkdir()
    result = subprocess.run([sys.executable, "-m", "stages.search", "--params",
                             str(tmp_path / "params.yaml"), "--target", "tablet"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "not a known profile" in result.stderr
    assert result.stderr.count("\n") == 1
