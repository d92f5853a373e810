"""params.yaml is validated on load: bad values stop a stage with one line naming the key."""
import subprocess
import sys

import pytest
import yaml

from slimline.errors import SlimlineError
from slimline.params import load_params, parse_params
from tests.conftest import ROOT, reduced_params


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


def test_stage_stops_with_one_line_and_exit_2(tmp_path):
    params = reduced_params(prepare={"train": {"epochs": -3}})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run(
        [sys.executable, "-m", "stages.prepare", "--params", str(tmp_path / "params.yaml"),
         "--data", str(tmp_path / "data"), "--teacher", str(tmp_path / "teacher"),
         "--metrics", str(tmp_path / "m.json")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "prepare.train.epochs = -3" in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "teacher").exists() and not (tmp_path / "data").exists()
