"""Runners: where a task's command executes. Chosen by name (SLIMLINE_RUNNER, or the Airflow
Variable `slimline_runner`): `local` (here), `docker` (docker_runner.py: DockerOperator) and
`kubernetes` (kubernetes_runner.py: KubernetesPodOperator), all with the same `run` method.

The command is always `python -m <module> <args>` in the run's workspace — the stage steps
(`slimline.nightly.step`) and publish (`slimline.nightly.publish`) — so a runner only decides where
that process lives, how the workspace and the environment reach it and how its output comes back.
"""
from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from slimline.errors import SlimlineError
from slimline.nightly.commands import run_streaming
from slimline.nightly.lifeline import own_try_ancestors

STORAGE_VARIABLES = ("SLIMLINE_S3_", "AWS_")
# Airflow's own configuration (the metadata database's and broker's passwords, its signing keys):
# a stage or publish command needs none of it.
AIRFLOW_SETTINGS = "AIRFLOW__"


@dataclass(frozen=True)
class Job:
    task: str                        # the Airflow task it belongs to, for messages
    module_args: list[str]           # run as `python -m <module_args...>`
    workspace: Path                  # the run's worktree: the command's working directory
    env: dict[str, str] = field(repr=False)   # storage settings and credentials
    secrets: list[str] = field(repr=False, default_factory=list)
    log_file: Path | None = None     # the command's full output is kept here too
    shared: tuple[Path, ...] = ()    # other folders the command writes (publish: the run's folder)


class JobFailed(Exception):
    """The command exited non-zero; `exit_code` says whether retrying can help (see step.py)."""

    def __init__(self, task: str, exit_code: int, last_line: str):
        super().__init__(last_line or f"{task} failed with exit {exit_code}")
        self.task, self.exit_code = task, exit_code


class Runner(Protocol):
    name: str

    def run(self, job: Job, on_line: Callable[[str], None]) -> None:
        """Run the job to completion, streaming its output to on_line; JobFailed if it fails."""


class LocalRunner:
    """A subprocess in the project's environment: its Python, and that Python's bin folder first
    on PATH so the stage commands' `python` and `dvc` are the project's too. It lives only as
    long as the task's try: if the worker or the task supervisor above this process dies, it is
    ended, and this process with it (slimline/nightly/lifeline.py)."""

    name = "local"

    def __init__(self, python: str | None = None):
        self.python = python or os.environ.get("SLIMLINE_PYTHON") or sys.executable

    def environment(self, job: Job) -> dict[str, str]:
        # Storage variables come only from the job, never from whatever this process inherited.
        env = {key: value for key, value in os.environ.items()
               if not key.startswith((*STORAGE_VARIABLES, AIRFLOW_SETTINGS))}
        env.pop("PYTHONPATH", None)  # the scheduler's import path is not the project's
        bin_dir = str(Path(self.python).parent)
        # DVC_NO_ANALYTICS: no usage reports from the stages' machines (no waits on them offline).
        env.update(
            job.env,
            PYTHONUNBUFFERED="1",
            DVC_NO_ANALYTICS="1",
            PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        )
        return env

    def run(self, job: Job, on_line: Callable[[str], None]) -> None:
        with LogTee(job, on_line) as forward:
            code = run_streaming([self.python, "-m", *job.module_args], job.workspace,
                                 self.environment(job), forward, job.secrets,
                                 lives_by=own_try_ancestors())
        if code != 0:
            raise JobFailed(job.task, code, forward.last_line)


class LogTee:
    """A job's output lines: to on_line and the job's log file; remembers the last non-empty one."""

    def __init__(self, job: Job, on_line: Callable[[str], None]):
        self.job, self.on_line, self.last_line, self.log = job, on_line, "", None

    def __enter__(self) -> LogTee:
        if self.job.log_file:
            self.job.log_file.parent.mkdir(parents=True, exist_ok=True)
            self.log = open(self.job.log_file, "a")
        return self

    def __call__(self, line: str) -> None:
        if line.strip():
            self.last_line = line
        self.on_line(line)
        if self.log:
            self.log.write(line + "\n")
            self.log.flush()

    def __exit__(self, *exc) -> None:
        if self.log:
            self.log.close()


# module:class, imported on use: the container runners pull in Airflow's providers, which the
# scheduler parsing the DAG file and the stage commands do not need.
RUNNERS: dict[str, str] = {
    "local": "slimline.nightly.runner:LocalRunner",
    "docker": "slimline.nightly.docker_runner:DockerRunner",
    "kubernetes": "slimline.nightly.kubernetes_runner:KubernetesRunner",
}


def get_runner(name: str) -> Runner:
    if name not in RUNNERS:
        raise SlimlineError(
            f"runner '{name}' is not available (known: {', '.join(sorted(RUNNERS))}); "
            "set SLIMLINE_RUNNER or the Airflow Variable slimline_runner"
        )
    module, _, cls = RUNNERS[name].partition(":")
    return getattr(importlib.import_module(module), cls)()
