"""up, down and status of the local deployment; `python -m slimline.nightly.deployment` (through
`bash scripts/airflow.sh`, which installs PostgreSQL and Redis first where they are missing).

`up` starts only what is not running, so it also brings back a worker that died; it checks every
port it needs before it starts anything, and a failed `up` stops what it started. `down` ends
every process `up` started (their sessions, then anything still carrying the deployment's marker)
and nothing else: a SeaweedFS that was already running before `up` is left running.
"""
from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Collection

from slimline.errors import SlimlineError
from slimline.nightly import policy, seaweed
from slimline.nightly.deployment import airflow_cli, components, credentials, environment
from slimline.nightly.deployment.broker import Redis
from slimline.nightly.deployment.postgres import Postgres
from slimline.nightly.deployment.processes import MARKER, Processes, end
from slimline.nightly.deployment.settings import (
    ADMIN_USER,
    HOST,
    PORT_VARIABLES,
    Deployment,
    choose_ports,
    saved_ports,
)

SEAWEED = "seaweedfs"
STOP_GRACE_SECONDS = 30
READY_TIMEOUT_SECONDS = 600


def say(text: str) -> None:
    print(f"deployment: {text}", flush=True)


def _port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        return probe.connect_ex((HOST, port)) == 0


def _services(deployment: Deployment) -> tuple[Processes, Postgres, Redis]:
    processes = Processes(deployment.folder)
    return processes, Postgres(deployment.folder, processes), Redis(deployment.folder, processes)


def _running_names(deployment: Deployment, processes: Processes) -> list[str]:
    return [name for name in ["postgres", "redis", SEAWEED, *components.names(deployment)]
            if processes.running(name)]


def _storage_env(deployment: Deployment, processes: Processes, start: bool,
                 env: dict[str, str]) -> dict[str, str]:
    """The S3 settings the components get: those of `env` when it names a storage
    (SLIMLINE_S3_BUCKET or an Airflow connection), else those of the embedded SeaweedFS, started
    here if `start`."""
    if environment.uses_own_storage(env):
        return environment.storage_of(env)
    server = seaweed.running_server(deployment.seaweed_dir)
    if server is None and start:
        server = seaweed.start(deployment.seaweed_dir, _seaweed_port(env))
        processes.record(SEAWEED, server.pid)
        say(f"seaweedfs: S3 at {server.endpoint}, bucket {server.bucket} (pid {server.pid})")
    return seaweed.read_env_file(server.env_file) if server else {}


def _seaweed_port(env: dict[str, str]) -> int:
    return int(env.get(seaweed.PORT_VARIABLE) or seaweed.DEFAULT_PORT)


def _check_ports(deployment: Deployment, ports: dict[str, int], database: Postgres,
                 redis: Redis, processes: Processes, env: dict[str, str]) -> None:
    """Every port a component still to start needs, before anything starts: a taken one is named
    with the variable that moves it."""
    services = {"postgres": database.pid() is None, "redis": redis.pid() is None,
                "api": processes.running("api-server") is None}
    for name, to_start in services.items():
        if to_start and _port_taken(ports[name]):
            raise SlimlineError(f"{name}: port {ports[name]} on {HOST} is taken by another "
                                f"program; choose another with {PORT_VARIABLES[name]} (0: any "
                                "free one)")
    if (not environment.uses_own_storage(env)
            and seaweed.running_server(deployment.seaweed_dir) is None):
        seaweed.check_port(_seaweed_port(env))


def _timed(name: str, where: str, action: Callable[[], int | None]) -> None:
    started = time.monotonic()
    pid = action()
    say(f"{name}: running on {where} (pid {pid}, {time.monotonic() - started:.1f} s)")


def up(deployment: Deployment) -> None:
    processes = Processes(deployment.folder)
    before = _running_names(deployment, processes)
    try:
        _start_missing(deployment)
    except BaseException:  # a refusal, a component that would not start, Ctrl-C
        _stop(deployment, keep=before)
        raise


def after_failed_up(deployment: Deployment) -> str:
    """The last line after a failed `up`: what of the deployment still runs, and how to stop it."""
    left = _running_names(deployment, Processes(deployment.folder))
    if not left:
        return "nothing of the deployment runs"
    return (f"still running, as before this up: {', '.join(left)} "
            "(`bash scripts/airflow.sh down` stops them)")


def _start_missing(deployment: Deployment) -> None:
    started = time.monotonic()
    processes, database, redis = _services(deployment)
    deployment.folder.mkdir(parents=True, exist_ok=True)
    deployment.folder.chmod(0o711)  # PostgreSQL's own user passes through, and lists nothing
    secrets = credentials.ensure(deployment)
    running = _running_names(deployment, processes)
    # Everything started from here carries the marker, the SeaweedFS server below included.
    os.environ[MARKER] = str(deployment.folder)
    # What runs already started in the recorded environment; what it restarts does too.
    base_env = (environment.restore(deployment, dict(os.environ), say) if running
                else environment.record(deployment, dict(os.environ)))
    ports = saved_ports(deployment) if running else choose_ports(deployment, base_env)
    _check_ports(deployment, ports, database, redis, processes, base_env)
    policy.install(deployment.home)
    _timed("postgres", f"{HOST}:{ports['postgres']}", lambda: database.start(
        ports["postgres"], secrets.keys["postgres_password"], base_env))
    _timed("redis", f"{HOST}:{ports['redis']}", lambda: redis.start(
        ports["redis"], secrets.keys["redis_password"], base_env))
    env = components.environment(deployment, ports, secrets, base_env,
                                 _storage_env(deployment, processes, True, base_env))
    migrated = time.monotonic()
    if components.migrate_if_needed(deployment, env, processes.output_dir / "db-migrate.log"):
        say(f"airflow db migrate: {time.monotonic() - migrated:.1f} s")
    launched = {}
    for name in components.names(deployment):
        if processes.running(name):
            continue
        processes.stop(name, grace=5)  # what a dead component left behind (a worker's task)
        command, own_env = components.command(deployment, name)
        processes.start(name, command, {**env, **own_env})
        launched[name] = time.monotonic()
    for name, since in launched.items():
        _wait_ready(processes, name, ports)
        say(f"{name}: ready (pid {processes.running(name)}, {time.monotonic() - since:.1f} s "
            "after its start)")
    _print_welcome(deployment, ports, secrets.passwords_file, time.monotonic() - started)


