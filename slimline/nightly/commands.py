"""Running a command with its output streamed line by line (to a task log, a file, or both).

Output is scrubbed of secrets before anyone sees it, and the whole process group is ended when
the caller is interrupted (an Airflow execution timeout, a kill) or when a process the caller's
try lives by dies (slimline/nightly/lifeline.py), so no stage outlives its task.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from slimline.errors import SlimlineError
from slimline.nightly.lifeline import Lifeline, signal_when_parent_dies
from slimline.nightly.storage import scrub

EXIT_ABANDONED = 75  # the try's own processes died: this one ends what it started, then itself


def end_group_on_sigterm() -> None:
    """For a command that leads its own process group (a step, publish), called first thing.

    On SIGTERM it passes the signal to its whole group (dvc and the stage dvc runs), then exits;
    and on Linux it asks for that SIGTERM when its parent (the Airflow task) dies, even by
    SIGKILL. A timeout, a kill or a crashed worker leaves no stage running on its own.
    """
    def forward(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.killpg(0, signal.SIGTERM)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, forward)
    parent = os.getppid()
    if not signal_when_parent_dies(signal.SIGTERM) and os.getppid() != parent:
        forward(signal.SIGTERM, None)  # the parent died before the request was in place


def run_streaming(command: list[str], cwd: Path, env: dict[str, str],
                  on_line: Callable[[str], None], secrets: list[str] = (),
                  grace_seconds: float = 20, own_group: bool = True,
                  lives_by: Sequence[tuple[int, float]] = ()) -> int:
    """Run `command`, hand every output line (stdout and stderr, in order) to on_line; return the
    exit code.

    own_group: the command leads a new process group, ended as a whole if the caller is
    interrupted. Commands run by a step (dvc) stay in the step's group instead, so ending the
    step's group ends them too (see end_group_on_sigterm).
    lives_by: the processes this caller's try lives by, (pid, start time) pairs
    (lifeline.own_try_ancestors); when one dies,
    the try is over: the command's group is ended and this process exits with EXIT_ABANDONED.
    """
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                               errors="replace", bufsize=1, start_new_session=own_group)
    watch = (Lifeline(list(lives_by), lambda pid: _abandon(process, pid, grace_seconds))
             if lives_by else None)
    try:
        for line in process.stdout:
            on_line(scrub(line.rstrip("\n"), list(secrets)))
        return process.wait()
    except BaseException:
        if own_group:
            _end_group(process, grace_seconds)
        raise
    finally:
        if watch:
            watch.close()
        process.stdout.close()


def _abandon(process: subprocess.Popen, dead: int, grace_seconds: float) -> None:
    """A process of the try died (the worker, its task supervisor): Airflow writes the try off
    and retries it elsewhere, so nothing of this try may run on or push."""
    try:
        _end_group(process, grace_seconds)
        # Last, and allowed to fail: under Celery this goes to the task supervisor, maybe gone.
        print(f"slimline nightly: process {dead} of this task's try died: ended the command "
              f"{process.pid} and this task", file=sys.stderr, flush=True)
    finally:
        os._exit(EXIT_ABANDONED)


def _end_group(process: subprocess.Popen, grace_seconds: float) -> None:
    """SIGTERM the command's process group (stages clean up temp files), SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGTERM, grace_seconds), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_quiet(command: list[str], cwd: Path, env: dict[str, str] | None = None,
              what: str | None = None) -> str:
    """Run a short command (git, dvc config): its stdout, or one line naming what failed."""
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        detail = [line.strip() for line in (result.stderr + result.stdout).splitlines()
                  if line.strip()]
        # git ends a failed network call with advice ("...and the repository exists."): the
        # cause is its first fatal:/error: line.
        causes = [line for line in detail if line.startswith(("fatal:", "error:"))]
        reason = (causes[:1] or detail[-1:] or [f"exit {result.returncode}"])[0]
        raise SlimlineError(f"{what or ' '.join(command[:3])} failed in {cwd}: {reason}")
    return result.stdout


class DvcHints:
    """DVC's advice to a person at a terminal ("To track the changes with git, run: git add
    dvc.lock", "dvc config core.autostage true"): in a step, where git is publish's business, it
    only filled every task log. `drop(line)` is True for its lines and the blank ones after."""

    HINT = re.compile(r"^(To track the changes with git, run:|To enable auto staging, run:"
                      r"|\tgit add |\tdvc config core\.autostage )")

    def __init__(self):
        self.in_hint = False

    def drop(self, line: str) -> bool:
        if self.HINT.match(line):
            self.in_hint = True
        elif line.strip():
            self.in_hint = False
        return self.in_hint


def run_dvc_in_process(arguments: list[str], cwd: Path, on_line: Callable[[str], None],
                       secrets: list[str] = ()) -> int:
    """`dvc <arguments>` run by DVC's own CLI entry point in this process; the exit code.

    Like run_streaming(["dvc", ...]) — every output line, DVC's and that of the stage it runs, in
    order and scrubbed, is printed to this process's standard output and handed to on_line — but
    without a new process that imports DVC again (about 1 s of CPU each time; a step runs DVC three
    times per stage, every night). While DVC runs, file descriptors 1 and 2 point into a pipe that
    a thread reads, so the commands DVC starts inherit it too; on_line must not print.
    """
    from dvc.cli import main as dvc_main

    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    read_end, write_end = os.pipe()
    saved = os.dup(1), os.dup(2)
    echo = os.fdopen(os.dup(1), "w", buffering=1, errors="replace")

    hints = DvcHints()

    def pump() -> None:
        with os.fdopen(read_end, errors="replace") as lines:
            for line in lines:
                line = scrub(line.rstrip("\n"), list(secrets))
                if hints.drop(line):
                    continue
                echo.write(line + "\n")
                on_line(line)

    reader = threading.Thread(target=pump, name="dvc-output", daemon=True)
    reader.start()
    os.dup2(write_end, 1)
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        with contextlib.chdir(cwd):
            return dvc_main(arguments)
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os.dup2(saved[0], 1)  # the pipe's last writers gone: the reader reaches its end
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        reader.join()
        echo.close()
