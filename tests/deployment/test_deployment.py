"""The nightly under a real Airflow deployment (`bash scripts/airflow.sh up`): PostgreSQL, Redis,
CeleryExecutor, the scheduler, dag-processor, api-server and two Celery workers, the embedded
SeaweedFS; nothing mocked. One deployment serves the module, and the tests follow a new user's
evening in order:

  up -> the UI's address, the password only in an owner-only file
  a trigger naming code is refused (REST API and `airflow dags trigger`), no run is made
  a conf key outside "overrides" is refused the same way, in one short line, for both DAGs
  `up` of a second deployment on a taken S3 port names SLIMLINE_S3_PORT and leaves nothing running
  the schedule fires by itself: the first night is the scheduler's, exactly one run
  a worker is SIGKILLed while that night trains: the task is retried on the other worker, the
    night publishes, the bucket holds nothing half-written
  a night triggered through the REST API with overrides; while it trains, only the main process
    of the worker running it is killed: nothing of that try is left or pushes, the retry runs on
    the other worker, `up` from a shell holding the read-only keys brings the worker back with the
    deployment's own; both workers, the prune stage's own log lines through the API, one record
    per line, the night tagged
  the same log in the UI, in headless Chromium (screenshot kept)
  down -> no process of the deployment is left
"""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import stat
import time
import urllib.parse
from pathlib import Path

import psutil
import pytest

from slimline.nightly.audit import audit_remote
from slimline.nightly.deployment.processes import Processes
from slimline.nightly.seaweed import read_env_file
from slimline.nightly.workspace import run_key
from tests.helpers.deployment import (
    DAG_ID,
    HEARTBEAT_TIMEOUT_SECONDS,
    airflow_sh,
    deployment_processes,
    still_running,
)
from tests.helpers.nightly import ROOT, git, tags

pytestmark = pytest.mark.slow

TRAINING = "teacher: "                  # prepare names the teacher, then trains it
TRAINED = "teacher ready in"            # ... and its line once training is over
PRUNE_SUMMARY = "ONNX Runtime (batch 1, 1 thread, interleaved): p50"
PRUNE_FINISHED = "stage prune finished"
NIGHT_TIMEOUT = 1500
SCREENSHOTS = Path(os.environ.get("SLIMLINE_TEST_ARTIFACTS", ROOT / ".test-artifacts"))


def _running_command(processes: Processes, text: str) -> list[int]:
    found = []
    for pid in processes.marked():
        try:
            if text in " ".join(psutil.Process(pid).cmdline()):
                found.append(pid)
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.fixture(scope="module")
def scheduled_run(deployment) -> str:
    """The run the scheduler starts by itself when the schedule fires (no trigger at all)."""
    api = deployment.api()
    while not (runs := api.runs()):
        assert time.time() < deployment.tick.timestamp() + 300, (
            f"no run 300 s after the schedule's tick at {deployment.tick:%H:%M} UTC")
        time.sleep(2)
    return runs[0]["dag_run_id"]


def _training(api, run_id: str) -> dict:
    """prepare's task instance once its teacher is training."""
    deadline = time.monotonic() + NIGHT_TIMEOUT
    while True:
        prepare = api.task_instance(run_id, "prepare")
        if prepare["state"] == "running" and TRAINING in api.task_log(
                run_id, "prepare", prepare["try_number"]):
            return prepare
        assert prepare["state"] in (None, "scheduled", "queued", "running"), prepare
        assert time.monotonic() < deadline, "prepare never started training"
        time.sleep(1)


def _retry_running(api, run_id: str, first: dict, killed: float) -> dict:
    """prepare's next try once it runs, within ten heartbeat timeouts of the kill."""
    while True:
        retry = api.task_instance(run_id, "prepare")
        if retry["try_number"] > first["try_number"] and retry["state"] == "running":
            return retry
        assert time.monotonic() - killed < 10 * HEARTBEAT_TIMEOUT_SECONDS, retry
        time.sleep(1)


