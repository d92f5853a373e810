"""The deployment's processes: each started as the leader of a session of its own and recorded
by pid and start time, so that `down` stops exactly what `up` started, and nothing else.

A session holds every process its leader starts, even those that make a process group of their
own (Airflow's task supervisor does, for each task). What leaves the session (a stage step leads
a session of its own, so that a timeout can end it as a whole) carries the marker variable MARKER
(its value: the deployment's folder), inherited from the component that started it.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil

MARKER = "SLIMLINE_DEPLOYMENT"


class Processes:
    def __init__(self, folder: Path):
        self.folder = folder
        self.pids_dir = folder / "pids"
        self.output_dir = folder / "output"  # each process's own stdout and stderr

    def environment(self, env: dict[str, str]) -> dict[str, str]:
        return {**env, MARKER: str(self.folder)}

    def start(self, name: str, command: list[str], env: dict[str, str]) -> int:
        """Start `command` in a new session, its output to output/<name>.log (the previous run's
        kept as <name>.previous.log); its pid."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        log = self.output_dir / f"{name}.log"
        if log.is_file():
            log.replace(log.with_suffix(".previous.log"))
        with open(log, "wb") as output:
            process = subprocess.Popen(command, env=self.environment(env), stdout=output,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
        self.record(name, process.pid)
        return process.pid

    def record(self, name: str, pid: int) -> None:
        self.pids_dir.mkdir(parents=True, exist_ok=True)
        started = psutil.Process(pid).create_time()
        (self.pids_dir / f"{name}.json").write_text(
            json.dumps({"pid": pid, "started": started}) + "\n")

    def recorded(self, name: str) -> int | None:
        """The pid recorded for `name`, alive or not."""
        path = self.pids_dir / f"{name}.json"
        return json.loads(path.read_text())["pid"] if path.is_file() else None

    def running(self, name: str) -> int | None:
        """The recorded pid if that very process (same start time) still runs."""
        path = self.pids_dir / f"{name}.json"
        if not path.is_file():
            return None
        saved = json.loads(path.read_text())
        try:
            process = psutil.Process(saved["pid"])
            if (process.create_time() != saved["started"]
                    or process.status() == psutil.STATUS_ZOMBIE):
                return None
        except psutil.NoSuchProcess:
            return None
        return saved["pid"]

    def marked(self) -> list[int]:
        """Every live process that still shows this deployment's marker (one that renames itself,
        as Celery, PostgreSQL, Redis and the api-server do, overwrites its environment: those
        are found by session or parent)."""
        found = []
        for process in psutil.process_iter():
            try:
                if (process.pid != os.getpid() and process.status() != psutil.STATUS_ZOMBIE
                        and process.environ().get(MARKER) == str(self.folder)):
                    found.append(process.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found

    def session(self, name: str) -> list[int]:
        """The live processes of the session `name` leads, or led: Linux never hands a pid out
        again while a session of that id has members, so when the leader is gone its session's
        members are still ours. Only when the pid now belongs to a newer process is nothing."""
        path = self.pids_dir / f"{name}.json"
        if not path.is_file():
            return []
        saved = json.loads(path.read_text())
        leader = saved["pid"]
        try:
            if psutil.Process(leader).create_time() != saved["started"]:
                return []
        except psutil.NoSuchProcess:
            pass
        members = []
        for process in psutil.process_iter():
            try:
                if os.getsid(process.pid) == leader and process.status() != psutil.STATUS_ZOMBIE:
                    members.append(process.pid)
            except (ProcessLookupError, PermissionError, psutil.NoSuchProcess):
                continue
        return members

    def stop(self, name: str, grace: float) -> int | None:
        """End the session of `name`; the pid it had, or None when nothing of it ran."""
        pid = self.recorded(name)
        members = self.session(name)
        if members:
            # A Celery worker's warm shutdown waits for its running task, and a task process only
            # calls its operator's on_kill() on SIGTERM: after the grace time, SIGKILL (Airflow
            # retries such a task after task_instance_heartbeat_timeout).
            end(lambda: self.session(name), grace)
        (self.pids_dir / f"{name}.json").unlink(missing_ok=True)
        return pid if members else None


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def end(find: Callable[[], list[int]], grace: float) -> bool:
    """SIGTERM what `find()` lists, SIGKILL what is left after `grace` seconds (True when it had
    to). Asked again each round, so a process started meanwhile is ended too."""
    _signal_all(find(), signal.SIGTERM)
    deadline = time.monotonic() + grace
    while find() and time.monotonic() < deadline:
        time.sleep(0.5)
    left = find()
    killed = bool(left)
    for _ in range(20):
        if not left:
            break
        _signal_all(left, signal.SIGKILL)
        time.sleep(0.5)
        left = find()
    return killed
