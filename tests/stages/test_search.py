"""The budget-driven search: real trials, a non-dominated front, resumable after interruption."""
import json
import subprocess
import sys

import pytest
import yaml

from slimline.search import (
    Candidate,
)
from tests.conftest import ROOT, reduced_params


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
