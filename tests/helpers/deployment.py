"""The local Airflow deployment of scripts/airflow.sh, for the tests in tests/deployment: a
project whose committed params.yaml is a micro night with a short training, the deployment
started and stopped by `bash scripts/airflow.sh` itself (module scope: one deployment for a test
module, on free ports, in a folder of its own), and a client of Airflow's REST API.

The deployment's schedule is set to fire a few minutes after `up` starts (SLIMLINE_SCHEDULE), so
the first night of a module is the scheduler's own; heartbeats time out after 45 s, so a killed
worker's task is retried within about a minute.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import yaml

from slimline.nightly.deployment.postgres import server_binaries
from slimline.nightly.deployment.processes import MARKER, Processes
from slimline.nightly.overrides import merge_overrides
from slimline.nightly.seaweed import read_env_file
from slimline.nightly.storage import S3Settings
from tests.helpers.nightly import MICRO, ROOT, copy_checkout

DAG_ID = "slimline_nightly"
# The committed params of the deployment's project: a micro night whose teacher trains for a
# few seconds (long enough to kill a worker in the middle of it) and whose prune stage acts.
DEPLOYMENT_NIGHT = {**MICRO, "prepare.train.epochs": 1, "prune.enabled": True,
                    "prune.keep_ratio": 0.5, "prune.channel_multiple": 1,
                    "prune.finetune.epochs": 0, "prune.latency_runs": 20}
SCHEDULE_LEAD_SECONDS = 90    # about `up`'s time; if `up` takes longer, the tick runs at once
HEARTBEAT_TIMEOUT_SECONDS = 45


def airflow_sh(arguments: list[str], env: dict[str, str], timeout: float = 900):
    return subprocess.run(["bash", str(ROOT / "scripts" / "airflow.sh"), *arguments], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


class Api:
    """Airflow's REST API v2 as the admin user (a JWT from POST /auth/token)."""

    def __init__(self, url: str, password: str):
        import requests

        self.url = url
        reply = requests.post(f"{url}/auth/token", json={"username": "admin",
                                                         "password": password}, timeout=60)
        assert reply.status_code == 201, reply.text
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {reply.json()['access_token']}"

    def get(self, path: str, **params) -> dict:
        reply = self.session.get(f"{self.url}/api/v2{path}", params=params, timeout=60)
        assert reply.status_code == 200, f"GET {path}: {reply.status_code} {reply.text[:500]}"
        return reply.json()

    def post(self, path: str, body: dict):
        return self.session.post(f"{self.url}/api/v2{path}", json=body, timeout=60)

    def post_text(self, path: str, body: str):
        """A body as a client may write it, NaN included (JSON itself has no NaN)."""
        return self.session.post(f"{self.url}/api/v2{path}", data=body, timeout=60,
                                 headers={"Content-Type": "application/json"})

    def trigger(self, conf: dict) -> str:
        # Airflow 3: logical_date is required, and null means "now, as a manual run".
        reply = self.post(f"/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": conf})
        assert reply.status_code == 200, reply.text
        return reply.json()["dag_run_id"]

    def runs(self) -> list[dict]:
        return self.get(f"/dags/{DAG_ID}/dagRuns", order_by="run_after")["dag_runs"]

    def run(self, run_id: str) -> dict:
        return self.get(f"/dags/{DAG_ID}/dagRuns/{run_id}")

    def wait_for_run(self, run_id: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while (run := self.run(run_id))["state"] not in ("success", "failed"):
            assert time.monotonic() < deadline, f"{run_id} still {run['state']} after {timeout} s"
            time.sleep(3)
        return run

    def task_instances(self, run_id: str) -> dict[str, dict]:
        found = self.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {ti["task_id"]: ti for ti in found}

    def task_instance(self, run_id: str, task_id: str) -> dict:
        return self.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}")

    def task_log(self, run_id: str, task_id: str, try_number: int) -> str:
        """The log as the UI shows it: one line per event (the JSON form; text/plain is 406)."""
        data = self.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/logs/"
                        f"{try_number}", full_content="true")
        return "\n".join(part.get("event", "") if isinstance(part, dict) else str(part)
                         for part in data["content"])


