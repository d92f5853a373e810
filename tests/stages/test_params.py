"""params.yaml is validated on load: bad values stop a stage with one line naming the key."""
import subprocess
import sys

import yaml

from tests.conftest import ROOT, reduced_params


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
