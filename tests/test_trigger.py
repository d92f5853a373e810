"""Whoever triggers a run is not trusted: a conf that names code, a file, a data source or a
profile outside profiles/ is refused before any work, through every door (the check itself, the
DAG's setup task, `airflow dags test`, scripts/nightly.sh); params.yaml's own paths stay inside
the project; a model folder never gets to run code. See docs/reliability.md, "Threat model"."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from slimline.errors import SlimlineError
from slimline.nightly.overrides import refusals, trigger_schema
from slimline.nightly.trigger import params_with_overrides
from slimline.nightly.workspace import resolve_revision
from tests.conftest import ROOT, reduced_params
from tests.test_dag import airflow_python

# Each would run `touch <marker>` if it ever reached the code it names.
PAYLOAD = "touch {marker}"
REFUSED = {
    "code": ({"model.factory": "os:system", "model.factory_args": {"command": PAYLOAD}},
             "model.factory is refused: it names code"),
    "code, nested": ({"data": {"factory": "os:system", "factory_args": {"command": PAYLOAD}}},
                     "data.factory is refused: it names code"),
    "path": ({"data.path": "/etc"}, "data.path is refused: it names a file"),
    "model file": ({"model": {"onnx": "../../elsewhere/model.onnx"}}, "model.onnx is refused"),
    "source switch": ({"data.source": "npz"}, "data.source is refused: it switches where"),
    "traversing target": ({"target": "../../tmp/evil"}, "target = '../../tmp/evil' is refused"),
    "unknown target": ({"target": "no_such_device"}, "no such profile in profiles/"),
}


def refused(name: str, marker: Path) -> dict:
    overrides, _ = REFUSED[name]
    return json.loads(json.dumps(overrides).replace("{marker}", str(marker)))


@pytest.fixture(scope="module")
def head() -> str:
    return resolve_revision(ROOT)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_the_check_refuses_each_class_in_one_line_naming_the_key(name, head, tmp_path):
    with pytest.raises(SlimlineError) as refusal:
        params_with_overrides(ROOT, head, refused(name, tmp_path / "marker"))
    message = str(refusal.value)
    assert message.startswith("run overrides: ") and "\n" not in message
    assert REFUSED[name][1] in message
    assert not (tmp_path / "marker").exists()


def test_technique_knobs_and_a_real_profile_are_allowed(head):
    params = params_with_overrides(ROOT, head, {"prune.keep_ratio": 0.3, "target": "phone",
                                                "model.widths": [8, 16, 32],
                                                "decompose": {"exclude": ["fc"]}})
    assert params["prune"]["keep_ratio"] == 0.3 and params["target"] == "phone"


def test_every_free_form_string_of_the_schema_is_refused_by_default():
    """A key added to the schema later is refused unless it is a number, flag or choice."""
    policy = refusals()
    for key in ("data.path", "model.path", "model.onnx", "model.weights", "data.text.pairs",
                "data.factory", "model.factory", "data.factory_args", "model.factory_args",
                "data.source", "model.source", "data.text.text_column", "data.inputs"):
        assert policy[key] is not None, key
    assert policy["prune.keep_ratio"] is None and policy["quantize.scheme"] is None
    schema = trigger_schema(["phone"], allow=[])
    assert "model.factory" not in schema["properties"]
    assert "factory" not in schema["properties"]["model"]["properties"]
    assert schema["properties"]["target"]["enum"] == ["phone", None]


def test_the_deployment_widens_the_list_never_the_conf(head, monkeypatch):
    with pytest.raises(SlimlineError, match="data.text.text_column is refused"):
        params_with_overrides(ROOT, head, {"data.text.text_column": "body"})
    monkeypatch.setenv("SLIMLINE_OVERRIDES_ALLOW", "data.text.*")
    params = params_with_overrides(ROOT, head, {"data.text.text_column": "body"})
    assert params["data"]["text"]["text_column"] == "body"
    assert "data.text.text_column" in trigger_schema([])["properties"]


SETUP_EACH = r"""
import json, sys
from airflow.sdk.exceptions import AirflowFailException
from slimline.nightly import tasks
results = []
for conf, for_search in json.loads(sys.argv[2]):
    try:
        tasks.setup_workspace(project=sys.argv[1], for_search=for_search, run_id="manual__bad",
                              params=conf)
        results.append("ACCEPTED")
    except AirflowFailException as exc:
        results.append("FAILED: " + str(exc))
