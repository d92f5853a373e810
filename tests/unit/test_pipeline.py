"""The pieces the nightly DAG is built from, in-process: dvc.yaml's stage graph, run overrides
merged and validated like params.yaml, runners chosen by name."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from slimline.errors import SlimlineError
from slimline.nightly.overrides import merge_overrides
from slimline.nightly.pipeline import load_pipeline, parse_pipeline
from slimline.nightly.runner import get_runner

ROOT = Path(__file__).resolve().parents[2]

def test_the_graph_reader_refuses_cycles_and_unsupported_stages():
    cyclic = {"stages": {"a": {"cmd": "x", "deps": ["b.out"], "outs": ["a.out"]},
                         "b": {"cmd": "y", "deps": ["a.out"], "outs": ["b.out"]}}}
    with pytest.raises(SlimlineError, match="cycle"):
        parse_pipeline(cyclic)
    with pytest.raises(SlimlineError, match="foreach"):
        parse_pipeline({"stages": {"a": {"foreach": [1], "do": {"cmd": "x"}, "cmd": "x"}}})
    stages = load_pipeline(ROOT / "dvc.yaml")
    assert [o.path for o in stages["prepare"].outputs if not o.cached] == ["metrics/prepare.json"]


def test_overrides_merge_nested_and_dotted_keys_and_are_validated_like_params_yaml():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    merged = merge_overrides(
        params,
        {
            "model.widths": [8, 16, 32],
            "prepare": {"train": {"epochs": 1}},
            "prepare.train.batch_size": 32,
        },
    )
    assert merged["model"]["widths"] == [8, 16, 32]
    assert merged["prepare"]["train"] == {
        **params["prepare"]["train"],
        "epochs": 1,
        "batch_size": 32,
    }
    with pytest.raises(
        SlimlineError, match=r"^run overrides: prepare.train.epochs = '1' is not allowed"
    ):
        merge_overrides(params, {"prepare.train.epochs": "1"})
    with pytest.raises(SlimlineError, match="unknown key 'prepare.train.epoch'"):
        merge_overrides(params, {"prepare.train.epoch": 1})
    with pytest.raises(SlimlineError, match="must be a JSON object of params .* not list"):
        merge_overrides(params, ["prepare.train.epochs", 1])


def test_runners_are_chosen_by_name():
    assert get_runner("local").name == "local"
    with pytest.raises(
        SlimlineError, match=r"runner 'ssh' is not available \(known: docker, kubernetes, local\)"
    ):
        get_runner("ssh")
