"""Whoever triggers a run is not trusted: a conf that names code, a file, a data source or a
profile outside profiles/, or that puts a key anywhere but under "overrides", is refused before
any work through every door: the cluster policy before the run exists (`airflow dags test`; the
REST API and `airflow dags trigger` are tests/deployment's), the DAG's setup task (for an Airflow
without the policy) and scripts/nightly.sh. See docs/reliability.md, "Threat model"."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from slimline.nightly import policy
from tests.conftest import ROOT
from tests.helpers.nightly import airflow_python
from tests.unit.test_overrides import REFUSED, refused

SETUP_EACH = r"""
import json, runpy, sys
from airflow.sdk.exceptions import AirflowFailException
from slimline.nightly import tasks
dags = [runpy.run_path(f"{sys.argv[1]}/dags/{name}.py")["dag"]
        for name in ("slimline_nightly", "slimline_search")]
results = []
for conf, for_search in json.loads(sys.argv[2]):
    try:
        tasks.setup_workspace(project=sys.argv[1], for_search=for_search, run_id="manual__bad",
                              dag=dags[for_search], params=conf)
        results.append("ACCEPTED")
    except AirflowFailException as exc:
        results.append("FAILED: " + str(exc))
print(json.dumps(results))
"""


def test_the_dags_setup_task_refuses_every_class_before_any_work(tmp_path):
    """setup_workspace as Airflow calls it, for an Airflow that creates any run (no policy)."""
    marker = tmp_path / "marker"
    confs = [({"overrides": refused(name, marker)}, False) for name in sorted(REFUSED)]
    search = {"minutes": 1, "max_trials": 1, "overrides": {}}
    confs += [({**search, "target": "../profiles/phone"}, True),
              ({**search, "target": "phone", "write_profile": "../../evil"}, True),
              ({"overrides": {}, "model.factory": "os:system"}, False),
              ({**search, "target": "phone", "prune.keep_ratio": 0.5}, True)]
    state = tmp_path / "state"
    done = airflow_python(SETUP_EACH, tmp_path, str(ROOT), json.dumps(confs),
                          SLIMLINE_STATE_DIR=str(state), SLIMLINE_S3_BUCKET="unused")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    overrides, conf = "run overrides: ", "conf key "
    expected = [(overrides, REFUSED[name][1]) for name in sorted(REFUSED)] + [
        (overrides, "target = '../profiles/phone' is refused"),
        (overrides, "write_profile = '../../evil' is refused"),
        (conf, """'model.factory' is not accepted: put overrides under {"overrides": {...}}"""),
        (conf, "'prune.keep_ratio' is not accepted: the conf takes target, minutes, max_trials, "
               'write_profile and overrides; put overrides under {"overrides": {...}}'),
    ]
    for result, (prefix, fragment) in zip(results, expected, strict=True):
        assert result.startswith(f"FAILED: {prefix}") and fragment in result, result
    assert not (state / "workspaces").exists() and not marker.exists()


def test_airflow_dags_test_refuses_a_bad_conf_in_one_line_before_the_run_exists(tmp_path):
    """The cluster policy, in Airflow's own transaction that creates the run: a bare key, a
    code-naming override, a non-object, NaN and epochs beyond their bound each end `airflow dags
    test` with one line, before any task."""
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
    policy.install(home)
    subprocess.run(
        ["airflow", "db", "migrate"], env=env, capture_output=True, check=True, timeout=300
    )
    for conf, expected in (
            ({"model.factory": "os:system"}, "ParamValidationError: conf key 'model.factory' is "
                                             'not accepted: put overrides under {"overrides"'),
            ({"overrides": refused("code", marker)},
             f"ParamValidationError: run overrides: {REFUSED['code'][1]}"),
            # Airflow's own schema would print itself; the database would refuse NaN.
            ({"overrides": "prune.keep_ratio=0.3"},
             "ParamValidationError: run overrides: overrides must be a JSON object"),
            ({"overrides": {"prune.keep_ratio": float("nan")}},
             "ParamValidationError: conf.overrides.prune.keep_ratio = nan is refused"),
            ({"overrides": {"prepare.train.epochs": 100000000}},
             "ParamValidationError: run overrides: prepare.train.epochs = 100000000 is refused")):
        done = subprocess.run(
            ["airflow", "dags", "test", "slimline_nightly", "--conf", json.dumps(conf)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        output = done.stdout + done.stderr
        assert done.returncode != 0
        assert [line for line in output.splitlines() if expected in line], output[-3000:]
        assert "Invalid input for param" not in output  # no schema of Airflow's refused it
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