@pytest.fixture(scope="module")
def main_process_kill(deployment, scheduled_run) -> dict:
    """A night triggered through the REST API, overrides in its conf; while its teacher trains,
    SIGKILL to the main process of the worker running it, and no other (the pid `status` shows).
    What was left of that try, when the retry ran, and `up` from a shell with read-only keys."""
    api = deployment.api()
    api.wait_for_run(scheduled_run, NIGHT_TIMEOUT)  # one active run at a time
    started = time.monotonic()
    # Two epochs: the teacher trains again (with the first night's params it would be restored
    # from the run cache) and for long enough to be killed in the middle.
    run_id = api.trigger({"overrides": {"prune.keep_ratio": 0.6, "prepare.train.epochs": 2}})
    prepare = _training(api, run_id)
    victim = prepare["hostname"]
    processes = Processes(deployment.folder)
    main = processes.running(victim)
    the_try = {pid: psutil.Process(pid).create_time() for pid in processes.session(victim)}
    the_try.update({pid: psutil.Process(pid).create_time()
                    for pid in _running_command(processes, "prepare")})
    killed = time.monotonic()
    os.kill(main, signal.SIGKILL)
    while (left := [pid for pid, born in the_try.items() if _alive(pid, born)]) and (
            time.monotonic() - killed < 30):
        time.sleep(0.2)
    left = [" ".join(psutil.Process(pid).cmdline())[:100] for pid in left]
    gone_after = time.monotonic() - killed
    retry = _retry_running(api, run_id, prepare, killed)
    retried_after = time.monotonic() - killed
    # The shell of the docs' "fetch a night's model": the read-only keys exported.
    read_only = read_env_file(deployment.project / ".nightly" / "seaweedfs"
                              / "credentials-readonly.env")
    again = airflow_sh(["up"], {**deployment.env, **read_only})
    run = api.wait_for_run(run_id, NIGHT_TIMEOUT)
    print(f"\nREST night: {time.monotonic() - started:.0f} s from the trigger to {run['state']}; "
          f"{victim}'s main process killed while prepare trained: its try gone "
          f"{gone_after:.1f} s later, the retry running on {retry['hostname']} "
          f"{retried_after:.0f} s after the kill")
    return {"run": run, "victim": victim, "left": left, "gone_after": gone_after,
            "first": prepare, "retry": retry, "up": again,
            "first_log": api.task_log(run_id, "prepare", prepare["try_number"])}


@pytest.fixture(scope="module")
def rest_night(main_process_kill) -> dict:
    return main_process_kill["run"]


def _alive(pid: int, born: float) -> bool:
    try:
        process = psutil.Process(pid)
        return process.create_time() == born and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_up_prints_the_ui_address_and_keeps_the_password_in_an_owner_only_file(deployment):
    output = deployment.up.stdout + deployment.up.stderr
    print(f"\nup: {deployment.up_seconds:.0f} s (setup.sh included)")
    assert f"UI and REST API   {deployment.url}" in output
    assert str(deployment.passwords_file) in output
    assert stat.S_IMODE(deployment.passwords_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(deployment.passwords_file.parent.stat().st_mode) == 0o700
    keys = json.loads((deployment.folder / "secrets" / "keys.json").read_text())
    secrets = [deployment.password, *keys.values()]
    logs = [path for folder in ("output", "airflow-home") for path in
            (deployment.folder / folder).rglob("*") if path.is_file() and path.suffix == ".log"]
    assert logs
    for text in [output, *(path.read_text(errors="replace") for path in logs)]:
        assert not [secret for secret in secrets if secret in text]
    for name in ("postgres", "redis", "api-server", "scheduler", "dag-processor", "worker1",
                 "worker2"):
        assert f"{name}: " in output
    health = deployment.api().get("/monitor/health")
    for part in ("metadatabase", "scheduler", "dag_processor"):
        assert health[part]["status"] == "healthy", health


def _refusal_lines(cli, key: str) -> list[str]:
    """The lines of a refused `cli dags trigger` that name the refused key."""
    return [line for line in (cli.stdout + cli.stderr).splitlines() if key in line]


def test_a_trigger_naming_code_is_refused_by_the_rest_api_and_the_cli(deployment):
    """Whoever triggers is not trusted: the cluster policy refuses it before a run exists, in one
    line (Airflow's own schema refusal printed the whole schema, 40 KB)."""
    api = deployment.api()
    refused = api.post(f"/dags/{DAG_ID}/dagRuns", {
        "logical_date": None, "conf": {"overrides": {"model.factory": "os:system"}}})
    assert refused.status_code == 400, refused.text
    assert len(refused.content) < 500 and "model.factory is refused" in refused.text, refused.text
    # a night that would hold a worker for years, a knob read two ways, NaN, a string
    for body, said in (('{"prepare.train.epochs": 100000000}', "beyond its bound"),
                       ('{"prune.keep_ratio": 0.3, "prune": {"keep_ratio": 0.9}}', "given twice"),
                       ('{"prune.keep_ratio": NaN}', "a number must be finite"),
                       ('"prune.keep_ratio=0.3"', "overrides must be a JSON object")):
        refused = api.post_text(f"/dags/{DAG_ID}/dagRuns",
                                f'{{"logical_date": null, "conf": {{"overrides": {body}}}}}')
        assert refused.status_code == 400, refused.text
        assert len(refused.content) < 500 and said in refused.json()["detail"], refused.text
        assert "\n" not in refused.json()["detail"]
    cli = deployment.script("cli", "dags", "trigger", DAG_ID, "--conf",
                            json.dumps({"overrides": {"data.path": "/etc"}}), timeout=300)
    assert cli.returncode != 0
    assert len(_refusal_lines(cli, "data.path")) == 1, cli.stdout + cli.stderr
    assert "Traceback" not in cli.stderr
    assert all(run["run_type"] == "scheduled" for run in api.runs())


def test_a_conf_key_outside_overrides_is_refused_in_one_short_line_and_no_run_is_made(deployment):
    """The bare form scripts/nightly.sh takes, sent to Airflow: refused, not ignored (it ran a
    default night and published it)."""
    api = deployment.api()
    before = tags(deployment.project)
    for conf, key in (({"model.factory": "os:system"}, "model.factory"),
                      ({"target": "../../etc"}, "target")):
        refused = api.post(f"/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": conf})
        assert refused.status_code == 400, refused.text
        assert len(refused.content) < 500, refused.text
        detail = refused.json()["detail"]
        assert f"conf key '{key}' is not accepted" in detail and '{"overrides": {...}}' in detail
    cli = deployment.script("cli", "dags", "trigger", DAG_ID, "--conf",
                            json.dumps({"target": "../../etc"}), timeout=300)
    assert cli.returncode != 0
    lines = _refusal_lines(cli, "conf key 'target' is not accepted")
    assert len(lines) == 1 and '{"overrides": {...}}' in lines[0], cli.stdout + cli.stderr
    assert "Traceback" not in cli.stderr
    # slimline_search takes its own params, and overrides only under "overrides"
    search = api.post("/dags/slimline_search/dagRuns", {"logical_date": None, "conf": {
        "target": "phone", "prune.keep_ratio": 0.5}})
    assert search.status_code == 400 and "'prune.keep_ratio' is not accepted" in search.text
    assert api.get("/dags/slimline_search/dagRuns")["dag_runs"] == []
    assert all(run["run_type"] == "scheduled" for run in api.runs())
    assert tags(deployment.project) == before