print(json.dumps(results))
"""


def test_the_dags_setup_task_refuses_every_class_before_any_work(tmp_path):
    """setup_workspace as Airflow calls it: the REST API can bypass the trigger form's schema."""
    marker = tmp_path / "marker"
    confs = [({"overrides": refused(name, marker)}, False) for name in sorted(REFUSED)]
    search = {"minutes": 1, "max_trials": 1, "overrides": {}}
    confs += [({**search, "target": "../profiles/phone"}, True),
              ({**search, "target": "phone", "write_profile": "../../evil"}, True)]
    state = tmp_path / "state"
    done = airflow_python(SETUP_EACH, tmp_path, str(ROOT), json.dumps(confs),
                          SLIMLINE_STATE_DIR=str(state), SLIMLINE_S3_BUCKET="unused")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    expected = [REFUSED[name][1] for name in sorted(REFUSED)]
    expected += ["target = '../profiles/phone' is refused", "write_profile = '../../evil' is refused"]
    for result, fragment in zip(results, expected, strict=True):
        assert result.startswith("FAILED: run overrides: ") and fragment in result, result
    assert not (state / "workspaces").exists() and not marker.exists()


def test_airflow_dags_test_refuses_a_code_naming_conf_before_any_stage(tmp_path):
    marker = tmp_path / "marker"
    home = tmp_path / "airflow"
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("AIRFLOW", "SLIMLINE_", "AWS_"))}
    env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"), SLIMLINE_STATE_DIR=str(tmp_path / "state"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}")
    subprocess.run(["airflow", "db", "migrate"], env=env, capture_output=True, check=True, timeout=300)
    conf = {"overrides": refused("code", marker)}
    done = subprocess.run(["airflow", "dags", "test", "slimline_nightly", "--conf", json.dumps(conf)],
                          env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "model.factory" in output and "Invalid input for param overrides" in output
    assert "stage prepare started" not in output and "setup_workspace" not in output
    assert not marker.exists() and not (tmp_path / "state" / "workspaces").exists()


def test_nightly_sh_refuses_in_one_line_with_exit_2(tmp_path):
    marker = tmp_path / "marker"
    for name in ("code", "traversing target"):
        done = subprocess.run(["bash", "scripts/nightly.sh", json.dumps(refused(name, marker))],
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert done.returncode == 2, done.stdout + done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and REFUSED[name][1] in lines[0], done.stderr
        assert "airflow" not in done.stdout
    assert not marker.exists()


# --------------------------------------------------------------- params.yaml's paths (trusted)

def prepare(folder: Path, env: dict | None = None, **sections) -> subprocess.CompletedProcess:
    params = folder / "params.yaml"
    params.write_text(yaml.safe_dump(reduced_params(**sections)))
    return subprocess.run([sys.executable, "-m", "stages.prepare", "--params", str(params),
                           "--data", str(folder / "data"), "--teacher", str(folder / "teacher"),
                           "--metrics", str(folder / "prepare.json")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


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


NPZ = {"source": "npz", "val_size": 8, "test_size": 8, "calibration_size": 4}
SMALL_MODEL = {"widths": [4, 4, 4], "num_classes": 2}


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
    from tests.text_helpers import save_tiny_bert, sentences, write_jsonl

    rows = sentences(40)
    project = tmp_path / "project"
    model_dir = save_tiny_bert(project / "model", [row["text"] for row in rows], task="embedding")
    (model_dir / "model.safetensors").unlink()
    marker = tmp_path / "marker"
    with open(model_dir / "pytorch_model.bin", "wb") as handle:
        pickle.dump({"bert.embeddings.word_embeddings.weight": _RunsACommand(marker)}, handle)
    write_jsonl(rows, project / "texts.jsonl")
    done = prepare(project, data={"source": "text", "path": "texts.jsonl", "val_size": 8, "test_size": 8,
                                  "calibration_size": 4, "text": {"label_column": None}},
                   model={"source": "huggingface", "path": "model", "num_classes": 3})
    assert_refused(done, "pickled pytorch_model.bin", "convert them to safetensors")
    assert "Warning" not in done.stderr and not marker.exists()


def test_library_warnings_go_to_the_stage_log_not_stderr(tmp_path, capsys):
    """The stage contract: stderr holds the one-line error only; a warning is in the log."""
    from slimline.stage import run_stage

    def main(args, params, log):
        warnings.warn("a library's multi-line\nwarning", UserWarning)
        raise SlimlineError("the one line")

    (tmp_path / "params.yaml").write_text("seed: 0\n")
    log = tmp_path / "stage.log"
    with pytest.raises(SystemExit) as exit:
        run_stage("demo", main, lambda parser: None,
                  ["--params", str(tmp_path / "params.yaml"), "--log", str(log)])
    captured = capsys.readouterr()
    assert exit.value.code == 2
    assert captured.err == "slimline demo: error: the one line\n"
    assert "a library's multi-line" in log.read_text()
