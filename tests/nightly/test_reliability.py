"""Faults a real night meets, on the real line and a real SeaweedFS: the storage killed mid-run or
refusing connections, wrong or missing credentials, a run.conf of the wrong type; and the secret
of a run appearing nowhere it should not.

This module has its own server, project and Airflow database (tests/nightly_helpers.py), so it
may kill its storage without disturbing another module. Nights here run a micro configuration.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import threading
import time
from pathlib import Path

import pytest

from slimline.errors import SlimlineError
from slimline.nightly import seaweed
from slimline.nightly.storage import S3Settings, check_access
from tests.helpers.nightly import (
    MICRO,
    airflow_python,
    git,
    kill_storage,
    nightly_tip,
    publish_direct,
    pull_in_fresh_clone,
    restart_storage,
    run_dag,
    run_night_direct,
    succeeded,
    tags,
    tree_digest,
)

CONN_ID = "slimline_s3"
IMPATIENT = {"SLIMLINE_S3_ATTEMPTS": "3", "SLIMLINE_S3_RETRY_DELAY_SECONDS": "1"}


def connection_env(settings: S3Settings) -> dict:
    """The storage as an Airflow connection (defined in the environment), no AWS_* variables."""
    conn = {"conn_type": "aws", "login": settings.access_key, "password": settings.secret_key,
            "extra": {"bucket": settings.bucket, "endpoint_url": settings.endpoint}}
    return {"SLIMLINE_S3_CONN_ID": CONN_ID, f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(conn)}


@pytest.fixture(scope="module")
def first_night(project, airflow_home, storage):
    """A published night through Airflow, its keys in an Airflow connection (not the
    environment)."""
    night = run_dag(project, airflow_home, None, "2026-03-01T02:00:00", MICRO,
                    storage_env=connection_env(storage.settings()))
    assert succeeded(night), night.output[-6000:]
    assert night.published["tag"] == "nightly/2026-03-01"
    return night


@pytest.fixture(scope="module")
def killed_night(first_night, project, storage):
    """The next night (keys from the environment): every stage done, then SeaweedFS is SIGKILLed
    just before publish, and stays down for all of publish's retries."""
    before = tags(project), nightly_tip(project)
    try:
        night = run_night_direct(
            project,
            storage.settings(),
            "direct__storage-killed",
            "2026-03-02",
            MICRO,
            IMPATIENT,
            before_publish=lambda _: kill_storage(storage),
        )
    finally:
        restart_storage(storage)
    return night, before


@pytest.mark.slow
def test_storage_killed_before_publish_fails_in_one_line_and_tags_nothing(killed_night, project):
    night, (tags_before, tip_before) = killed_night
    assert night.failed_task == "publish", night.text[-3000:]
    log = (night.run_dir / "logs" / "publish.log").read_text()
    # bounded exponential back-off, every retry logged: 1 s, then 2 s, then give up
    assert "(attempt 1/3: the storage endpoint cannot be reached); trying again in 1 s" in log
    assert "(attempt 2/3: the storage endpoint cannot be reached); trying again in 2 s" in log
    last = night.output[-1]
    assert last.startswith("slimline nightly: publish: dvc push to s3://"), last
    assert (
        "failed after 3 attempt(s) over 3 s of back-off: the storage endpoint cannot be reached"
        in last
    )
    assert last.endswith("nothing was committed or tagged")
    assert "Traceback" not in log
    assert not (night.run_dir / "published.json").exists()
    assert tags(project) == tags_before and nightly_tip(project) == tip_before


@pytest.mark.slow
def test_the_previous_night_survives_a_storage_crash_and_pulls_in_a_fresh_clone(
        killed_night, first_night, project, storage, tmp_path):
    clone = pull_in_fresh_clone(project, "nightly/2026-03-01", storage, tmp_path / "clone")
    workspace = first_night.workspace
    for folder in ("models/quantized", "models/teacher", "data/prepared", "reports"):
        assert tree_digest(clone / folder) == tree_digest(workspace / folder), folder


