"""Shared by test_prune.py and test_decompose.py: a small trained teacher and a stage runner.

The teacher is the real default architecture at widths [8, 16, 32], trained for one short epoch
on a 512-image slice of the real digits and written with the real artifact writer; small enough
that a stage test (fine-tuning included) takes seconds, not minutes, on 2 shared cores.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, reduced_params


@pytest.fixture(scope="session")
def small_teacher(tmp_path_factory) -> Path:
    from slimline.artifact.recipe import Recipe
    from slimline.artifact.store import write_artifact
    from slimline.config.params import TrainParams
    from slimline.data.splits import load_mnist, save_split, split_dataset
    from slimline.models.architectures import build_model
    from slimline.training.loop import fit, seed_everything

    folder = tmp_path_factory.mktemp("small_teacher")
    (folder / "data").mkdir()
    seed_everything(0)
    images, labels = load_mnist()
    splits = split_dataset(images[:900], labels[:900], val_size=128, test_size=128,
                           calibration_size=64, seed=0)
    for name, split in splits.items():
        save_split(split, folder / "data" / f"{name}.npz")
    arguments = {"in_channels": 1, "num_classes": 10, "widths": [8, 16, 32], "blocks_per_stage": 1}
    model = build_model("resnet_digits", **arguments)
    fit(model, splits["train"], TrainParams(epochs=1), seed=0, log=lambda line: None)
    recipe = Recipe("resnet_digits", arguments, [1, 1, 28, 28], history=["prepare"])
    write_artifact(folder / "teacher", model, recipe, splits["val"].images[:16], 1e-3)
    return folder


def run_stage(
    stage: str, folder: Path, tmp_path: Path, section: dict
) -> subprocess.CompletedProcess:
    """`python -m stages.<stage>` on the small teacher with `section` as its params section."""
    params = reduced_params(**{stage: section})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return subprocess.run(
        [sys.executable, "-m", f"stages.{stage}", "--params", str(tmp_path / "params.yaml"),
         "--input", str(folder / "teacher"), "--data", str(folder / "data"),
         "--output", str(tmp_path / "out"), "--metrics", str(tmp_path / f"{stage}.json"),
         "--log", str(tmp_path / f"{stage}.log")],
        cwd=ROOT, capture_output=True, text=True, timeout=600)


def assert_one_line_error(
    result: subprocess.CompletedProcess, fragment: str, tmp_path: Path
) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
