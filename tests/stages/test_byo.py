"""Bring your own model and data, bad input: one clear line (exit 2) for each mistake a user can
make in a factory, weights, an image folder or an .npz file, and nothing written."""
import shutil
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from examples.make_shapes import make_shapes
from slimline.stage import EXIT_BAD_INPUT, stage_main
from tests.conftest import ROOT, reduced_params, run
from tests.line.test_byo import MOBILENET


def write_params(folder, **sections):
    params = folder / "params.yaml"
    params.write_text(yaml.safe_dump(reduced_params(**sections)))
    return ["--params", str(params), "--data", str(folder / "data"), "--teacher",
            str(folder / "teacher"), "--metrics", str(folder / "prepare.json")]


def prepare(folder, **sections):
    """The prepare stage as the pipeline runs it: its own process."""
    return run([sys.executable, "-m", "stages.prepare", *write_params(folder, **sections)], ROOT,
               check=False, timeout=300)


def prepare_here(folder, capsys, **sections):
    """The same stage contract in this process (no second torch import): (exit code, stderr)."""
    from stages.prepare import add_arguments, main

    with pytest.raises(SystemExit) as exit:
        stage_main("prepare", main, add_arguments, write_params(folder, **sections))
    return SimpleNamespace(returncode=exit.value.code, stderr=capsys.readouterr().err)


def assert_one_line(result, *expected):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == EXIT_BAD_INPUT, result.stderr[-2000:]
    assert len(lines) == 1 and all(text in lines[0] for text in expected), result.stderr


@pytest.fixture(scope="module")
def few_shapes(tmp_path_factory):
    return make_shapes(tmp_path_factory.mktemp("few") / "shapes", per_class=6, size=16)


@pytest.fixture(autouse=True)
def shared_data_root(few_shapes, monkeypatch):
    """The module's shared image folder lies outside each test's project folder: a data root the
    deployment allows (SLIMLINE_DATA_ROOTS; params.yaml's paths stay inside the project else)."""
    monkeypatch.setenv("SLIMLINE_DATA_ROOTS", str(few_shapes.parent))


SMALL = {"val_size": 4, "test_size": 4, "calibration_size": 2}


def test_factory_that_does_not_import_or_has_no_such_function(few_shapes, tmp_path, capsys):
    data = {"source": "image_folder", "path": str(few_shapes), **SMALL}
    result = prepare_here(tmp_path, capsys, data=data,
                          model={**MOBILENET, "factory": "no_such_package.nets:build"})
    assert_one_line(result, "model.factory = 'no_such_package.nets:build'", "cannot import")
    result = prepare_here(tmp_path, capsys, data=data,
                          model={**MOBILENET, "factory": "examples.mobilenet_factory:nope"})
    assert_one_line(result, "model.factory", "has no function 'nope'")


def test_weights_that_do_not_match_the_architecture(few_shapes, tmp_path, capsys):
    from examples.mobilenet_factory import build

    wider = build(num_classes=4, widths=[8, 24], blocks_per_stage=1, expansion=2)
    torch.save(wider.state_dict(), tmp_path / "wider.pt")
    data = {"source": "image_folder", "path": str(few_shapes), **SMALL}
    result = prepare_here(tmp_path, capsys, data=data,
                          model={**MOBILENET, "weights": str(tmp_path / "wider.pt")})
    assert_one_line(result, "model.weights", "wider.pt", "do not match",
                    "wrong shape layers.1.block.6.weight [24, 16, 1, 1] vs [16, 16, 1, 1]")
    assert not (tmp_path / "teacher").exists()


def test_image_folder_with_one_class_or_an_unreadable_image(few_shapes, tmp_path, capsys):
    one_class = tmp_path / "one"
    shutil.copytree(few_shapes / "circle", one_class / "circle")
    result = prepare_here(tmp_path, capsys, model=MOBILENET,
                          data={"source": "image_folder", "path": str(one_class), **SMALL})
    assert_one_line(result, str(one_class), "1 class folder", "circle")

    broken = tmp_path / "broken"
    shutil.copytree(few_shapes, broken)
    (broken / "square" / "square_0003.png").write_bytes(b"not a png at all")
    result = prepare_here(tmp_path, capsys, model=MOBILENET,
                          data={"source": "image_folder", "path": str(broken), **SMALL})
    assert_one_line(result, "square_0003.png", "unreadable image")
    assert not (tmp_path / "data").exists()


def test_npz_without_the_declared_key(tmp_path):
    np.savez(
        tmp_path / "arrays.npz",
        images=np.zeros((20, 1, 8, 8), np.float32),
        y=np.zeros(20, np.int64),
    )
    result = prepare(
        tmp_path, data={"source": "npz", "path": str(tmp_path / "arrays.npz"), **SMALL}
    )
    assert_one_line(result, "arrays.npz", "no array 'x' (data.inputs)", "images")
