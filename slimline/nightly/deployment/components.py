"""Airflow's processes in the deployment: one environment for all of them, their commands, and
how to tell each is ready.

Every component reads the same configuration from the environment (no airflow.cfg is relied on):
five processes starting at once on an empty AIRFLOW_HOME could each generate different keys, and
the JWT secret, the api-server's secret key and the Fernet key must be the same everywhere.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from slimline.errors import SlimlineError
from slimline.nightly.deployment import broker, postgres
from slimline.nightly.deployment.credentials import Secrets
from slimline.nightly.deployment.settings import ADMIN_USER, HOST, Deployment

SERVICES = ("api-server", "scheduler", "dag-processor")
INHERITED_AWAY = ("AIRFLOW", "AWS_", "SLIMLINE_S3_")  # the caller's own Airflow and storage


def names(deployment: Deployment) -> list[str]:
    return [*SERVICES, *deployment.worker_names]


def api_url(ports: dict[str, int]) -> str:
    return f"http://{HOST}:{ports['api']}"


def environment(deployment: Deployment, ports: dict[str, int], secrets: Secrets,
                base: dict[str, str], storage_env: dict[str, str]) -> dict[str, str]:
    """Every component's environment: `base` (the recorded one, slimline/nightly/deployment/
    environment.py) without its own Airflow and storage settings, then the deployment's."""
    keys = secrets.keys
    database = postgres.url(ports["postgres"], keys["postgres_password"])
    env = {key: value for key, value in base.items() if not key.startswith(INHERITED_AWAY)}
    env.update(storage_env)
    env.update({
        "PATH": f"{deployment.python.parent}{os.pathsep}{env.get('PATH', '')}",
        "SLIMLINE_REPO": str(deployment.repo),
        "SLIMLINE_STATE_DIR": str(deployment.state_dir),
        "AIRFLOW_HOME": str(deployment.home),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__DAGS_FOLDER": str(deployment.repo / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # A deployment exists to run the schedule; the UI's toggle still pauses it.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__HOSTNAME_CALLABLE":
            "slimline.nightly.deployment.hostname.worker_hostname",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url(ports)}/execution/",
        "AIRFLOW__CORE__FERNET_KEY": keys["fernet_key"],
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(secrets.passwords_file),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database,
        "AIRFLOW__API__HOST": HOST,
        "AIRFLOW__API__PORT": str(ports["api"]),
        "AIRFLOW__API__BASE_URL": api_url(ports),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": keys["api_secret_key"],
        "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
        # One log folder for every worker: the api-server reads a finished or running task's log
        # from it directly (workers' log servers would need a port each and resolvable names).
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(deployment.home / "logs"),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(deployment.heartbeat_timeout),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
        "AIRFLOW__CELERY__BROKER_URL": broker.url(ports["redis"], keys["redis_password"]),
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{database}",
        # One task at a time per worker, none reserved ahead: parallel tasks spread over workers,
        # and a worker that dies takes only its running task with it.
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
        "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
        "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS":
            "slimline.nightly.deployment.celery_config.CELERY_CONFIG",
    })
    return env


def command(deployment: Deployment, name: str) -> tuple[list[str], dict[str, str]]:
    """The component's command line and the variables only it gets."""
    airflow = str(deployment.airflow)
    if name in SERVICES:
        return [airflow, name], {}
    return ([airflow, "celery", "worker", "--celery-hostname", name, "--concurrency", "1",
             "--skip-serve-logs"], {"AIRFLOW_WORKER_HOSTNAME": name})


def migrate_if_needed(deployment: Deployment, env: dict[str, str], log: Path) -> bool:
    """`airflow db migrate` (its output to `log`) when the database is new or Airflow changed:
    20 s even when there is nothing to do, so not at every `up`. True when it ran."""
    version = importlib.metadata.version("apache-airflow-core")
    marker = deployment.home / ".migrated"
    if marker.is_file() and marker.read_text().strip() == version:
        return False
    deployment.home.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as output:
        done = subprocess.run([str(deployment.airflow), "db", "migrate"], env=env, stdout=output,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise SlimlineError(f"airflow db migrate failed (see {log})")
    marker.write_text(version + "\n")
    return True


def health(ports: dict[str, int]) -> dict | None:
    """/api/v2/monitor/health (no login needed), or None while the api-server does not answer."""
    try:
        with urllib.request.urlopen(f"{api_url(ports)}/api/v2/monitor/health", timeout=5) as reply:
            return json.load(reply)
    except (urllib.error.URLError, OSError, ValueError):
        return None


def ready(name: str, ports: dict[str, int], output: Path) -> bool:
    """Whether a started component serves: the api-server answers, the scheduler and the
    dag-processor report healthy, a worker's `output` says it is ready."""
    if name in SERVICES:
        status = health(ports)
        if name == "api-server" or status is None:
            return status is not None
        part = status.get(name.replace("-", "_")) or {}
        return part.get("status") == "healthy"
    return output.is_file() and f"celery@{name} ready." in output.read_text(errors="replace")
