"""Shared by the tests that run the nightly line for real (test_nightly.py, test_reliability.py,
test_soak.py): a SeaweedFS server on loopback, a git project holding this checkout, an Airflow
home, and ways to run a night (`airflow dags test`, or the same task commands without Airflow).

Each importing test module gets its own server, project and Airflow database (module scope), so
a test that kills its storage or counts its bucket's objects disturbs no one else.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from slimline.nightly import policy, seaweed
from slimline.nightly.storage import S3Settings
from slimline.nightly.workspace import run_key

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SKIP_FROM_CHECKOUT = {"dvc.lock"}  # a checkout's own results; a night makes its own

# A teacher small enough for CI on 2 cores; the real stages, the real evaluate and gate. The
# techniques that fine-tune pass through (their own tests cover them); int8 quantization stays on,
# so the published model is a real compressed one.
TINY = {
    "model.widths": [8, 16, 32],
    "prepare.train.epochs": 1,
    "prune.enabled": False, "decompose.enabled": False, "distill.enabled": False,
    "quantize.enabled": True,
    "data": {"val_size": 100, "test_size": 200, "calibration_size": 32},
    "evaluate": {"latency_runs": 200, "warmup_runs": 2, "rounds": 2, "throughput_runs": 2,
                 "gate": {"max_top1_drop": 100.0}},
}
UNTRAINED = {**TINY, "prepare.train.epochs": 0}  # runs that test orchestration, not training
# The cheapest real night: untrained teacher, small splits, the fewest latency runs params allow.
MICRO = {**UNTRAINED,
         "data": {"val_size": 50, "test_size": 100, "calibration_size": 16},
         "quantize.latency_runs": 20, "quantize.latency_rounds": 1,
         "evaluate": {"latency_runs": 200, "warmup_runs": 1, "rounds": 2, "throughput_runs": 1,
                      "throughput_batch": 8, "gate": {"max_top1_drop": 100.0}}}


def git(*args, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


def tags(project: Path) -> list[str]:
    return git("tag", "--list", "nightly/*", cwd=project).split()


def nightly_tip(project: Path) -> str:
    """The versioning branch's commit, or "" before the first published night."""
    return subprocess.run(["git", "rev-parse", "--verify", "--quiet", "refs/heads/nightly"],
                          cwd=project, capture_output=True, text=True).stdout.strip()


def tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    server = seaweed.start(tmp_path_factory.mktemp("seaweedfs"), port=0, bucket="nightly-test")
    yield server
    seaweed.stop(server.folder)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return copy_checkout(tmp_path_factory.mktemp("project"))


def copy_checkout(target: Path, params: dict | None = None) -> Path:
    """A git repository holding this checkout's files (committed or not, minus ignored ones),
    as a fresh clone in CI would: the nightly builds committed revisions only. `params`, when
    given, is committed as its params.yaml."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, check=True, capture_output=True).stdout.decode().split("\0")
    for relative in filter(None, listed):
        source = ROOT / relative
        if (
            relative in SKIP_FROM_CHECKOUT
            or relative.startswith("metrics/")
            or not source.is_file()
        ):
            continue
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / relative)
    if params is not None:
        (target / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git("init", "-q", "-b", "main", cwd=target)
    git("add", "-A", cwd=target)
    git("-c", "user.name=test", "-c", "user.email=test@localhost", "commit", "-q", "-m", "project",
        cwd=target)
    return target


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory, project) -> Path:
    """An Airflow home with the project's cluster policy, as every deployment of it has."""
    home = tmp_path_factory.mktemp("airflow")
    policy.install(home)
    subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=airflow_env(home, project, {}),
                   check=True, capture_output=True, timeout=300)
    return home


def airflow_env(home: Path, project: Path, storage_env: dict) -> dict:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("AWS_", "SLIMLINE_", "AIRFLOW"))}
    env.update(storage_env, AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__CORE__DAGS_FOLDER=str(project / "dags"), SLIMLINE_RETRIES="0",
               PATH=f"{BIN}{os.pathsep}{env['PATH']}")
    return env


@dataclasses.dataclass
class Night:
    result: subprocess.CompletedProcess
    workspace: Path
    run_dir: Path

    @property
    def output(self) -> str:
        return self.result.stdout + self.result.stderr

    @property
    def published(self) -> dict:
        return json.loads((self.run_dir / "published.json").read_text())


def run_dag(
    project: Path,
    home: Path,
    settings: S3Settings | None,
    logical_date: str,
    overrides: dict,
    extra_env: dict | None = None,
    storage_env: dict | None = None,
) -> Night:
    """`storage_env` replaces settings.env() (e.g. an Airflow connection instead of keys);
    `extra_env` adds to it (e.g. another runner)."""
    conf = json.dumps({"overrides": overrides})
    env = airflow_env(home, project, {**(settings.env() if storage_env is None else storage_env),
                                      **(extra_env or {})})
    result = subprocess.run(
        [str(BIN / "airflow"), "dags", "test", "slimline_nightly", logical_date, "--conf", conf],
        env=env, capture_output=True, text=True, timeout=1500)
    # `dags test` names the run after the time it starts, not the logical date: read it back.
    found = re.search(r"run_id=(manual__[^\s,]+)", result.stdout + result.stderr)
    assert found, (result.stdout + result.stderr)[-3000:]
    key = run_key(found.group(1))
    state = project / ".nightly"
    return Night(result, state / "workspaces" / key, state / "runs" / key)


