"""The `docker` runner: each task's command in its stage's image, through Airflow's DockerOperator,
against any Docker-API socket (Docker, or podman's `podman system service`).

The container sees the run's workspace, the run's folder and the repository's git folder at the
same paths as the worker (bind mounts), runs as the workspace's owner (so what it writes stays the
worker's), and gets the storage settings as private environment (never rendered or logged).
"""
from __future__ import annotations

from collections.abc import Callable

from airflow.providers.docker.exceptions import DockerContainerFailedException
from airflow.providers.docker.operators.docker import DockerOperator
from docker.types import Mount

from slimline.nightly.containers import (
    CONTAINER_ENV,
    ContainerSettings,
    git_common_dir,
    passthrough_env,
)
from slimline.nightly.runner import Job, JobFailed, LogTee
from slimline.nightly.storage import scrub


class _OutputTap:
    """Stands in for the operator's logger: its info lines (the container's output, one per line)
    go to the runner's on_line, so they are scrubbed, kept in the task's log file and streamed."""

    def __init__(self, logger, on_line: Callable[[str], None]):
        self._logger, self._on_line = logger, on_line

    def info(self, message, *args, **kwargs) -> None:
        self._on_line(str(message) % args if args else str(message))

    def __getattr__(self, name):
        return getattr(self._logger, name)


class StageContainerOperator(DockerOperator):
    def __init__(self, *, on_line: Callable[[str], None] | None = None, **kwargs):
        super().__init__(**kwargs)
        self._on_line = on_line

    @property
    def log(self):
        logger = super().log
        return _OutputTap(logger, self._on_line) if self._on_line else logger


class DockerRunner:
    name = "docker"

    def __init__(self, settings: ContainerSettings | None = None):
        self.settings = settings or ContainerSettings.from_env()

    def operator(
        self, job: Job, on_line: Callable[[str], None] | None = None
    ) -> StageContainerOperator:
        folders = [job.workspace, *job.shared, git_common_dir(job.workspace)]
        owner = job.workspace.stat()
        return StageContainerOperator(
            task_id=f"{job.task}_container",
            image=self.settings.image_for(job.task),
            command=["python", "-m", *job.module_args],
            working_dir=str(job.workspace),
            user=f"{owner.st_uid}:{owner.st_gid}",
            environment={**passthrough_env(), **CONTAINER_ENV},
            private_environment=dict(job.env),
            mounts=[
                Mount(target=str(f), source=str(f), type="bind") for f in dict.fromkeys(folders)
            ],
            docker_url=self.settings.docker_url,
            network_mode=self.settings.docker_network,
            mount_tmp_dir=False,
            auto_remove="never",  # removed below, after its exit code is read
            force_pull=False,
            on_line=on_line,
        )

    def run(self, job: Job, on_line: Callable[[str], None]) -> None:
        with LogTee(job, on_line) as forward:
            operator = self.operator(job, lambda line: forward(scrub(line, job.secrets)))
            try:
                operator.execute(context={})
            except DockerContainerFailedException:
                state = operator.cli.inspect_container(operator.container["Id"])["State"]
                raise JobFailed(job.task, int(state["ExitCode"]), forward.last_line) from None
            finally:
                if getattr(operator, "container", None):
                    operator.cli.remove_container(operator.container["Id"], force=True)
