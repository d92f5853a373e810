"""The budget-driven search: real trials, a non-dominated front, resumable after interruption."""

import numpy as np
import onnx
import optuna
from onnx import TensorProto, helper

from slimline.config.load import load_params
from slimline.config.params import GateParams, deep_merge
from slimline.config.profiles import load_profile
from slimline.search import (
    Candidate,
    Space,
    best_within_budgets,
    pareto_front,
    quantize_schemes,
    start_from,
)
from tests.conftest import ROOT


def candidate(number, top1, latency, size):
    return Candidate(number, {}, top1, latency, size, 1.0)


def test_front_holds_only_non_dominated_points():
    points = [candidate(0, 0.98, 1.0, 1.0), candidate(1, 0.97, 0.5, 0.5),
              candidate(2, 0.96, 0.6, 0.6),    # dominated by 1
              candidate(3, 0.99, 2.0, 0.9), candidate(4, 0.97, 0.5, 0.5)]  # 4 ties with 1
    front = pareto_front(points)
    assert {c.number for c in front} == {0, 1, 3, 4}
    teacher = {"val_top1": 0.984, "latency_ms": 2.4, "size_mb": 4.0}
    budgets = GateParams(max_top1_drop=1.5, max_latency_ms=1.5)
    assert best_within_budgets(front, budgets, teacher).number in (1, 4)
    assert best_within_budgets(front, GateParams(max_top1_drop=0.1),
                               {**teacher, "val_top1": 0.999}) is None
    # Relative budgets: 4x faster than the teacher leaves only 1 and 4 (0.5 ms of 2.4), and
    # a sixth of its size none of them.
    relative = GateParams(max_top1_drop=5.0, min_speedup=4.0)
    assert best_within_budgets(front, relative, teacher).number in (1, 4)
    assert best_within_budgets(front, GateParams(max_top1_drop=5.0, max_size_ratio=1 / 16),
                               teacher) is None


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
    start_from(study, space.point(params), log=lambda line: None)  # a resumed study: no second copy
    assert len(study.get_trials()) == 1


def graph_file(folder, op, weight_shape, input_shape):
    weight = helper.make_tensor(
        "w", TensorProto.FLOAT, weight_shape, [0.0] * int(np.prod(weight_shape))
    )
    node = helper.make_node(op, ["x", "w"], ["y"])
    graph = helper.make_graph(
        [node],
        op,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [weight],
    )
    path = folder / f"{op}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def test_dynamic_int8_is_offered_only_to_matmul_heavy_models(tmp_path):
    conv = graph_file(tmp_path, "Conv", [8, 1, 3, 3], [1, 1, 28, 28])
    matmul = graph_file(tmp_path, "MatMul", [64, 32], [1, 64])
    assert "dynamic" not in quantize_schemes(conv, None)
    assert quantize_schemes(matmul, None) == ("static", "dynamic", "none")
