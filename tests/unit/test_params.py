"""params.yaml is validated on load: bad values stop a stage with one line naming the key."""

import pytest

from slimline.config.load import load_params, parse_params
from slimline.errors import SlimlineError
from tests.conftest import ROOT


def test_shipped_params_file_is_valid():
    params = load_params(ROOT / "params.yaml")
    assert params.data.test_size == 1000
    assert params.model.architecture == "resnet_digits"


@pytest.mark.parametrize("raw, expected", [
    ({"prepare": {"train": {"epochs": -1}}}, "prepare.train.epochs = -1"),
    ({"prepare": {"train": {"learning_rate": -0.1}}}, "prepare.train.learning_rate = -0.1"),
    ({"prepare": {"train": {"epochs": "5"}}}, "prepare.train.epochs = '5'"),
    ({"model": {"widths": [8, 0]}}, "model.widths.1 = 0"),
    ({"data": {"sizes": 3}}, "unknown key 'data.sizes'"),
    ({"surprise": 1}, "unknown key 'surprise'"),
    ({"evaluate": {"latency_runs": 50}}, "evaluate.latency_runs = 50"),
    ({"data": {"calibration_size": 0}}, "data.calibration_size = 0"),
    ({"evaluate": {"gate": {"rule": "vibes"}}}, "evaluate.gate.rule = 'vibes'"),
])
def test_bad_values_name_key_value_and_rule(raw, expected):
    with pytest.raises(SlimlineError) as error:
        parse_params(raw)
    message = str(error.value)
    assert expected in message
    assert "\n" not in message


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(SlimlineError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("seed: [1,\n")
    with pytest.raises(SlimlineError, match="not valid YAML"):
        load_params(tmp_path / "bad.yaml")
