"""Files a run reads are not trusted: params.yaml's paths (trusted) still stay inside the project,
links included, unless the deployment adds a data root; a Hugging Face folder never gets to run
code. See docs/reliability.md, "Threat model"."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, reduced_params

NPZ = {"source": "npz", "val_size": 8, "test_size": 8, "calibration_size": 4}
SMALL_MODEL = {"widths": [4, 4, 4], "num_classes": 2}


def prepare(folder: Path, env: dict | None = None, **sections) -> subprocess.CompletedProcess:
    params = folder / "params.yaml"
    params.write_text(yaml.safe_dump(reduced_params(**sections)))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "stages.prepare",
            "--params",
            str(params),
            "--data",
            str(folder / "data"),
            "--teacher",
            str(folder / "teacher"),
            "--metrics",
            str(folder / "prepare.json"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def assert_refused(done, *fragments):
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    assert all(fragment in lines[0] for fragment in fragments), lines[0]


@pytest.fixture(scope="module")
def outside(tmp_path_factory) -> Path:
    """An npz data set outside any project folder."""
    import numpy as np

    folder = tmp_path_factory.mktemp("outside")
    rng = np.random.default_rng(0)
    np.savez(folder / "data.npz", x=rng.normal(size=(40, 1, 8, 8)).astype(np.float32),
             y=np.arange(40) % 2)
    return folder


def test_a_params_path_climbing_out_of_the_project_is_refused(outside, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    relative = os.path.relpath(outside / "data.npz", project)
    done = prepare(project, data={**NPZ, "path": relative}, model=SMALL_MODEL)
    assert_refused(done, f"data.path = '{relative}' is not allowed", "outside the project folder")
    assert not (project / "data").exists() and not (project / "teacher").exists()
    done = prepare(project, data={**NPZ, "path": str(outside / "data.npz")}, model=SMALL_MODEL)
    assert_refused(done, "data.path", "outside the project folder")


def test_a_symlinked_data_folder_pointing_outside_is_refused(outside, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "data_link").symlink_to(outside, target_is_directory=True)
    done = prepare(project, data={**NPZ, "path": "data_link/data.npz"}, model=SMALL_MODEL)
    assert_refused(done, "data.path = 'data_link/data.npz' is not allowed", str(outside.resolve()))
    assert not (project / "data").exists()


def test_a_link_inside_an_image_folder_pointing_outside_is_refused(outside, tmp_path):
    from examples.make_shapes import make_shapes

    project = tmp_path / "project"
    make_shapes(project / "shapes", per_class=3, size=8)
    (project / "shapes" / "circle" / "secret.png").symlink_to(outside / "data.npz")
    done = prepare(project, data={"source": "image_folder", "path": "shapes", "val_size": 2,
                                  "test_size": 2, "calibration_size": 1}, model=SMALL_MODEL)
    assert_refused(done, "data.path = 'shapes' is not allowed", "secret.png is a link")


def test_the_deployment_can_add_a_data_root(outside, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    done = prepare(project, env={"SLIMLINE_DATA_ROOTS": str(outside)},
                   data={**NPZ, "path": str(outside / "data.npz")}, model=SMALL_MODEL,
                   prepare={"train": {"epochs": 0}})
    assert done.returncode == 0, done.stderr[-3000:]
    assert (project / "teacher" / "model.onnx").is_file()


# --------------------------------------------------------------- model folders never run code

class _RunsACommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_hugging_face_folder_with_only_a_pickled_bin_is_refused_and_never_run(tmp_path):
    from tests.helpers.text import save_tiny_bert, sentences, write_jsonl

    rows = sentences(40)
    project = tmp_path / "project"
    model_dir = save_tiny_bert(project / "model", [row["text"] for row in rows], task="embedding")
    (model_dir / "model.safetensors").unlink()
    marker = tmp_path / "marker"
    with open(model_dir / "pytorch_model.bin", "wb") as handle:
        pickle.dump({"bert.embeddings.word_embeddings.weight": _RunsACommand(marker)}, handle)
    write_jsonl(rows, project / "texts.jsonl")
    done = prepare(
        project,
        data={
            "source": "text",
            "path": "texts.jsonl",
            "val_size": 8,
            "test_size": 8,
            "calibration_size": 4,
            "text": {"label_column": None},
        },
        model={"source": "huggingface", "path": "model", "num_classes": 3},
    )
    assert_refused(done, "pickled pytorch_model.bin", "convert them to safetensors")
    assert "Warning" not in done.stderr and not marker.exists()


def test_efficientnet_lite_weights_that_would_run_code_are_refused_and_never_run(outside,
                                                                                 tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "data.npz").write_bytes((outside / "data.npz").read_bytes())
    marker = tmp_path / "marker"
    with open(project / "lite0.pth", "wb") as handle:
        pickle.dump({"_conv_stem.weight": _RunsACommand(marker)}, handle)
    done = prepare(project, data={**NPZ, "path": "data.npz"},
                   model={"architecture": "efficientnet_lite", "num_classes": 2,
                          "weights": "lite0.pth"})
    assert_refused(done, "lite0.pth", "weights_only=True")
    assert not marker.exists()
