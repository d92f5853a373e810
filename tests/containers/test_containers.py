"""Containerized stages: the stage images, the `docker` runner and the `kubernetes` runner.

The fast tests render what the runners would start (DockerOperator container, KubernetesPodOperator
pod spec) without an engine or a cluster. The container tests build the images with podman, run
the nightly DAG with the `docker` runner against podman's Docker-API socket (every stage in its
own container, artifacts through SeaweedFS), compare the published model with the `local` runner's
on the same inputs, run a stage image by hand as docker/README.md says, and scan the images'
layers for the run's credentials. They need podman (and root + debootstrap for the CI base image,
unless SLIMLINE_BASE_IMAGE names one): without it they skip, unless SLIMLINE_CONTAINER_TESTS=1
(CI), which makes a missing podman a failure.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from slimline.errors import SlimlineError
from slimline.nightly.containers import ContainerSettings
from slimline.nightly.runner import Job, get_runner
from tests.helpers.nightly import (
    ROOT,
    TINY,
    git,
    run_dag,
    succeeded,
)

STAGES = list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
TAG = "test"
BASE_IMAGE = "localhost/slimline-base-os:bookworm"
PODMAN_CONF = ROOT / "docker" / "podman-ci.conf"
REQUIRED = os.environ.get("SLIMLINE_CONTAINER_TESTS") == "1"


# Fast checks: what the runners would start, rendered without an engine or a cluster.

def worktree(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git("init", "-q", cwd=repo)
    git(
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "x",
        cwd=repo,
    )
    git(
        "worktree",
        "add",
        "-q",
        "--detach",
        str(tmp_path / "state" / "workspaces" / "run1"),
        cwd=repo,
    )
    return tmp_path / "state" / "workspaces" / "run1"


def job(task: str, workspace: Path, run_dir: Path) -> Job:
    return Job(
        task=task,
        module_args=["slimline.nightly.step", task, "--result", "r.json"],
        workspace=workspace,
        env={
            "SLIMLINE_S3_BUCKET": "models",
            "AWS_ACCESS_KEY_ID": "AKIDTEST",
            "AWS_SECRET_ACCESS_KEY": "s3cr3t-test-value",
        },
        secrets=["s3cr3t-test-value", "AKIDTEST"],
        shared=(run_dir,),
    )


def test_runners_are_chosen_by_configuration(monkeypatch):
    monkeypatch.setenv("SLIMLINE_DOCKER_URL", "unix:///run/podman/podman.sock")
    assert [get_runner(name).name for name in ("local", "docker", "kubernetes")] == [
        "local", "docker", "kubernetes"]
    assert get_runner("docker").settings.docker_url == "unix:///run/podman/podman.sock"
    with pytest.raises(
        SlimlineError, match=r"runner 'ssh' is not available \(known: docker, kubernetes, local\)"
    ):
        get_runner("ssh")
    with pytest.raises(SlimlineError, match="SLIMLINE_IMAGE = 'slimline:1' has no {stage}"):
        ContainerSettings.from_env({"SLIMLINE_IMAGE": "slimline:1"})


def test_the_docker_runner_mounts_the_run_and_keeps_keys_private(tmp_path):
    workspace = worktree(tmp_path)
    run_dir = tmp_path / "state" / "runs" / "run1"
    run_dir.mkdir(parents=True)
    settings = ContainerSettings.from_env(
        {"SLIMLINE_IMAGE": "registry.example/slimline-{stage}:1.2"}
    )
    operator = get_runner("docker").__class__(settings).operator(job("prune", workspace, run_dir))
    assert operator.image == "registry.example/slimline-prune:1.2"
    assert operator.command == [
        "python",
        "-m",
        "slimline.nightly.step",
        "prune",
        "--result",
        "r.json",
    ]
    assert operator.working_dir == str(workspace)
    mounts = {m["Source"]: m["Target"] for m in operator.mounts}
    assert mounts == {str(workspace): str(workspace), str(run_dir): str(run_dir),
                      str(tmp_path / "repo" / ".git"): str(tmp_path / "repo" / ".git")}
    assert operator.user == f"{os.getuid()}:{os.getgid()}"
    # keys only in the private environment, which Airflow never renders or logs
    assert "s3cr3t-test-value" not in json.dumps(operator.environment)
    assert operator._private_environment["AWS_SECRET_ACCESS_KEY"] == "s3cr3t-test-value"


def render_pod(task: str, **env) -> dict:
    from kubernetes.client import ApiClient

    settings = ContainerSettings.from_env(env)
    workspace = Path("/slimline/state/workspaces/run1")
    operator = get_runner("kubernetes").__class__(settings).operator(
        job(task, workspace, Path("/slimline/state/runs/run1")))
    pod = ApiClient().sanitize_for_serialization(operator.build_pod_request_obj(dry_run=True))
    return {"pod": pod, "operator": operator}


def test_kubernetes_pod_specs_take_keys_from_a_secret_and_set_resources():
    rendered = render_pod("evaluate")
    pod, operator = rendered["pod"], rendered["operator"]
    (container,) = pod["spec"]["containers"]
    assert pod["metadata"]["namespace"] == "slimline"
    assert pod["metadata"]["labels"]["slimline/stage"] == "evaluate"
    assert container["image"] == "slimline-evaluate:latest"
    assert container["command"] + container["args"] == [
        "python", "-m", "slimline.nightly.step", "evaluate", "--result", "r.json"]
    assert container["workingDir"] == "/slimline/state/workspaces/run1"
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["SLIMLINE_S3_BUCKET"] == "models"
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(env)
    assert "s3cr3t-test-value" not in json.dumps(pod) and "AKIDTEST" not in json.dumps(pod)
    assert container["envFrom"] == [{"secretRef": {"name": "slimline-s3"}}]
    assert container["resources"] == {"limits": {"cpu": "2", "memory": "4Gi"},
                                      "requests": {"cpu": "1", "memory": "2Gi"}}
    assert not pod["spec"].get("nodeSelector")   # evaluate measures on CPU: no GPU node
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001
    assert pod["spec"]["volumes"] == [{"name": "slimline-work",
                                       "persistentVolumeClaim": {"claimName": "slimline-work"}}]
    assert container["volumeMounts"] == [{"mountPath": "/slimline", "name": "slimline-work"}]
    assert pod["spec"]["restartPolicy"] == "Never"
    assert operator.on_finish_action.value == "delete_pod"   # cleaned up, success or not


@pytest.mark.parametrize("task", ["distill", "prune", "decompose", "prepare"])
def test_training_stages_ask_for_a_gpu_node(task):
    pod = render_pod(task, SLIMLINE_K8S_GPU_NODE_SELECTOR="cloud.example/accelerator=t4")["pod"]
    assert pod["spec"]["nodeSelector"] == {"cloud.example/accelerator": "t4"}
    resources = pod["spec"]["containers"][0]["resources"]
    assert (
        resources["limits"]["nvidia.com/gpu"] == "1"
        and resources["requests"]["nvidia.com/gpu"] == "1"
    )


def test_kubernetes_runner_refuses_a_workspace_off_the_shared_volume():
    settings = ContainerSettings.from_env({})
    with pytest.raises(SlimlineError, match="/tmp/ws is not on the shared volume /slimline"):
        get_runner("kubernetes").__class__(settings).operator(
            job("prune", Path("/tmp/ws"), Path("/tmp/run"))
        )


# The container tests: podman, the real images, the real DAG.

def podman_env() -> dict:
    return {**os.environ, "CONTAINERS_CONF": str(PODMAN_CONF)}


def podman(*args: str, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["podman", *args], env=podman_env(), capture_output=True, text=True,
                          timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed: {done.stderr[-3000:]}")
    return done


@pytest.fixture(scope="module")
def timings(request):
    """Each container step's duration, printed at the end of the session (CI budget)."""
    measured: dict[str, float] = {}
    yield measured
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():   # shown even when the tests pass
        for step, seconds in measured.items():
            print(f"\ncontainers: {step}: {seconds:.0f} s", end="")
        print()


