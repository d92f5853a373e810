"""What the container runners (`docker`, `kubernetes`) share: which image a task runs, what
environment reaches it, and which host folders it needs. Settings are environment variables:

  SLIMLINE_IMAGE               image of a task, `{stage}` is replaced by the task (default
                               slimline-{stage}:latest: the images of docker/build.sh)
  SLIMLINE_DOCKER_URL          the Docker-API socket (default unix:///var/run/docker.sock; podman:
                               `podman system service --time=0 unix:///run/podman/podman.sock`)
  SLIMLINE_DOCKER_NETWORK      network mode of the containers (default host, so an S3 endpoint on
                               the worker's loopback is reachable; "bridge" for a remote endpoint)
  SLIMLINE_K8S_NAMESPACE       namespace of the stage pods (default slimline)
  SLIMLINE_K8S_S3_SECRET       Kubernetes secret whose keys become the pods' environment
                               (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY; default slimline-s3)
  SLIMLINE_K8S_VOLUME_CLAIM    ReadWriteMany volume claim holding SLIMLINE_REPO and
                               SLIMLINE_STATE_DIR (default slimline-work), mounted in the Airflow
                               workers and the pods at SLIMLINE_K8S_VOLUME_PATH (default /slimline)
  SLIMLINE_K8S_GPU_STAGES      stages that train and want a GPU node (default
                               prepare,prune,decompose,distill: training and fine-tuning)
  SLIMLINE_K8S_GPU_NODE_SELECTOR  label=value of the GPU nodes (default nvidia.com/gpu.present=true)
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from slimline.errors import SlimlineError

# Thread settings reach the container, so a stage computes the same numbers as under `local`.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# HOME=/tmp: the containers run as the workspace's owner, a uid the image may not know.
CONTAINER_ENV = {"PYTHONUNBUFFERED": "1", "DVC_NO_ANALYTICS": "1", "HOME": "/tmp"}


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


@dataclass(frozen=True)
class ContainerSettings:
    image: str = "slimline-{stage}:latest"
    docker_url: str = "unix:///var/run/docker.sock"
    docker_network: str = "host"
    namespace: str = "slimline"
    s3_secret: str = "slimline-s3"
    volume_claim: str = "slimline-work"
    volume_path: Path = Path("/slimline")
    gpu_stages: tuple[str, ...] = ("prepare", "prune", "decompose", "distill")
    gpu_node_selector: tuple[str, str] = ("nvidia.com/gpu.present", "true")

    @classmethod
    def from_env(cls, env: dict | None = None) -> ContainerSettings:
        env = os.environ if env is None else env
        default = cls()
        selector = env.get("SLIMLINE_K8S_GPU_NODE_SELECTOR") or "=".join(default.gpu_node_selector)
        label, sep, value = selector.partition("=")
        if not sep or not label:
            raise SlimlineError(f"SLIMLINE_K8S_GPU_NODE_SELECTOR = {selector!r} is not label=value")
        image = env.get("SLIMLINE_IMAGE") or default.image
        if "{stage}" not in image:
            raise SlimlineError(
                f"SLIMLINE_IMAGE = {image!r} has no {{stage}}: every stage has its own image"
            )
        gpu = env.get("SLIMLINE_K8S_GPU_STAGES")
        return cls(
            image=image,
            docker_url=env.get("SLIMLINE_DOCKER_URL") or default.docker_url,
            docker_network=env.get("SLIMLINE_DOCKER_NETWORK") or default.docker_network,
            namespace=env.get("SLIMLINE_K8S_NAMESPACE") or default.namespace,
            s3_secret=env.get("SLIMLINE_K8S_S3_SECRET") or default.s3_secret,
            volume_claim=env.get("SLIMLINE_K8S_VOLUME_CLAIM") or default.volume_claim,
            volume_path=Path(env.get("SLIMLINE_K8S_VOLUME_PATH") or default.volume_path),
            gpu_stages=default.gpu_stages if gpu is None else _csv(gpu),
            gpu_node_selector=(label, value),
        )

    def image_for(self, task: str) -> str:
        return self.image.format(stage=task)


def passthrough_env() -> dict[str, str]:
    return {name: os.environ[name] for name in THREAD_VARIABLES if name in os.environ}


def git_common_dir(workspace: Path) -> Path:
    """The repository folder a run's worktree points into (refs, objects): DVC reads it, publish
    commits and tags into it, so a container needs it at the same path as the host."""
    done = subprocess.run(["git", "rev-parse", "--path-format=absolute", "--git-common-dir"],
                          cwd=workspace, capture_output=True, text=True)
    if done.returncode != 0:
        raise SlimlineError(f"{workspace} is not a git worktree: {done.stderr.strip()}")
    return Path(done.stdout.strip())