@pytest.mark.slow
def test_storage_back_within_the_retries_the_retried_publish_lands(killed_night, first_night,
                                                                   project, storage):
    """Airflow retries the failed publish; the storage is down for its first push and comes back
    while it waits to retry."""
    night, _ = killed_night
    log_file = night.run_dir / "logs" / "publish.log"
    earlier = len(log_file.read_text())
    kill_storage(storage)
    restarted = []

    def come_back_after_the_first_retry() -> None:
        deadline = time.monotonic() + 600
        while (
            "retry: dvc push" not in log_file.read_text()[earlier:] and time.monotonic() < deadline
        ):
            time.sleep(0.2)
        restarted.append(restart_storage(storage))

    comeback = threading.Thread(target=come_back_after_the_first_retry)
    comeback.start()
    try:
        landed = publish_direct(
            night,
            storage.settings(),
            {"SLIMLINE_S3_ATTEMPTS": "4", "SLIMLINE_S3_RETRY_DELAY_SECONDS": "5"},
        )
    finally:
        comeback.join()
    assert restarted, "SeaweedFS did not come back"
    log = log_file.read_text()[earlier:]
    assert landed, night.text[-3000:]
    assert "(attempt 1/4: the storage endpoint cannot be reached); trying again in 5 s" in log
    assert night.published["tag"] == "nightly/2026-03-02"
    assert night.published["previous"] == first_night.published["commit"]


@pytest.mark.slow
def test_a_refused_connection_during_a_stage_is_retried_then_fails_in_one_line(first_night,
                                                                               project, storage):
    before = tags(project), nightly_tip(project)
    closed = f"http://127.0.0.1:{seaweed.free_port(set(), with_grpc=False)}"  # nothing listens
    settings = dataclasses.replace(storage.settings(), endpoint=closed)
    night = run_night_direct(project, settings, "direct__refused", "2026-03-03", MICRO,
                             {"SLIMLINE_S3_ATTEMPTS": "2", "SLIMLINE_S3_RETRY_DELAY_SECONDS": "1"})
    assert night.failed_task == "prepare", night.text[-3000:]
    assert (
        "(attempt 1/2: the storage endpoint cannot be reached); trying again in 1 s" in night.text
    )
    last = night.output[-1]
    assert last.startswith("slimline nightly: stage prepare: dvc "), last
    assert f"at {closed} failed after 2 attempt(s)" in last and "cannot be reached" in last
    assert (tags(project), nightly_tip(project)) == before