@pytest.fixture(scope="module")
def images(timings) -> dict[str, str]:
    if shutil.which("podman") is None:
        message = (
            "podman is not installed: the container tests need it (apt-get install podman runc)"
        )
        if REQUIRED:
            pytest.fail(f"SLIMLINE_CONTAINER_TESTS=1 but {message}")
        pytest.skip(message)
    base = os.environ.get("SLIMLINE_BASE_IMAGE")
    if not base:
        base = BASE_IMAGE
        if podman("image", "exists", base, check=False).returncode != 0:
            if os.geteuid() != 0 or shutil.which("debootstrap") is None:
                message = ("building the base image needs root and debootstrap; or set "
                           "SLIMLINE_BASE_IMAGE=python:3.11-slim (docker/README.md)")
                if REQUIRED:
                    pytest.fail(f"SLIMLINE_CONTAINER_TESTS=1 but {message}")
                pytest.skip(message)
            start = time.monotonic()
            done = subprocess.run(["bash", str(ROOT / "docker" / "base-debootstrap.sh"), base],
                                  env=podman_env(), capture_output=True, text=True, timeout=1200)
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
            timings["debootstrap + podman import of the base"] = time.monotonic() - start
    start = time.monotonic()
    env = {**podman_env(), "BASE": base, "BUILD_LOG": "/dev/stderr"}
    if Path("/opt/wheels").is_dir():   # this machine's torch wheel; PyTorch's index is unreachable
        env.update(TORCH_INDEX="", WHEELS="/opt/wheels")
    ca = Path("/etc/ssl/certs/ca-certificates.crt")
    if ca.is_file():  # the machine's CA bundle, for a TLS-intercepting proxy (mounted, not kept)
        env["CA_BUNDLE"] = str(ca)
    done = subprocess.run(["bash", str(ROOT / "docker" / "build.sh"), TAG], env=env,
                          capture_output=True, text=True, timeout=2400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    timings["image builds (the stage images)"] = time.monotonic() - start
    return {stage: f"localhost/slimline-{stage}:{TAG}" for stage in [*STAGES, "publish"]}


@pytest.fixture(scope="module")
def podman_socket(images, tmp_path_factory):
    folder = tmp_path_factory.mktemp("podman")
    socket = folder / "podman.sock"
    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{socket}"],
        env=podman_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        if socket.exists():
            break
        time.sleep(0.1)
    assert socket.exists(), "podman system service did not create its socket"
    yield f"unix://{socket}"
    service.terminate()
    service.wait(timeout=30)


def evaluate_metrics(workspace: Path) -> dict:
    return json.loads((workspace / "metrics" / "evaluate.json").read_text())


ACCURACY_KEYS = ("top1", "agreement", "flips", "kl")


@pytest.fixture(scope="module")
def nights(podman_socket, project, airflow_home, storage, timings):
    """The same night twice on the same inputs: the `local` runner, then `docker` (podman).

    Each runner gets its own remote prefix, so the docker night recomputes every stage instead
    of restoring the local night's results from DVC's run cache.
    """
    import dataclasses

    start = time.monotonic()
    local = run_dag(project, airflow_home, dataclasses.replace(storage.settings(), prefix="local"),
                    "2026-03-01T02:00:00", TINY)
    timings["DAG run, local runner"] = time.monotonic() - start
    assert succeeded(local), local.output[-6000:]
    start = time.monotonic()
    docker = run_dag(
        project,
        airflow_home,
        dataclasses.replace(storage.settings(), prefix="docker"),
        "2026-03-02T02:00:00",
        TINY,
        extra_env={
            "SLIMLINE_RUNNER": "docker",
            "SLIMLINE_DOCKER_URL": podman_socket,
            "SLIMLINE_IMAGE": f"localhost/slimline-{{stage}}:{TAG}",
        },
    )
    timings["DAG run, docker runner (podman)"] = time.monotonic() - start
    assert succeeded(docker), docker.output[-8000:]
    return local, docker


@pytest.mark.slow
def test_every_stage_ran_in_its_own_container(nights, images):
    _, docker = nights
    for task in [*STAGES, "publish"]:
        task_log = (docker.run_dir / "logs" / f"{task}.log").read_text()
        assert f"Starting docker container from image {images[task]}" in task_log, task_log[-2000:]
        if task != "publish":
            assert f"Running stage '{task}'" in task_log   # recomputed, not restored from a cache
            assert f"stage {task} ran; outputs pushed to s3://" in task_log
    assert docker.published["tag"] == "nightly/2026-03-02"
    assert podman("ps", "-a", "--format", "{{.Image}}").stdout.count(f":{TAG}") == 0  # all removed


@pytest.mark.slow
def test_the_docker_night_publishes_the_same_model_as_the_local_night(nights):
    """Same inputs, seeds, torch and ONNX Runtime: tolerance 0 on accuracy, agreement and every
    test prediction; the same weights and graph. Only timings (latency, throughput) differ."""
    local, docker = nights
    local_metrics, docker_metrics = (
        evaluate_metrics(local.workspace),
        evaluate_metrics(docker.workspace),
    )
    compared = [key for key in local_metrics if any(word in key for word in ACCURACY_KEYS)]
    assert compared
    assert {key: docker_metrics[key] for key in compared} == {
        key: local_metrics[key] for key in compared
    }
    for stage in ("prepare", "quantize"):
        assert (json.loads((docker.workspace / "metrics" / f"{stage}.json").read_text())
                .get("teacher_test_top1")
                == json.loads((local.workspace / "metrics" / f"{stage}.json").read_text())
                .get("teacher_test_top1"))
    # Item by item, the shipped model's test predictions (the split file's own hash differs:
    # np.savez stamps the write time into the archive; its arrays are the same).
    shipped = [json.loads((night.workspace / "metrics" / "predictions.json").read_text())
               for night in (local, docker)]
    assert shipped[0]["labels"] == shipped[1]["labels"]
    assert shipped[0]["predictions"] == shipped[1]["predictions"]
    for split in ("train", "test"):
        arrays = [
            np.load(night.workspace / "data" / "prepared" / f"{split}.npz")
            for night in (local, docker)
        ]
        assert "labels" in arrays[0].files and arrays[0].files == arrays[1].files
        assert all(np.array_equal(arrays[0][key], arrays[1][key]) for key in arrays[0].files)
    assert (docker.workspace / "models" / "teacher" / "weights.safetensors").read_bytes() == \
        (local.workspace / "models" / "teacher" / "weights.safetensors").read_bytes()
    for model in ("teacher", "quantized"):
        assert onnx_without_debug_info(docker.workspace / "models" / model / "model.onnx") == \
            onnx_without_debug_info(local.workspace / "models" / model / "model.onnx")


def onnx_without_debug_info(path: Path) -> bytes:
    """The graph and weights, without the exporter's per-node source notes (they name the
    Python files' paths, which differ between the image and the .venv)."""
    import onnx

    model = onnx.load(path)
    del model.graph.metadata_props[:]
    for item in [
        *model.graph.node,
        *model.graph.value_info,
        *model.graph.input,
        *model.graph.output,
        *model.graph.initializer,
    ]:
        del item.metadata_props[:]
    for node in model.graph.node:
        node.doc_string = ""
    return model.SerializeToString()


@pytest.mark.slow
def test_a_stage_image_runs_by_hand_as_the_readme_says(nights, images, tmp_path):
    """docker/README.md: mount a checkout at /work, run as yourself, the command from dvc.yaml."""
    _, docker = nights
    checkout = tmp_path / "checkout"
    shutil.copytree(docker.workspace, checkout, symlinks=True,
                    ignore=shutil.ignore_patterns(".dvc", "reports", "metrics"))
    # evaluate's outputs are left out, its inputs kept as a checkout has them: distill's metrics
    # (the student candidates the report shows) are in git beside dvc.lock.
    (checkout / "metrics").mkdir()
    shutil.copy(docker.workspace / "metrics" / "distill.json", checkout / "metrics")
    command = yaml.safe_load((checkout / "dvc.yaml").read_text())["stages"]["evaluate"][
        "cmd"
    ].split()
    podman(
        "run",
        "--rm",
        "--network",
        "none",
        "--user",
        f"{os.getuid()}:{os.getgid()}",
        "-e",
        "HOME=/tmp",
        "-v",
        f"{checkout}:/work",
        "-w",
        "/work",
        images["evaluate"],
        *command,
    )
    by_hand = evaluate_metrics(checkout)
    assert by_hand["quantized.top1"] == evaluate_metrics(docker.workspace)["quantized.top1"]
    assert (checkout / "reports" / "report.md").is_file()


@pytest.mark.slow
def test_image_layers_hold_no_credentials(nights, images, storage, tmp_path):
    """The keys the containerized night used appear in no layer or config of any stage image."""
    settings = storage.settings()
    secrets = [settings.secret_key.encode(), settings.access_key.encode()]
    archive = tmp_path / "images.tar"
    podman("save", "--multi-image-archive", "--format", "docker-archive", "-o", str(archive),
           *sorted(set(images.values())), timeout=1200)
    scanned = 0
    with tarfile.open(archive) as outer:
        for member in outer:
            if not member.isfile():
                continue
            stream, tail = outer.extractfile(member), b""
            while chunk := stream.read(1 << 22):
                window = tail + chunk
                assert not any(secret in window for secret in secrets), member.name
                tail = window[-64:]
            scanned += member.size
    assert scanned > 500e6   # the images really were read (torch alone is larger)
    for image in set(images.values()):
        user = podman("image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip()
        assert user == "slimline", image
