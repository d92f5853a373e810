"""The local deployment's pieces that need no service (scripts/airflow.sh; the deployment itself
is tests/deployment): its settings, its owner-only credentials, how it recognises its processes,
what a failed `up` leaves, how `cli` shows a traceback.
"""
from __future__ import annotations

import json
import os
import socket
import stat

import psutil
import pytest

from slimline.errors import SlimlineError
from slimline.nightly import seaweed
from slimline.nightly.deployment import airflow_cli, control, credentials, settings
from slimline.nightly.deployment.hostname import worker_hostname
from slimline.nightly.deployment.processes import Processes


def _deployment(tmp_path, **env):
    return settings.from_env({"SLIMLINE_REPO": str(tmp_path), **env})


def test_the_deployment_lives_in_the_state_folder_and_reads_its_knobs(tmp_path):
    default = _deployment(tmp_path)
    assert default.folder == tmp_path / ".nightly" / "deployment"
    assert (default.workers, default.heartbeat_timeout) == (2, 120)
    assert default.worker_names == ["worker1", "worker2"]
    moved = _deployment(tmp_path, SLIMLINE_AIRFLOW_DIR=str(tmp_path / "elsewhere"),
                        SLIMLINE_AIRFLOW_WORKERS="3", SLIMLINE_AIRFLOW_HEARTBEAT_TIMEOUT="45")
    assert moved.folder == tmp_path / "elsewhere" and moved.worker_names[-1] == "worker3"
    with pytest.raises(SlimlineError, match="SLIMLINE_AIRFLOW_WORKERS = 'two' is not a positive"):
        _deployment(tmp_path, SLIMLINE_AIRFLOW_WORKERS="two")


def test_ports_come_from_the_environment_zero_picks_a_free_one_and_they_are_kept(tmp_path):
    deployment = _deployment(tmp_path)
    ports = settings.choose_ports(deployment, {"SLIMLINE_AIRFLOW_PORT": "0",
                                               "SLIMLINE_AIRFLOW_PG_PORT": "15999"})
    assert ports["api"] not in (0, 8080) and ports["postgres"] == 15999
    assert ports["redis"] == settings.DEFAULT_PORTS["redis"]
    assert settings.saved_ports(deployment) == ports
    with pytest.raises(SlimlineError, match="SLIMLINE_AIRFLOW_PORT = '80a' is not a port"):
        settings.choose_ports(deployment, {"SLIMLINE_AIRFLOW_PORT": "80a"})


def test_credentials_are_generated_once_into_owner_only_files(tmp_path):
    deployment = _deployment(tmp_path)
    first = credentials.ensure(deployment)
    again = credentials.ensure(deployment)
    assert first.keys == again.keys and set(first.keys) == set(credentials.KEYS)
    assert len(set(first.keys.values())) == len(credentials.KEYS)
    assert first.admin_password == json.loads(first.passwords_file.read_text())["admin"]
    assert stat.S_IMODE(deployment.secrets_dir.stat().st_mode) == 0o700
    for path in deployment.secrets_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_a_recorded_pid_that_now_belongs_to_another_process_is_never_taken_for_ours(tmp_path):
    processes = Processes(tmp_path)
    processes.record("api-server", os.getpid())
    assert processes.running("api-server") == os.getpid()
    reused = {"pid": os.getpid(), "started": psutil.Process().create_time() - 100}
    (processes.pids_dir / "api-server.json").write_text(json.dumps(reused))
    assert processes.running("api-server") is None
    assert processes.session("api-server") == []
    assert processes.stop("api-server", grace=1) is None
    assert not (processes.pids_dir / "api-server.json").exists()


def test_each_worker_reports_its_own_name_as_the_task_hostname(monkeypatch):
    monkeypatch.setenv("AIRFLOW_WORKER_HOSTNAME", "worker2")
    assert worker_hostname() == "worker2"
    monkeypatch.delenv("AIRFLOW_WORKER_HOSTNAME")
    assert worker_hostname()  # elsewhere: the machine's name, as Airflow's default


def test_a_stage_command_never_sees_the_deployments_database_broker_or_keys(tmp_path, monkeypatch):
    from slimline.nightly.runner import Job, LocalRunner

    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql+psycopg2://a:pw@h/db")
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "signing-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "inherited")
    job = Job("prune", ["slimline.nightly.step", "prune"], tmp_path,
              env={"AWS_SECRET_ACCESS_KEY": "the job's own"})
    env = LocalRunner().environment(job)
    assert not [key for key in env if key.startswith("AIRFLOW__")]
    assert env["AWS_SECRET_ACCESS_KEY"] == "the job's own"


