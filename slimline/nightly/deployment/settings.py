"""Where a deployment lives and how it is set, from environment variables (all optional):

SLIMLINE_AIRFLOW_DIR                the deployment's folder (default <state>/deployment, where
                                    <state> is SLIMLINE_STATE_DIR, default <repo>/.nightly)
SLIMLINE_AIRFLOW_PORT               the api-server (UI and REST API) on 127.0.0.1 (default 8080)
SLIMLINE_AIRFLOW_PG_PORT            the private PostgreSQL on 127.0.0.1 (default 15432)
SLIMLINE_AIRFLOW_REDIS_PORT         the private Redis on 127.0.0.1 (default 16379)
SLIMLINE_S3_PORT                    the embedded SeaweedFS's S3 API on 127.0.0.1 (default 8333)
SLIMLINE_AIRFLOW_WORKERS            Celery workers, each running one task at a time (default 2)
SLIMLINE_AIRFLOW_HEARTBEAT_TIMEOUT  seconds without a task's heartbeat before the scheduler counts
                                    it lost (its worker died) and retries it (default 120)

A port of 0 picks a free one. Ports are kept in the folder's ports.json while anything runs, so
`up` after a lost worker, `status` and `down` find the same deployment.
"""
from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from slimline.errors import SlimlineError
from slimline.nightly.config import NightlyConfig

HOST = "127.0.0.1"  # loopback only: the local deployment is never reachable from the network
ADMIN_USER = "admin"
DEFAULT_PORTS = {"api": 8080, "postgres": 15432, "redis": 16379}
PORT_VARIABLES = {"api": "SLIMLINE_AIRFLOW_PORT", "postgres": "SLIMLINE_AIRFLOW_PG_PORT",
                  "redis": "SLIMLINE_AIRFLOW_REDIS_PORT"}


@dataclass(frozen=True)
class Deployment:
    repo: Path               # the project whose dags/ it serves and whose nights it builds
    state_dir: Path          # the nightly line's state (workspaces, runs, seaweedfs/)
    folder: Path             # everything of the deployment itself
    python: Path             # the environment every component runs in
    workers: int
    heartbeat_timeout: int

    @property
    def secrets_dir(self) -> Path:
        return self.folder / "secrets"

    @property
    def home(self) -> Path:
        return self.folder / "airflow-home"

    @property
    def seaweed_dir(self) -> Path:
        return self.state_dir / "seaweedfs"

    @property
    def ports_file(self) -> Path:
        return self.folder / "ports.json"

    @property
    def worker_names(self) -> list[str]:
        return [f"worker{number}" for number in range(1, self.workers + 1)]

    @property
    def airflow(self) -> Path:
        return self.python.parent / "airflow"


def _positive(env, name: str, default: int) -> int:
    raw = env.get(name) or str(default)
    if not raw.isdigit() or int(raw) < 1:
        raise SlimlineError(f"{name} = {raw!r} is not a positive whole number")
    return int(raw)


def from_env(env=None, default_repo: Path | None = None) -> Deployment:
    env = os.environ if env is None else env
    config = NightlyConfig.from_env(default_repo=default_repo, env=env)
    folder = Path(env.get("SLIMLINE_AIRFLOW_DIR") or config.state_dir / "deployment").resolve()
    return Deployment(
        repo=config.repo,
        state_dir=config.state_dir,
        folder=folder,
        python=Path(sys.executable),
        workers=_positive(env, "SLIMLINE_AIRFLOW_WORKERS", 2),
        heartbeat_timeout=_positive(env, "SLIMLINE_AIRFLOW_HEARTBEAT_TIMEOUT", 120),
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def saved_ports(deployment: Deployment) -> dict[str, int] | None:
    if not deployment.ports_file.is_file():
        return None
    return json.loads(deployment.ports_file.read_text())


def choose_ports(deployment: Deployment, env=None) -> dict[str, int]:
    """The ports of a deployment starting from nothing: the variables, 0 for any free port."""
    env = os.environ if env is None else env
    ports = {}
    for name, variable in PORT_VARIABLES.items():
        raw = env.get(variable) or str(DEFAULT_PORTS[name])
        if not raw.isdigit() or int(raw) > 65535:
            raise SlimlineError(f"{variable} = {raw!r} is not a port (0: any free one)")
        ports[name] = int(raw) or _free_port()
    deployment.folder.mkdir(parents=True, exist_ok=True)
    deployment.ports_file.write_text(json.dumps(ports) + "\n")
    return ports