@dataclasses.dataclass
class LiveDeployment:
    base: Path
    project: Path
    env: dict[str, str]
    up: subprocess.CompletedProcess
    up_seconds: float
    tick: dt.datetime           # when the schedule fires (UTC)

    @property
    def folder(self) -> Path:
        return self.project / ".nightly" / "deployment"

    @property
    def url(self) -> str:
        ports = json.loads((self.folder / "ports.json").read_text())
        return f"http://127.0.0.1:{ports['api']}"

    @property
    def passwords_file(self) -> Path:
        return self.folder / "secrets" / "passwords.json"

    @property
    def password(self) -> str:
        return json.loads(self.passwords_file.read_text())["admin"]

    def api(self) -> Api:
        return Api(self.url, self.password)

    def script(self, *arguments: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return airflow_sh(list(arguments), self.env, timeout)

    def storage(self) -> S3Settings:
        return S3Settings.from_env(
            read_env_file(self.project / ".nightly" / "seaweedfs" / "credentials.env"))


def deployment_processes(folder: Path) -> dict[int, float]:
    """{pid: start time} of every live process of the deployment: the sessions of the processes
    it recorded, PostgreSQL's server and its children, whatever carries its marker."""
    processes = Processes(folder)
    pids = set(processes.marked())
    for record in processes.pids_dir.glob("*.json"):
        pids |= set(processes.session(record.stem))
    postmaster = processes.running("postgres")
    if postmaster:
        pids |= {postmaster, *(child.pid for child in psutil.Process(postmaster).children())}
    found = {}
    for pid in pids:
        try:
            found[pid] = psutil.Process(pid).create_time()
        except psutil.NoSuchProcess:
            continue
    return found


def still_running(snapshot: dict[int, float], folder: Path) -> list[str]:
    """What of `snapshot` still runs, and any process naming the folder or carrying its marker."""
    left = []
    for process in psutil.process_iter(["pid", "cmdline", "create_time"]):
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            command = " ".join(process.info["cmdline"] or [])
            ours = snapshot.get(process.pid) == process.info["create_time"]
            names_folder = str(folder) in command
            marked = process.environ().get(MARKER) == str(folder)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if ours or names_folder or marked:
            left.append(f"{process.pid} {command[:120]}")
    return left


def _schedule_soon() -> tuple[str, dt.datetime]:
    """A daily cron whose next tick is the first whole minute SCHEDULE_LEAD_SECONDS from now."""
    now = dt.datetime.now(dt.UTC)
    tick = (now + dt.timedelta(seconds=SCHEDULE_LEAD_SECONDS + 59)).replace(second=0,
                                                                          microsecond=0)
    return f"{tick.minute} {tick.hour} * * *", tick


def _missing_programs() -> list[str]:
    missing = [] if server_binaries() else ["postgresql"]
    missing += [name for name in ("redis-server", "chromium", "chromedriver")
                if not shutil.which(name)]
    return missing


@pytest.fixture(scope="module")
def deployment(request):
    missing = _missing_programs()
    if missing and not os.environ.get("SLIMLINE_DEPLOYMENT_TESTS"):
        pytest.skip(f"the deployment tests need {', '.join(missing)} (apt-get install; CI "
                    "installs them and sets SLIMLINE_DEPLOYMENT_TESTS=1)")
    # In /tmp, open to other users for traversal: PostgreSQL runs as its own user under root.
    base = Path(tempfile.mkdtemp(prefix="slimline-deployment-"))
    base.chmod(0o711)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    project = copy_checkout(base / "project",
                            merge_overrides(params, DEPLOYMENT_NIGHT, ROOT / "profiles"))
    cron, tick = _schedule_soon()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("AIRFLOW", "AWS_", "SLIMLINE_"))}
    env.update(SLIMLINE_REPO=str(project), SLIMLINE_SCHEDULE=cron, SLIMLINE_RETRIES="1",
               SLIMLINE_RETRY_DELAY_SECONDS="2", SLIMLINE_S3_PORT="0", SLIMLINE_AIRFLOW_PORT="0",
               SLIMLINE_AIRFLOW_PG_PORT="0", SLIMLINE_AIRFLOW_REDIS_PORT="0",
               SLIMLINE_AIRFLOW_HEARTBEAT_TIMEOUT=str(HEARTBEAT_TIMEOUT_SECONDS))
    started = time.monotonic()
    up = airflow_sh(["up"], env)
    live = LiveDeployment(base, project, env, up, time.monotonic() - started, tick)
    try:
        assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-4000:]
        yield live
    finally:
        down = airflow_sh(["down"], env, timeout=300)
        failed = request.session.testsfailed or down.returncode != 0
        if failed:
            print(f"\ndeployment folder kept for a look: {live.folder}\n{down.stdout}{down.stderr}")
        else:
            shutil.rmtree(base, ignore_errors=True)
