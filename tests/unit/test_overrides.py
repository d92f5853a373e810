"""A run's trigger input is an allow-list of technique knobs: a conf that names code, a file, a
data source or a profile outside profiles/, or sets a key outside "overrides", is refused in one
line naming the key (the check itself; the doors that call it are tests/nightly/test_trigger.py
and tests/deployment). docs/reliability.md, "Threat model"."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from slimline.errors import SlimlineError
from slimline.nightly import policy
from slimline.nightly.bounds import BOUNDS_VARIABLE, deployment_bounds
from slimline.nightly.overrides import merge_overrides, normalise, refusals
from slimline.nightly.policy import check_run_conf
from slimline.nightly.trigger import check_conf_keys
from tests.conftest import ROOT

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
    # A knob that holds data in memory is bounded: a conf cannot ask for 1,000 copies.
    "memory": ({"distill.text_variants": 1000}, "distill.text_variants"),
}


def refused(name: str, marker: Path) -> dict:
    overrides, _ = REFUSED[name]
    return json.loads(json.dumps(overrides).replace("{marker}", str(marker)))


def checked(overrides: dict) -> dict:
    """The overrides merged into this checkout's params.yaml, allowed and validated."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    return merge_overrides(params, overrides, ROOT / "profiles")


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_the_check_refuses_each_class_in_one_line_naming_the_key(name, tmp_path):
    with pytest.raises(SlimlineError) as refusal:
        checked(refused(name, tmp_path / "marker"))
    message = str(refusal.value)
    assert message.startswith("run overrides: ") and "\n" not in message
    assert REFUSED[name][1] in message
    assert not (tmp_path / "marker").exists()


