"""No stage outlives its try: real processes in the shape of a Celery worker, killed one at a time.

    worker main (a session of its own, as `scripts/airflow.sh up` starts it)
      -> supervisor (Celery's pool process, which runs Airflow's task supervisor)
        -> task runner (the operator: LocalRunner)
          -> step (a session of its own) -> stage (`sleep`, in the step's group)

Killing the worker's main process or the supervisor leaves the task runner running under PID 1;
Airflow writes the try off all the same. The step and its stage must be gone within seconds.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT

# The step: end_group_on_sigterm as the real one, then a stage child in its own group.
STEP = """
import os, subprocess, sys, time
from slimline.nightly.commands import end_group_on_sigterm
end_group_on_sigterm()
stage = subprocess.Popen(["sleep", "300"])
with open(sys.argv[1], "w") as out:
    out.write(f"{os.getpid()} {stage.pid}")
stage.wait()
"""

TASK_RUNNER = """
import sys
from pathlib import Path
from slimline.nightly.runner import Job, LocalRunner
workspace = Path(sys.argv[1])
job = Job(task="prepare", module_args=["fake_step", str(workspace / "step.pids")],
          workspace=workspace, env={"PYTHONPATH": sys.argv[2]})
LocalRunner().run(job, print)
"""

# Worker main and supervisor: each starts the next level (writing its pid to the file its first
# argument names) and stays, as Celery's pool process and Airflow's supervisor do.
LEVEL = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, *sys.argv[2:]])
with open(sys.argv[1], "w") as out:
    out.write(str(child.pid))
child.wait()
time.sleep(300)
"""


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_for(path: Path, seconds: float = 30) -> str:
    deadline = time.monotonic() + seconds
    while not (path.is_file() and path.read_text()):
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.1)
    return path.read_text()


@pytest.fixture
def worker(tmp_path):
    """Start the tree; yields the pids: main, supervisor, task runner, step, stage."""
    (tmp_path / "fake_step.py").write_text(textwrap.dedent(STEP))
    (tmp_path / "task_runner.py").write_text(textwrap.dedent(TASK_RUNNER))
    (tmp_path / "level.py").write_text(textwrap.dedent(LEVEL))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    level, runner = str(tmp_path / "level.py"), str(tmp_path / "task_runner.py")
    main = subprocess.Popen([sys.executable, level, str(tmp_path / "supervisor.pid"),
                             level, str(tmp_path / "runner.pid"), runner, str(tmp_path), str(ROOT)],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL)
    step, stage = map(int, _wait_for(tmp_path / "step.pids").split())
    pids = {"main": main.pid, "supervisor": int(_wait_for(tmp_path / "supervisor.pid")),
            "task runner": int(_wait_for(tmp_path / "runner.pid")), "step": step, "stage": stage}
    yield pids
    for pid in pids.values():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    main.wait()


def _gone_within(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return [pid for pid in pids if _alive(pid)]


@pytest.mark.parametrize("killed", ["main", "supervisor"])
def test_a_killed_worker_process_ends_its_tasks_stage(worker, killed):
    assert psutil.Process(worker["task runner"]).ppid() == worker["supervisor"]
    started = time.monotonic()
    os.kill(worker[killed], signal.SIGKILL)
    left = _gone_within([worker["step"], worker["stage"], worker["task runner"]], 10)
    assert left == [], f"still running {time.monotonic() - started:.0f} s after the kill: {left}"


def test_the_try_is_what_runs_in_the_workers_session(worker):
    from slimline.nightly.lifeline import try_ancestors

    chain = try_ancestors(worker["task runner"])
    assert [pid for pid, _ in chain] == [worker["supervisor"], worker["main"]]
    # The step leads a session of its own: nothing above it is in it.
    assert try_ancestors(worker["step"]) == []


def test_a_live_worker_leaves_its_stage_alone(worker):
    time.sleep(2)
    assert all(_alive(pid) for pid in worker.values()), json.dumps(worker)


# A step of an earlier try: records itself under its try (as run_step does first), then works on.
EARLIER_STEP = """
import sys, time
from pathlib import Path
from slimline.nightly import fence
fence.enter(Path(sys.argv[1]), "prepare")
Path(sys.argv[1], "entered").write_text("yes")
time.sleep(300)
"""


def test_a_retry_ends_the_earlier_tries_command_and_fences_it_off(tmp_path, monkeypatch):
    from slimline.nightly import fence

    fence.claim(tmp_path, "prepare", "1:first")
    earlier = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(EARLIER_STEP), str(tmp_path), "slimline.nightly"],
        env={**os.environ, "PYTHONPATH": str(ROOT), fence.TRY_VARIABLE: "1:first"},
        start_new_session=True)
    try:
        _wait_for(tmp_path / "entered")
        said = fence.claim(tmp_path, "prepare", "2:second", grace_seconds=5)
        assert earlier.wait(timeout=10) is not None, "the earlier try's command still runs"
        assert said and f"pid {earlier.pid}" in said and "try 1:first" in said
    finally:
        earlier.kill()
    # Whatever of the earlier try is still somewhere finds its claim gone before it pushes.
    monkeypatch.setenv(fence.TRY_VARIABLE, "1:first")
    with pytest.raises(fence.WrittenOff, match="a later try, 2:second"):
        fence.check(tmp_path, "prepare")
    monkeypatch.setenv(fence.TRY_VARIABLE, "2:second")
    fence.check(tmp_path, "prepare")


# A Celery worker's main process as the deployment configures it: it imports celery_config,
# then forks (a pool process, Airflow's helper) and stays.
WORKER_MAIN = """
import os, sys, time
import slimline.nightly.deployment.celery_config
child = os.fork()
if child == 0:
    time.sleep(300)
    os._exit(0)
open(sys.argv[1], "w").write(str(child))
time.sleep(300)
"""


def test_what_a_workers_main_process_forks_dies_with_it(tmp_path):
    main = subprocess.Popen([sys.executable, "-c", textwrap.dedent(WORKER_MAIN),
                             str(tmp_path / "child.pid")],
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    child = int(_wait_for(tmp_path / "child.pid", seconds=60))
    try:
        os.kill(main.pid, signal.SIGKILL)
        main.wait()
        assert _gone_within([child], 10) == [], "the forked process outlived its worker"
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)
