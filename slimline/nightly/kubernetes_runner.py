"""The `kubernetes` runner: each task's command in a pod of its stage's image, through Airflow's
KubernetesPodOperator (docs/orchestration.md, docker/README.md: deploying with the Helm chart).

What a pod gets:
  - the S3 keys from a Kubernetes secret (envFrom), never from the Airflow worker's environment;
    only the non-secret storage settings (bucket, endpoint, prefix) are plain env;
  - the shared volume claim holding the repository and the run's workspace, at the same path as
    in the Airflow workers, and the workspace as its working directory;
  - resource requests and limits; training stages also a GPU and the GPU node selector;
  - a non-root user, and deletion when it ends (success or not), so no pods pile up.
"""
from __future__ import annotations

from collections.abc import Callable

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.secret import Secret
from kubernetes.client import models as k8s

from slimline.errors import SlimlineError
from slimline.nightly.containers import CONTAINER_ENV, ContainerSettings, passthrough_env
from slimline.nightly.runner import Job, JobFailed, LogTee
from slimline.nightly.storage import scrub

SECRET_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
IMAGE_UID = 10001   # the `slimline` user of docker/Dockerfile
CPU_RESOURCES = k8s.V1ResourceRequirements(requests={"cpu": "1", "memory": "2Gi"},
                                           limits={"cpu": "2", "memory": "4Gi"})
GPU_RESOURCES = k8s.V1ResourceRequirements(
    requests={"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "1"},
    limits={"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
)
VOLUME = "slimline-work"


class KubernetesRunner:
    name = "kubernetes"

    def __init__(self, settings: ContainerSettings | None = None):
        self.settings = settings or ContainerSettings.from_env()

    def operator(self, job: Job) -> KubernetesPodOperator:
        volume_path = self.settings.volume_path
        for folder in (job.workspace, *job.shared):
            if not folder.is_relative_to(volume_path):
                raise SlimlineError(
                    f"kubernetes runner: {folder} is not on the shared volume "
                    f"{volume_path} (set SLIMLINE_REPO and SLIMLINE_STATE_DIR under it)"
                )
        gpu = job.task in self.settings.gpu_stages
        plain_env = {key: value for key, value in job.env.items() if key not in SECRET_VARIABLES}
        label, value = self.settings.gpu_node_selector
        return KubernetesPodOperator(
            task_id=f"{job.task}_pod",
            name=f"slimline-{job.task}",
            namespace=self.settings.namespace,
            image=self.settings.image_for(job.task),
            cmds=["python", "-m"],
            arguments=list(job.module_args),
            env_vars={**passthrough_env(), **CONTAINER_ENV, **plain_env},
            secrets=[Secret("env", None, self.settings.s3_secret)],
            container_resources=GPU_RESOURCES if gpu else CPU_RESOURCES,
            node_selector={label: value} if gpu else None,
            volumes=[
                k8s.V1Volume(
                    name=VOLUME,
                    persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
                        claim_name=self.settings.volume_claim
                    ),
                )
            ],
            volume_mounts=[k8s.V1VolumeMount(name=VOLUME, mount_path=str(volume_path))],
            # KubernetesPodOperator has no working_dir argument; the base container takes it
            # from here.
            full_pod_spec=k8s.V1Pod(
                spec=k8s.V1PodSpec(
                    containers=[k8s.V1Container(name="base", working_dir=str(job.workspace))]
                )
            ),
            security_context=k8s.V1PodSecurityContext(
                run_as_non_root=True,
                run_as_user=IMAGE_UID,
                run_as_group=IMAGE_UID,
                fs_group=IMAGE_UID,
            ),
            labels={"app.kubernetes.io/name": "slimline", "slimline/stage": job.task},
            on_finish_action="delete_pod",
            get_logs=True,
            random_name_suffix=True,
        )

    def run(self, job: Job, on_line: Callable[[str], None]) -> None:
        # The pod's output reaches the Airflow task log through the provider's pod manager
        # (get_logs); this runner adds the outcome to the job's log file.
        with LogTee(job, on_line) as forward:
            operator = self.operator(job)
            forward(f"{job.task}: pod of {operator.image} in namespace {operator.namespace}")
            try:
                operator.execute(context={})
            except Exception as exc:  # the provider raises AirflowException with the pod's state
                code = _exit_code(operator)
                forward(scrub(f"{job.task}: pod failed (exit {code}): {exc}", job.secrets))
                raise JobFailed(
                    job.task, code, str(exc).splitlines()[0] if str(exc) else ""
                ) from None


def _exit_code(operator: KubernetesPodOperator) -> int:
    """The stage container's exit code from the pod's last state (2 = bad input: no retry)."""
    pod = getattr(operator, "remote_pod", None)
    for status in (pod.status.container_statuses or []) if pod and pod.status else []:
        terminated = status.state.terminated if status.state else None
        if status.name == "base" and terminated is not None:
            return int(terminated.exit_code)
    return 1