def test_up_on_a_taken_s3_port_names_its_variable_and_leaves_nothing_running(deployment,
                                                                             tmp_path):
    """A second deployment beside the first, its S3 port held by another program: refused before
    anything starts."""
    folder = tmp_path / "deployment"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {**deployment.env, "SLIMLINE_STATE_DIR": str(tmp_path / "state"),
               "SLIMLINE_AIRFLOW_DIR": str(folder), "SLIMLINE_S3_PORT": str(port)}
        started = time.monotonic()
        up = airflow_sh(["up"], env, timeout=300)
    print(f"\nup on a taken port: {time.monotonic() - started:.0f} s to refuse")
    assert up.returncode != 0
    errors = up.stderr.strip().splitlines()
    assert f"port {port}" in errors[-2] and "choose another with SLIMLINE_S3_PORT" in errors[-2]
    assert errors[-1] == "deployment: nothing of the deployment runs", up.stderr
    assert still_running({}, folder) == []
    assert not (tmp_path / "state" / "seaweedfs" / "data").exists()


def test_the_schedule_starts_exactly_one_run_by_itself(deployment, scheduled_run):
    api = deployment.api()
    runs = api.runs()
    assert [run["dag_run_id"] for run in runs] == [scheduled_run]
    run = runs[0]
    assert run["run_type"] == "scheduled"
    assert run["run_after"].startswith(deployment.tick.strftime("%Y-%m-%dT%H:%M:00"))
    queued = dt.datetime.fromisoformat(run["queued_at"].replace("Z", "+00:00"))
    assert queued >= deployment.tick  # started by the tick, not before it
    dag = api.get(f"/dags/{DAG_ID}/details")
    assert dag["max_active_runs"] == 1 and not dag["is_paused"]
    print(f"\nschedule: tick {deployment.tick:%H:%M:%S} UTC, run queued at {run['queued_at']}")


def test_a_worker_killed_while_training_is_replaced_by_a_retry_on_the_other_worker(
        deployment, scheduled_run):
    api = deployment.api()
    prepare = _training(api, scheduled_run)
    victim = prepare["hostname"]
    processes = Processes(deployment.folder)
    doomed = {pid: psutil.Process(pid).create_time() for pid in processes.session(victim)}
    steps = _running_command(processes, "stages.prepare")
    assert steps, "the prepare stage's process was not found"
    killed = time.monotonic()
    for pid in doomed:  # the whole worker at once, as when its machine dies
        os.kill(pid, signal.SIGKILL)

    retry = _retry_running(api, scheduled_run, prepare, killed)
    delay = time.monotonic() - killed
    assert retry["hostname"] != victim
    first = api.task_log(scheduled_run, "prepare", prepare["try_number"])
    assert TRAINING in first and TRAINED not in first  # killed in the middle of training
    for pid in [*doomed, *steps]:  # nothing of the killed try runs on beside its retry
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

    again = deployment.script("up")  # brings back only what is missing: the killed worker
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"{victim}: ready" in again.stdout and "scheduler: ready" not in again.stdout

    run = api.wait_for_run(scheduled_run, NIGHT_TIMEOUT)
    assert run["state"] == "success"
    published = json.loads((deployment.project / ".nightly" / "runs" / run_key(scheduled_run)
                            / "published.json").read_text())
    assert published["tag"] in tags(deployment.project)
    audit = audit_remote(deployment.project, deployment.storage(), "nightly/*")
    assert audit.clean, (audit.summary(), audit.missing, audit.orphans, audit.strays)
    print(f"\nkill: {victim} SIGKILLed while prepare trained; try {retry['try_number']} running on "
          f"{retry['hostname']} {delay:.0f} s later; {published['tag']} published; "
          f"{audit.summary()}")


