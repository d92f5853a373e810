"""Whoever triggers a run is not trusted: a conf that names code, a file, a data source or a
profile outside profiles/ is refused before any work through every door: the DAG's setup task
(the REST API can bypass the form), `airflow dags test` (the params' JSON schema) and
scripts/nightly.sh. See docs/reliability.md, "Threat model"."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.helpers.nightly import airflow_python
from tests.unit.test_overrides import REFUSED, refused

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
    expected += [
        "target = '../profiles/phone' is refused",
        "write_profile = '../../evil' is refused",
    ]
    for result, fragment in zip(results, expected, strict=True):
        assert result.startswith("FAILED: run overrides: ") and fragment in result, result
    assert not (state / "workspaces").exists() and not marker.exists()


def test_airflow_dags_test_refuses_a_code_naming_conf_before_any_stage(tmp_path):
    marker = tmp_path / "marker"
    home = tmp_path / "airflow"
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("AIRFLOW", "SLIMLINE_", "AWS_"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
        SLIMLINE_STATE_DIR=str(tmp_path / "state"),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
    )
    subprocess.run(
        ["airflow", "db", "migrate"], env=env, capture_output=True, check=True, timeout=300
    )
    conf = {"overrides": refused("code", marker)}
    done = subprocess.run(
        ["airflow", "dags", "test", "slimline_nightly", "--conf", json.dumps(conf)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
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