def succeeded(night: Night) -> bool:
    return "state=success" in night.output and night.result.returncode == 0




@dataclasses.dataclass
class DirectNight:
    """A night run as the DAG's tasks run it, minus Airflow (see run_night_direct)."""
    run_id: str
    date: str
    workspace: Path
    run_dir: Path
    failed_task: str | None = None
    output: list[str] = dataclasses.field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.output)

    @property
    def exchange(self) -> Path:
        return self.workspace / ".dvc" / "tmp" / "nightly"

    @property
    def published(self) -> dict:
        return json.loads((self.run_dir / "published.json").read_text())


def _run_task(night: DirectNight, task: str, module_args: list[str], settings: S3Settings,
              extra_env: dict | None) -> bool:
    from slimline.nightly.runner import Job, JobFailed, LocalRunner

    env = {**settings.env(), **(extra_env or {})}
    log = night.run_dir / "logs" / f"{task}.log"
    try:
        LocalRunner().run(Job(task, module_args, night.workspace, env, settings.secrets(), log),
                          night.output.append)
    except JobFailed:
        night.failed_task = task
        return False
    night.failed_task = None
    return True


def run_night_direct(project: Path, settings: S3Settings, run_id: str, date: str, overrides: dict,
                     extra_env: dict | None = None, before_publish=None) -> DirectNight:
    """Every task of a night in order, through the local runner: the commands, workspace,
    environment and logs of the DAG's tasks (slimline.nightly.tasks) without Airflow's start-up
    cost per task, so a soak of many nights fits the CI budget. Stops at the first failed task.
    `before_publish(night)` runs just before publish (e.g. to stop the storage)."""
    from slimline.nightly.pipeline import load_pipeline
    from slimline.nightly.trigger import params_with_overrides
    from slimline.nightly.workspace import ensure_workspace, resolve_revision

    revision = resolve_revision(project)
    params = params_with_overrides(project, revision, overrides) if overrides else None
    workspace = ensure_workspace(project, project / ".nightly", run_id, revision, params)
    night = DirectNight(run_id, date, workspace.root, workspace.run_dir)
    night.exchange.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, stage in load_pipeline(workspace.root / "dvc.yaml").items():  # topological order
        upstream = night.exchange / f"{name}.upstream.json"
        result = night.exchange / f"{name}.result.json"
        upstream.write_text(json.dumps([results[parent] for parent in stage.upstream]))
        if not _run_task(night, name, ["slimline.nightly.step", name, "--upstream", str(upstream),
                                       "--result", str(result)], settings, extra_env):
            return night
        results[name] = json.loads(result.read_text())
    (night.exchange / "publish.upstream.json").write_text(json.dumps(list(results.values())))
    if before_publish is not None:
        before_publish(night)
    publish_direct(night, settings, extra_env)
    return night


def publish_direct(night: DirectNight, settings: S3Settings, extra_env: dict | None = None) -> bool:
    """The publish task of a night whose stages ran (also: a retry of a failed publish)."""
    return _run_task(
        night,
        "publish",
        [
            "slimline.nightly.publish",
            "--run-id",
            night.run_id,
            "--date",
            night.date,
            "--run-dir",
            str(night.run_dir),
            "--upstream",
            str(night.exchange / "publish.upstream.json"),
        ],
        settings,
        extra_env,
    )


def kill_storage(server: seaweed.Server) -> None:
    """SIGKILL, as a crashed or OOM-killed server: no chance to flush or say goodbye."""
    import signal

    running = seaweed.running_server(server.folder)  # the pid changes at every restart
    assert running is not None, f"no SeaweedFS running from {server.folder}"
    os.kill(running.pid, signal.SIGKILL)
    try:
        os.waitpid(running.pid, 0)  # our child: reap it, or it lingers as a zombie that looks alive
    except ChildProcessError:
        pass


def restart_storage(server: seaweed.Server) -> seaweed.Server:
    """The same folder, port and keys: what comes back after a crash."""
    return seaweed.start(server.folder, port=server.port, bucket=server.bucket)


def pull_in_fresh_clone(project: Path, tag: str, server: seaweed.Server, target: Path) -> Path:
    """`git clone` (an empty DVC cache), then pull_tag; the clone."""
    git("clone", "-q", str(project), str(target), cwd=project)
    return pull_tag(target, tag, server)


def pull_tag(clone: Path, tag: str, server: seaweed.Server) -> Path:
    """Checkout the tag and `dvc pull` all its outputs with the read-only key, as a user would."""
    git("checkout", "-q", "--force", tag, cwd=clone)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SLIMLINE_"))},
           **server.settings(readonly=True).env(), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    for command in (
        [sys.executable, "-m", "slimline.nightly.storage", "configure"],
        ["dvc", "pull"],
    ):
        done = subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    return clone

def airflow_python(code: str, tmp_path: Path, *args: str, **env) -> subprocess.CompletedProcess:
    # The DAG as configured by defaults: no AIRFLOW_* or SLIMLINE_* settings of the caller leak in.
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith(("AIRFLOW", "SLIMLINE_", "AWS_"))}
    environment.update(AIRFLOW_HOME=str(tmp_path / "airflow"), AIRFLOW__CORE__LOAD_EXAMPLES="False",
                       **env)
    return subprocess.run([sys.executable, "-c", code, *args], env=environment, capture_output=True,
                          text=True, timeout=300)