def test_killing_only_a_workers_main_process_ends_its_try_and_the_night_publishes(
        deployment, main_process_kill):
    kill = main_process_kill
    assert kill["left"] == [], f"left of the killed try after {kill['gone_after']:.0f} s"
    assert kill["retry"]["hostname"] != kill["victim"]
    assert TRAINED not in kill["first_log"]            # killed in the middle of training
    assert "$ dvc push" not in kill["first_log"]       # and it pushed nothing
    up = kill["up"]
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    assert f"{kill['victim']}: ready" in up.stdout
    assert "ignoring this shell's AWS_ACCESS_KEY_ID" in up.stdout
    assert kill["run"]["state"] == "success"
    # every task after prepare pushed at its first try, on whichever worker: no read-only keys
    tries = {task: ti["try_number"] for task, ti in deployment.api().task_instances(
        kill["run"]["dag_run_id"]).items()}
    assert {task: count for task, count in tries.items() if task != "prepare" and count > 1} == {}


def test_a_night_triggered_through_the_rest_api_runs_on_both_workers_and_is_tagged(
        deployment, rest_night):
    api = deployment.api()
    run_id = rest_night["dag_run_id"]
    assert rest_night["state"] == "success"
    instances = api.task_instances(run_id)
    assert {ti["state"] for ti in instances.values()} == {"success"}
    assert {ti["hostname"] for ti in instances.values()} == {"worker1", "worker2"}
    prune = api.task_log(run_id, "prune", instances["prune"]["try_number"])
    assert PRUNE_SUMMARY in prune and PRUNE_FINISHED in prune  # the stage's own lines
    # one record per line: no progress bar's frames, none glued to a record; no DVC git advice
    assert "it/s]" not in prune and "s/it]" not in prune and "git add dvc.lock" not in prune
    assert "keep ratio 0.6" in prune                             # the trigger's override
    published = json.loads((deployment.project / ".nightly" / "runs" / run_key(run_id)
                            / "published.json").read_text())
    assert published["tag"] in tags(deployment.project)
    assert git("rev-parse", f"{published['tag']}^{{commit}}",
               cwd=deployment.project).strip() == published["commit"]
    # ... and the publish task's log, in the UI, names it
    assert f"published {published['tag']}" in api.task_log(
        run_id, "publish", instances["publish"]["try_number"])
    # the schedule's night and this one, and no other: the schedule fired once
    assert [run["run_type"] for run in api.runs()] == ["scheduled", "manual"]


def test_the_prune_log_reads_in_the_ui_in_a_real_browser(deployment, rest_night):
    from tests.helpers.browser import read_task_log_page

    run_id = rest_night["dag_run_id"]
    page = (f"{deployment.url}/dags/{DAG_ID}/runs/{urllib.parse.quote(run_id, safe='')}"
            "/tasks/prune")
    screenshot = SCREENSHOTS / "deployment-prune-log.png"
    text = read_task_log_page(page, deployment.password, PRUNE_SUMMARY, screenshot)
    assert PRUNE_SUMMARY in text
    # the run's grid beside the log: every task of the night, as the user watched them move
    for task in deployment.api().task_instances(run_id):
        assert task in text
    assert screenshot.read_bytes()[:4] == b"\x89PNG"
    print(f"\nscreenshot: {screenshot}")


def test_down_stops_every_process_it_started(deployment):
    snapshot = deployment_processes(deployment.folder)
    assert len(snapshot) >= 8, snapshot  # postgres, redis, seaweedfs, 3 services, 2 workers
    started = time.monotonic()
    down = deployment.script("down", timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
    print(f"\ndown: {time.monotonic() - started:.0f} s, {len(snapshot)} processes before")
    assert still_running(snapshot, deployment.folder) == []
    status = deployment.script("status", timeout=120)
    assert status.returncode == 3 and " running " not in status.stdout
