"""Which try of a task is the current one, so that a try Airflow has written off never pushes.

Airflow retries a task whose worker went silent; the old try may still be running somewhere
(a worker that is only cut off, a process that survived its parent). A fence keeps it harmless:

* the task claims its task in the run's workspace before it starts its command (`claim`): it
  ends what an earlier try left running there (the step's process group, by the pid and start
  time that step recorded), so a retry never meets that try's DVC lock, then writes its own try;
* the command (a stage step, publish) records its pid under its try (`enter`) and, before every
  push, commit or tag, checks that the record still names its try (`check`): a try that lost its
  claim stops in one line and pushes nothing.

The try comes to the command in SLIMLINE_TRY (Airflow's id of the task instance's try); a command
run by hand (`dvc repro`, the soak) has none and is not fenced. The records live in the
workspace (git-ignored), where the containers' runners see them too.
"""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import psutil

from slimline.artifact.atomic import write_json
from slimline.errors import SlimlineError

TRY_VARIABLE = "SLIMLINE_TRY"
RECORDS = Path(".dvc") / "tmp" / "nightly" / "tries"


def _record_path(workspace: Path, task: str) -> Path:
    return workspace / RECORDS / f"{task}.json"


def _read(workspace: Path, task: str) -> dict:
    path = _record_path(workspace, task)
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _live_process(record: dict) -> psutil.Process | None:
    """The command an earlier try recorded, if that very process still runs."""
    if "pid" not in record:
        return None
    try:
        process = psutil.Process(record["pid"])
        # The command line too: a pid recorded inside a container means another process here.
        if (process.create_time() != record["started"]
                or process.status() == psutil.STATUS_ZOMBIE
                or "slimline.nightly" not in " ".join(process.cmdline())):
            return None
        return process
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def claim(workspace: Path, task: str, try_id: str, grace_seconds: float = 20) -> str | None:
    """Make `try_id` the current try of `task`, ending an earlier try's command first (its
    process group: a step leads its own). A line saying what was ended, or None."""
    earlier = _read(workspace, task)
    ended = None
    process = _live_process(earlier)
    if process and earlier.get("try") != try_id:
        for sig, wait in ((signal.SIGTERM, grace_seconds), (signal.SIGKILL, 5)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            gone, _ = psutil.wait_procs([process], timeout=wait)
            if gone:
                break
        ended = (f"ended the command of an earlier try of {task} (pid {process.pid}, try "
                 f"{earlier.get('try')}) before starting this one")
    write_json(_record_path(workspace, task), {"try": try_id})
    return ended


def enter(workspace: Path, task: str) -> None:
    """Called first by a fenced command: record this process under its try (a retry ends it by
    this record). Refused when another try holds the claim already."""
    try_id = os.environ.get(TRY_VARIABLE)
    if not try_id:
        return
    check(workspace, task)
    write_json(_record_path(workspace, task), {"try": try_id, "pid": os.getpid(),
                                               "started": psutil.Process().create_time()})


class WrittenOff(SlimlineError):
    """A later try of the task has claimed it: this one must not push, commit or tag."""


def check(workspace: Path, task: str) -> None:
    """Before a push, commit or tag: WrittenOff unless this command's try is still current."""
    try_id = os.environ.get(TRY_VARIABLE)
    if not try_id:
        return
    current = _read(workspace, task).get("try")
    if current != try_id:
        raise WrittenOff(f"this try of {task} was written off (a later try, {current}, has "
                            "claimed it): nothing pushed")

