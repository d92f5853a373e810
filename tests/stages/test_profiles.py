"""Deployment profiles: a recipe plus budgets, selected by `target`, added without code."""
import subprocess
import sys

from tests.conftest import ROOT
from tests.unit.test_profiles import write_project


def test_stage_with_unknown_profile_exits_2(tmp_path):
    params = write_project(tmp_path, "tablet", {})
    result = subprocess.run([sys.executable, "-m", "stages.prepare", "--params", str(params),
                             "--data", str(tmp_path / "d"), "--teacher", str(tmp_path / "t"),
                             "--metrics", str(tmp_path / "m.json")],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "not a known profile" in result.stderr
