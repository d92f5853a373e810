"""Runners: where a task's command executes. Chosen by name (SLIMLINE_RUNNER, or the Airflow
Variable `slimline_runner`); this module builds `local`, the containers work adds `docker` and
`kubernetes` by registering a class with the same `run` method.

The command is always `python -m <module> <args>` in the run's workspace — the stage steps
(`slimline.nightly.step`) and publish (`slimline.nightly.publish`) — so a runner only decides where
that process lives, how the workspace and the environment reach it and how its output comes back.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from slimline.errors import SlimlineError
from slimline.nightly.commands import run_streaming

STORAGE_VARIABLES = ("SLIMLINE_S3_", "AWS_")


@dataclass(frozen=True)
class Job:
    task: str                        # the Airflow task it belongs to, for messages
    module_args: list[str]           # run as `python -m <module_args...>`
    workspace: Path                  # the run's worktree: the command's working directory
    env: dict[str, str] = field(repr=False)   # storage settings and credentials
    secrets: list[str] = field(repr=False, default_factory=list)
    log_file: Path | None = None     # the command's full output is kept here too


class JobFailed(Exception):
    """The command exited non-zero; `exit_code` says whether retrying can help (see step.py)."""

    def __init__(self, task: str, exit_code: int, last_line: str):
        super().__init__(last_line or f"{task} failed with exit {exit_code}")
        self.task, self.exit_code = task, exit_code


class Runner(Protocol):
    name: str

    def run(self, job: Job, on_line: Callable[[str], None]) -> None:
        """Run the job to completion, streaming its output to on_line; raise JobFailed if it fails."""


class LocalRunner:
    """A subprocess in the project's environment: its Python, and that Python's bin folder first
    on PATH so the stage commands' `python` and `dvc` are the project's too."""

    name = "local"

    def __init__(self, python: str | None = None):
        self.python = python or os.environ.get("SLIMLINE_PYTHON") or sys.executable

    def environment(self, job: Job) -> dict[str, str]:
        # Storage variables come only from the job, never from whatever this process inherited.
        env = {key: value for key, value in os.environ.items() if not key.startswith(STORAGE_VARIABLES)}
        env.pop("PYTHONPATH", None)  # the scheduler's import path is not the project's
        bin_dir = str(Path(self.python).parent)
        # DVC_NO_ANALYTICS: no usage reports from the stages' machines (and no waits on them offline).
        env.update(job.env, PYTHONUNBUFFERED="1", DVC_NO_ANALYTICS="1", PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}")
        return env

    def run(self, job: Job, on_line: Callable[[str], None]) -> None:
        last_line = ""
        log = None
        if job.log_file:
            job.log_file.parent.mkdir(parents=True, exist_ok=True)
            log = open(job.log_file, "a")
        try:
            def forward(line: str) -> None:
                nonlocal last_line
                if line.strip():
                    last_line = line
                on_line(line)
                if log:
                    log.write(line + "\n")
                    log.flush()

            code = run_streaming([self.python, "-m", *job.module_args], job.workspace,
                                 self.environment(job), forward, job.secrets)
        finally:
            if log:
                log.close()
        if code != 0:
            raise JobFailed(job.task, code, last_line)


RUNNERS: dict[str, type] = {"local": LocalRunner}


def get_runner(name: str) -> Runner:
    try:
        return RUNNERS[name]()
    except KeyError:
        raise SlimlineError(f"runner '{name}' is not available (known: {', '.join(sorted(RUNNERS))}); "
                            "set SLIMLINE_RUNNER or the Airflow Variable slimline_runner") from None