def _wait_ready(processes: Processes, name: str, ports) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    log = processes.output_dir / f"{name}.log"
    while not components.ready(name, ports, log):
        if processes.running(name) is None:
            raise SlimlineError(f"{name} exited while starting (see {log})")
        if time.monotonic() > deadline:
            raise SlimlineError(f"{name} not ready after {READY_TIMEOUT_SECONDS} s (see {log})")
        time.sleep(1)


def _print_welcome(deployment: Deployment, ports, passwords_file, seconds: float) -> None:
    url = components.api_url(ports)
    say(f"up in {seconds:.0f} s")
    print("\n".join([
        f"  UI and REST API   {url}  (user {ADMIN_USER}; the password is in {passwords_file}, "
        "readable by you only)",
        "  trigger a night   in the UI: slimline_nightly, Trigger (overrides in its form), or",
        "                    bash scripts/airflow.sh cli dags trigger slimline_nightly "
        "--conf '{\"overrides\": {\"prune.keep_ratio\": 0.5}}'",
        "  stage logs        in the UI: the run, a task, Logs (files under "
        f"{deployment.home / 'logs'})",
        f"  published nights  git -C {deployment.repo} tag -l 'nightly/*'",
        "  status, stop      bash scripts/airflow.sh status | down",
    ]), flush=True)


def _stop(deployment: Deployment, keep: Collection[str] = ()) -> None:
    """End what `up` started, but for the processes named in `keep`."""
    processes, database, redis = _services(deployment)
    names = [name for name in components.names(deployment) if name not in keep]
    ending = [name for name in names if processes.session(name)]
    if ending:
        # All at once: each worker's warm shutdown waits out its running task in parallel.
        if end(lambda: [pid for name in ending for pid in processes.session(name)],
               STOP_GRACE_SECONDS):
            say(f"airflow: still running after {STOP_GRACE_SECONDS} s, killed")
        say("airflow: stopped " + ", ".join(ending))
    for name in names:
        (processes.pids_dir / f"{name}.json").unlink(missing_ok=True)
    for name, service in (("redis", redis), ("postgres", database)):
        pid = None if name in keep else service.stop()
        if pid:
            say(f"{name}: stopped (pid {pid})")
    if SEAWEED not in keep:
        if processes.running(SEAWEED):
            seaweed.stop(deployment.seaweed_dir)
            say("seaweedfs: stopped")
        (processes.pids_dir / f"{SEAWEED}.json").unlink(missing_ok=True)


def down(deployment: Deployment) -> None:
    started = time.monotonic()
    processes = Processes(deployment.folder)
    _stop(deployment)
    # A stage step leads a session of its own; it ends itself when its task dies, this makes sure
    left = processes.marked()
    if left:
        end(processes.marked, grace=10)
        say(f"ended {len(left)} more process(es) of the deployment: {left}")
    say(f"down in {time.monotonic() - started:.0f} s; nothing of it runs")


def status(deployment: Deployment) -> bool:
    processes = Processes(deployment.folder)
    ports = saved_ports(deployment) or {}
    where = {"postgres": f"{HOST}:{ports.get('postgres')}", "redis": f"{HOST}:{ports.get('redis')}",
             "api-server": components.api_url(ports) if ports else ""}
    server = seaweed.running_server(deployment.seaweed_dir)
    all_up = True
    for name in ["postgres", "redis", *components.names(deployment)]:
        pid = processes.running(name)
        all_up &= pid is not None
        if pid:
            print(f"{name:14} running  pid {pid:<8} {where.get(name, '')}")
        else:
            left = processes.session(name)
            print(f"{name:14} stopped" + (f" (its session still has {left})" if left else ""))
    if server:
        owner = "started by up" if processes.running(SEAWEED) else "not started by up"
        print(f"{SEAWEED:14} running  pid {server.pid:<8} {server.endpoint} ({owner})")
    if ports and (state := components.health(ports)):
        print("health: " + ", ".join(f"{part}={(value or {}).get('status')}"
                                     for part, value in state.items()))
    return all_up


def run_cli(deployment: Deployment, arguments: list[str]) -> int:
    """`airflow <arguments>` against the running deployment (e.g. `dags trigger`); its exit
    status."""
    ports = saved_ports(deployment)
    if ports is None:
        raise SlimlineError("no deployment here yet: bash scripts/airflow.sh up")
    processes = Processes(deployment.folder)
    caller = dict(os.environ)
    env = components.environment(deployment, ports, credentials.ensure(deployment), caller,
                                 _storage_env(deployment, processes, False, caller))
    return airflow_cli.run([str(deployment.airflow), *arguments], env)