def test_technique_knobs_and_a_real_profile_are_allowed():
    params = checked({"prune.keep_ratio": 0.3, "target": "phone", "model.widths": [8, 16, 32],
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


def test_the_deployment_widens_the_list_never_the_conf(monkeypatch):
    with pytest.raises(SlimlineError, match="data.text.text_column is refused"):
        checked({"data.text.text_column": "body"})
    monkeypatch.setenv("SLIMLINE_OVERRIDES_ALLOW", "data.text.*")
    params = checked({"data.text.text_column": "body"})
    assert params["data"]["text"]["text_column"] == "body"


def test_a_conf_takes_the_dags_params_only_and_says_where_overrides_go():
    check_conf_keys({"overrides": {"prune.keep_ratio": 0.5}}, ["overrides"])
    with pytest.raises(SlimlineError) as bare:
        check_conf_keys({"prune.keep_ratio": 0.5}, ["overrides"])
    assert str(bare.value) == ("conf key 'prune.keep_ratio' is not accepted: put overrides under "
                               '{"overrides": {...}}')
    with pytest.raises(SlimlineError, match="'minute' is not accepted: the conf takes target, "
                                            "minutes and overrides; put overrides under"):
        check_conf_keys({"target": "phone", "minute": 5}, ["target", "minutes", "overrides"])


def test_the_policy_checks_keys_then_overrides_against_the_committed_revision():
    nightly = ["overrides"]
    check_run_conf({}, nightly, ROOT)
    check_run_conf({"overrides": {"prune.keep_ratio": 0.5}}, nightly, ROOT)
    with pytest.raises(SlimlineError, match="conf key 'target' is not accepted"):
        check_run_conf({"target": "../../etc"}, nightly, ROOT)
    with pytest.raises(SlimlineError, match="run overrides: model.factory is refused"):
        check_run_conf({"overrides": {"model.factory": "os:system"}}, nightly, ROOT)


def test_the_policy_is_installed_once_and_never_over_a_deployments_own_settings(tmp_path):
    path = policy.install(tmp_path)
    assert path == tmp_path / "config" / "airflow_local_settings.py"
    assert policy.install(tmp_path).read_text() == policy.LOCAL_SETTINGS
    path.write_text("def dag_policy(dag):\n    pass\n")
    with pytest.raises(SlimlineError, match="exists: add this line to it: from slimline"):
        policy.install(tmp_path)


# Each would tie up a worker or be read two ways; each is one line from the same check.
HOSTILE = {
    "epochs beyond the bound": ({"prepare.train.epochs": 100000000},
                                "prepare.train.epochs = 100000000 is refused: beyond its bound"),
    "a list beyond its length": ({"model.widths": [8] * 1000}, "model.widths has 1000 items"),
    "dotted and nested": ({"prune.keep_ratio": 0.3, "prune": {"keep_ratio": 0.9}},
                          "prune.keep_ratio is given twice"),
    "nested and dotted": ({"prune": {"keep_ratio": 0.9}, "prune.keep_ratio": 0.3},
                          "prune.keep_ratio is given twice"),
    "dotted inside nested": ({"prepare": {"train.epochs": 2}, "prepare.train": {"epochs": 3}},
                             "prepare.train.epochs is given twice"),
    "NaN": ({"prune.keep_ratio": float("nan")}, "prune.keep_ratio = nan is refused: a number"),
    "Infinity in a list": ({"data": {"preprocess": {"mean": [float("inf")]}}},
                           "data.preprocess.mean[0] = inf is refused"),
    "a string": ("prune.keep_ratio=0.3", "overrides must be a JSON object of params"),
    "a list": ([{"prune.keep_ratio": 0.3}], "overrides must be a JSON object of params"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_conf_is_refused_in_one_line_by_the_policy(name):
    overrides, fragment = HOSTILE[name]
    with pytest.raises(SlimlineError) as refusal:
        check_run_conf({"overrides": overrides}, ["overrides"], ROOT)
    message = str(refusal.value)
    assert message.startswith("run overrides: ") and "\n" not in message
    assert fragment in message


def test_the_value_checked_is_the_value_applied_whatever_the_key_order():
    """PostgreSQL hands the conf back with its keys reordered: one reading either way."""
    forms = [{"prune.keep_ratio": 0.3, "prune": {"enabled": True}},
             {"prune": {"enabled": True}, "prune.keep_ratio": 0.3}]
    assert normalise(forms[0]) == normalise(forms[1]) == {
        "prune": {"keep_ratio": 0.3, "enabled": True}}
    assert checked(forms[0])["prune"] == checked(forms[1])["prune"]


def test_every_knob_a_trigger_may_set_has_a_bound_the_deployment_can_change(monkeypatch):
    numbers, lengths = deployment_bounds({})
    assert list(numbers)[-1] == "*" and list(lengths)[-1] == "*"  # none is unbounded
    checked({"prepare.train.epochs": 100})
    monkeypatch.setenv(BOUNDS_VARIABLE, "prepare.train.epochs=4,items:model.widths=2")
    with pytest.raises(SlimlineError, match="prepare.train.epochs = 5 is refused: beyond its "
                                            "bound 4"):
        checked({"prepare": {"train": {"epochs": 5}}})
    with pytest.raises(SlimlineError, match="model.widths has 3 items, more than its bound 2"):
        checked({"model.widths": [8, 16, 32]})
    checked({"prepare.train.epochs": 4, "distill.train.epochs": 50})
    with pytest.raises(SlimlineError, match="minutes = 100000 is refused: beyond its bound"):
        check_run_conf({"target": "phone", "minutes": 100000}, ["target", "minutes", "overrides"],
                       ROOT)


def test_a_non_finite_number_never_reaches_the_database():
    from airflow.exceptions import ParamValidationError

    class DagRun:
        conf = {"overrides": {"prune.keep_ratio": float("nan")}}

    class Session:
        new = [DagRun()]

    with pytest.raises(ParamValidationError, match=r"^conf.overrides.prune.keep_ratio = nan is "
                                                   "refused: a number must be finite$"):
        policy.refuse_non_finite_confs(Session(), None, None)