def test_a_failed_command_shows_only_the_final_line_of_its_traceback():
    traceback = ["Traceback (most recent call last):\n", '  File "cli.py", line 1, in main\n',
                 "    trigger()\n", "           ^^^^\n",
                 "airflow.exceptions.ParamValidationError: conf key 'target' is not accepted\n",
                 "\n", "Failed validating 'type' in schema:\n", "    {'type': 'object'}\n"]
    for failed, expected in ((True, [traceback[4]]), (False, traceback)):
        written = []
        airflow_cli.filter_stderr(["a log line\n", *traceback], written.append,
                                  lambda failed=failed: failed)
        assert written == ["a log line\n", *expected]


def test_a_taken_s3_port_is_refused_naming_the_variable_that_moves_it():
    with socket.socket() as holder:
        holder.bind((seaweed.HOST, 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(SlimlineError, match=f"port {port} .* choose another with "
                                                "SLIMLINE_S3_PORT"):
            seaweed.check_port(port)
    seaweed.check_port(0)  # any free one


def test_a_failed_up_stops_what_it_started_and_names_what_ran_before(tmp_path, monkeypatch):
    deployment = _deployment(tmp_path)
    processes = Processes(deployment.folder)
    sleep = ["sleep", "60"]
    before = processes.start("worker2", sleep, dict(os.environ))

    def start_then_fail(deployment):
        processes.start("worker1", sleep, dict(os.environ))
        raise SlimlineError("worker1 exited while starting")

    monkeypatch.setattr(control, "_start_missing", start_then_fail)
    with pytest.raises(SlimlineError):
        control.up(deployment)
    assert processes.running("worker1") is None and processes.running("worker2") == before
    assert control.after_failed_up(deployment) == (
        "still running, as before this up: worker2 (`bash scripts/airflow.sh down` stops them)")
    processes.stop("worker2", grace=5)
    assert control.after_failed_up(deployment) == "nothing of the deployment runs"


READ_ONLY = {"SLIMLINE_S3_ENDPOINT": "http://127.0.0.1:8333", "SLIMLINE_S3_BUCKET": "slimline",
             "AWS_ACCESS_KEY_ID": "read-only-id", "AWS_SECRET_ACCESS_KEY": "read-only-secret"}


def test_up_restarts_a_worker_in_the_recorded_environment_not_the_callers(tmp_path):
    from slimline.nightly.deployment import environment

    deployment = _deployment(tmp_path)
    environment.record(deployment, {"PATH": "/usr/bin", "SLIMLINE_RETRIES": "2"})
    said = []
    # The shell that fetched a model: its read-only keys, another retry count.
    env = environment.restore(deployment, {"PATH": "/usr/bin", "SLIMLINE_RETRIES": "9",
                                           **READ_ONLY}, said.append)
    assert env == {"PATH": "/usr/bin", "SLIMLINE_RETRIES": "2"}
    assert len(said) == 1 and "ignoring this shell's AWS_ACCESS_KEY_ID" in said[0]
    assert "read-only" not in (deployment.secrets_dir / environment.RECORD).read_text()
    assert stat.S_IMODE((deployment.secrets_dir / environment.RECORD).stat().st_mode) == 0o600


def test_a_deployment_on_its_own_storage_refuses_a_shell_with_other_keys(tmp_path):
    from slimline.nightly.deployment import environment

    deployment = _deployment(tmp_path)
    own = {**READ_ONLY, "AWS_ACCESS_KEY_ID": "writer", "AWS_SECRET_ACCESS_KEY": "writer-secret"}
    environment.record(deployment, {"PATH": "/usr/bin", **own})
    assert "writer-secret" not in (deployment.secrets_dir / environment.RECORD).read_text()
    assert environment.restore(deployment, {"PATH": "/bin", **own}, print) == {
        "PATH": "/usr/bin", **own}
    with pytest.raises(SlimlineError, match="^this shell's storage settings .* are not the ones "
                                            "the running deployment started with; run up"):
        environment.restore(deployment, {"PATH": "/usr/bin", **READ_ONLY}, print)
