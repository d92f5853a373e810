"""Deployment profiles: a recipe plus budgets, selected by `target`, added without code."""

import pytest
import yaml

from slimline.config.load import load_params
from slimline.errors import SlimlineError
from tests.conftest import ROOT

SHIPPED = ("phone", "server", "smart_camera", "vehicle")


def write_project(folder, target, profiles):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["target"] = target
    (folder / "params.yaml").write_text(yaml.safe_dump(raw))
    (folder / "profiles").mkdir()
    for name, body in profiles.items():
        (folder / "profiles" / f"{name}.yaml").write_text(yaml.safe_dump(body))
    return folder / "params.yaml"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profiles_resolve(tmp_path, name):
    params = tmp_path / "params.yaml"
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.write_text(yaml.safe_dump({**raw, "target": name}))
    (tmp_path / "profiles").symlink_to(ROOT / "profiles")
    resolved = load_params(params)
    profile = yaml.safe_load((ROOT / "profiles" / f"{name}.yaml").read_text())
    assert resolved.target == name
    assert resolved.prune.keep_ratio == profile["recipe"]["prune"]["keep_ratio"]
    assert resolved.evaluate.gate.max_top1_drop == profile["budgets"]["max_top1_drop"]


def test_a_user_profile_overrides_params_and_sets_the_gate(tmp_path):
    params = write_project(tmp_path, "my_board", {"my_board": {
        "description": "my board", "recipe": {"prune": {"keep_ratio": 0.3}},
        "budgets": {"max_top1_drop": 2.0, "max_size_mb": 0.1}}})
    resolved = load_params(params)
    assert resolved.prune.keep_ratio == 0.3
    assert (
        resolved.evaluate.gate.max_size_mb == 0.1 and resolved.evaluate.gate.max_latency_ms is None
    )


@pytest.mark.parametrize("target, profiles, expected", [
    ("tablet", {}, "target = 'tablet' is not a known profile"),
    ("zero", {"zero": {"description": "d", "budgets": {"max_latency_ms": 0}}},
     "budgets.max_latency_ms = 0 is not allowed"),
    ("typo", {"typo": {"description": "d", "recipe": {"prune": {"keep_ration": 0.5}},
                       "budgets": {}}}, "recipe: unknown key 'prune.keep_ration'"),
    ("wide", {"wide": {"description": "d", "recipe": {"prune": {"keep_ratio": 1.5}},
                       "budgets": {}}}, "recipe: prune.keep_ratio = 1.5 is not allowed"),
])
def test_bad_profiles_are_one_clear_line(tmp_path, target, profiles, expected):
    with pytest.raises(SlimlineError, match=expected.replace("(", r"\(").replace(".", r"\.")):
        load_params(write_project(tmp_path, target, profiles))