def test_a_crashed_servers_port_can_be_reused_at_once_but_a_live_one_cannot():
    """After a crash the server's connections linger in TIME_WAIT for a minute; the restart must
    not be refused for that (it was, before the port probe bound like the server does)."""
    import socket

    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Go's listeners (weed) do
    server.bind((seaweed.HOST, 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection((seaweed.HOST, port))
    accepted, _ = server.accept()
    assert not seaweed._port_is_free(port)  # someone listens: in use
    accepted.close()
    server.close()  # the server side closes first, as when its process dies: TIME_WAIT
    client.close()
    assert seaweed._port_is_free(port)


@pytest.mark.slow
@pytest.mark.parametrize("change, expected", [
    ({"secret_key": "wrong-secret-0123456789"}, "rejected the credentials (SignatureDoesNotMatch); "
                                                "fix AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
    ({"access_key": "NOBODY0123456789ABCD"}, "rejected the credentials (InvalidAccessKeyId)"),
    ({"secret_key": None}, "no credentials for s3://"),
    ({"secret_key": "wrong-secret-0123456789", "credentials_from": "the login and password of "
      "the Airflow connection 'slimline_s3'"}, "fix the login and password of the Airflow "
                                               "connection 'slimline_s3'"),
])
def test_credential_failures_name_the_setting_and_never_the_secret(storage, change, expected):
    settings = dataclasses.replace(storage.settings(), **change)
    with pytest.raises(SlimlineError) as error:
        check_access(settings)
    message = str(error.value)
    assert expected in message and "\n" not in message
    if "secret_key" in change and change["secret_key"] is None:
        assert "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or SLIMLINE_S3_CONN_ID" in message
    for secret in (storage.settings().secret_key, change.get("secret_key")):
        assert not secret or secret not in message


@pytest.mark.slow
def test_an_undefined_or_wrong_airflow_connection_fails_setup_naming_it(storage, project, tmp_path):
    """setup_workspace as Airflow calls it: one line naming the connection, no retry, no
    workspace."""

    code = r"""
import sys
from types import SimpleNamespace
from airflow.sdk.exceptions import AirflowFailException
from slimline.nightly import tasks
try:
    tasks.setup_workspace(project=sys.argv[1], run_id="manual__conn",
                          dag=SimpleNamespace(params={"overrides": {}}), params={"overrides": {}})
except AirflowFailException as exc:
    print("FAILED:", exc)
"""
    state = tmp_path / "state"
    settings = storage.settings()
    wrong = connection_env(dataclasses.replace(settings, secret_key="wrong-secret-abcdef0123"))
    for env, expected in (
            ({"SLIMLINE_S3_CONN_ID": "nowhere"},
             "FAILED: storage: the Airflow connection 'nowhere' (named by SLIMLINE_S3_CONN_ID) is "
             "not defined"),
            (wrong, "FAILED: storage: cannot use s3://nightly-test/slimline at "
                    f"{settings.endpoint}: the storage rejected the credentials "
                    "(SignatureDoesNotMatch); fix the login and password of the Airflow "
                    "connection 'slimline_s3'")):
        done = airflow_python(code, tmp_path, str(project), SLIMLINE_STATE_DIR=str(state), **env)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.strip() == expected
        assert "wrong-secret-abcdef0123" not in done.stdout + done.stderr
    assert not (state / "workspaces").exists()


# Bad run.conf through the real `airflow dags test`: one line, before any stage.

@pytest.mark.slow
def test_a_run_conf_value_of_the_wrong_type_stops_the_run_before_any_stage(project, airflow_home,
                                                                          storage):
    before = tags(project), nightly_tip(project)
    night = run_dag(project, airflow_home, storage.settings(), "2026-03-05T02:00:00",
                    {"evaluate.latency_runs": "fast"})
    assert not succeeded(night)
    # The cluster policy refuses the run as it is created, in one line (setup_workspace's own
    # check, for an Airflow without the policy, is tests/nightly/test_dag.py's).
    assert ("ParamValidationError: run overrides: evaluate.latency_runs = 'fast' is not allowed"
            in night.output)
    assert not night.workspace.exists()
    assert not (night.run_dir / "logs" / "prepare.log").exists()
    assert (tags(project), nightly_tip(project)) == before


# Secrets: run last in this module, after nights with keys from the environment and from an
# Airflow connection; nothing the line wrote anywhere may hold the secret.

def _files_holding(root: Path, secret: bytes) -> list[str]:
    return [str(path) for path in root.rglob("*")
            if path.is_file() and not path.is_symlink() and secret in path.read_bytes()]


@pytest.mark.slow
def test_the_secret_appears_in_no_log_report_metric_lock_git_object_or_bucket_object(
        first_night, killed_night, project, airflow_home, storage):
    settings = storage.settings()
    for secret in (settings.secret_key, settings.access_key):
        encoded = secret.encode()
        # Airflow's output and its whole home: task logs, the metadata database (XComs), config
        assert secret not in first_night.output
        assert _files_holding(airflow_home, encoded) == []
        # every workspace and run folder: logs, reports, metrics, dvc.lock, the DVC cache,
        # .dvc/config.local (the remote's URL and endpoint only) and the task logs
        assert _files_holding(project / ".nightly" / "workspaces", encoded) == []
        assert _files_holding(project / ".nightly" / "runs", encoded) == []
        # git: every blob of every commit on every ref, every commit and tag message
        revisions = git("rev-list", "--all", cwd=project).split()
        grep = subprocess.run(["git", "grep", "-F", "-l", secret, *revisions], cwd=project,
                              capture_output=True, text=True)
        assert grep.returncode == 1, grep.stdout[:2000]
        messages = git("log", "--all", "--format=%B", cwd=project) + git(
            "for-each-ref", "refs/tags", "--format=%(contents)", cwd=project)
        assert secret not in messages
        # the bucket: every object the nights pushed
        import boto3

        client = boto3.client("s3", endpoint_url=settings.endpoint, region_name="us-east-1",
                              aws_access_key_id=settings.access_key,
                              aws_secret_access_key=settings.secret_key)
        keys = [item["Key"] for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=settings.bucket) for item in page.get("Contents", [])]
        assert keys
        for key in keys:
            assert (
                encoded not in client.get_object(Bucket=settings.bucket, Key=key)["Body"].read()
            ), key
    # the storage's own credential files are the one place the keys live, owner-only
    assert (storage.env_file.stat().st_mode & 0o777) == 0o600
