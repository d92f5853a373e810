"""The nightly DAG end to end: real Airflow (`airflow dags test`), real DVC, a real SeaweedFS on
loopback with credentials required, and the real stages on a tiny configuration.

One SeaweedFS and one Airflow database serve the whole file; each run gets its own logical date,
so its run id, workspace and tag are predictable.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml

from slimline.errors import SlimlineError
from slimline.nightly import seaweed
from slimline.nightly.publish import branch_tip, follow_published_branch
from slimline.nightly.storage import check_access

# (test_containers.py and test_search_dag.py import these from here too)
from tests.helpers.nightly import (
    BIN,
    ROOT,
    TINY,
    UNTRAINED,
    Night,
    git,
    nightly_tip,
    run_dag,
    succeeded,
    tags,
    tree_digest,
)


@pytest.fixture(scope="module")
def two_nights(project, airflow_home, storage):
    """Night 1 computes everything; night 2, with nothing changed, should reuse every stage."""
    first = run_dag(project, airflow_home, storage.settings(), "2026-01-01T02:00:00", TINY)
    assert succeeded(first), first.output[-6000:]
    second = run_dag(project, airflow_home, storage.settings(), "2026-01-02T02:00:00", TINY)
    assert succeeded(second), second.output[-6000:]
    return first, second


@pytest.mark.slow
def test_embedded_storage_requires_credentials(storage):
    check_access(storage.settings())
    for wrong in (dataclasses.replace(storage.settings(), secret_key="not-the-secret"),
                  dataclasses.replace(storage.settings(), access_key="NOBODY")):
        with pytest.raises(Exception, match="rejected the credentials"):
            check_access(wrong)
    assert (storage.env_file.stat().st_mode & 0o777) == 0o600


@pytest.mark.slow
def test_a_night_runs_every_stage_and_publishes(two_nights, project):
    first, _ = two_nights
    stages = list(yaml.safe_load((project / "dvc.yaml").read_text())["stages"])
    published = first.published
    assert published["tag"] == "nightly/2026-01-01"
    assert (
        git("rev-parse", "nightly/2026-01-01^{commit}", cwd=project).strip() == published["commit"]
    )
    committed = git("show", "--name-only", "--format=", published["commit"], cwd=project).split()
    assert {"dvc.lock", "params.yaml", "metrics/evaluate.json", "night/comparison.md",
            "night/trend.png"} <= set(committed)
    # each stage's log: streamed into the Airflow task log, kept in the workspace (and the remote)
    for stage in stages:
        assert f"slimline.{stage} INFO stage {stage} started" in first.output
        assert (first.workspace / "logs" / f"{stage}.log").is_file()
        assert f"stage {stage} started" in (first.run_dir / "logs" / f"{stage}.log").read_text()
    comparison = Path(published["comparison"]).read_text()
    assert (
        "## Compared with the previous night" in comparison
        and "first published night" in comparison
    )
    assert git("show", f"{published['tag']}:night/comparison.md", cwd=project) == comparison
    # evaluate's report stays as evaluate pushed it (publish editing it orphaned objects) and
    # says where the comparison is
    report = Path(published["report"]).read_text()
    assert "Compared with the previous night" not in report and "`night/comparison.md`" in report


@pytest.mark.slow
def test_a_second_night_with_nothing_changed_reuses_every_stage(two_nights, project):
    first, second = two_nights
    for stage in yaml.safe_load((project / "dvc.yaml").read_text())["stages"]:
        task_log = (second.run_dir / "logs" / f"{stage}.log").read_text()
        assert f"stage {stage} reused from the run cache" in task_log, task_log[-2000:]
        assert f"Running stage '{stage}'" not in task_log
        # restored, not re-made: the very log the first night wrote
        assert ((second.workspace / "logs" / f"{stage}.log").read_text()
                == (first.workspace / "logs" / f"{stage}.log").read_text())
    assert second.published["tag"] == "nightly/2026-01-02"
    assert second.published["previous"] == first.published["commit"]
    comparison = Path(second.published["comparison"]).read_text()
    assert "against nightly/2026-01-01" in comparison
    # Same inputs, same predictions: the paired comparison sees no flips; the trend has both nights.
    assert "0 test items gained, 0 lost" in comparison
    assert "| nightly/2026-01-01 |" in comparison and "| tonight |" in comparison
    assert (Path(second.published["comparison"]).parent / "trend.png").read_bytes()[
        :4
    ] == b"\x89PNG"


@pytest.mark.slow
def test_credentials_never_reach_git_logs_or_reports(two_nights, project, storage):
    first, _ = two_nights
    secret = storage.settings().secret_key
    assert secret not in first.output
    for folder in (first.run_dir, first.workspace / "logs", first.workspace / "reports",
                   first.workspace / "night"):
        for path in folder.rglob("*"):
            if path.is_file() and path.suffix in {".log", ".md", ".json", ".txt", ""}:
                assert secret not in path.read_text(errors="replace"), path
    grep = subprocess.run(["git", "grep", "-q", secret, "nightly"], cwd=project)
    assert grep.returncode == 1  # not found in the published tree
    assert "endpointurl" not in git("show", "nightly:.dvc/config", cwd=project)


@pytest.mark.slow
def test_a_fresh_clone_pulls_a_published_night_by_tag(two_nights, project, storage, tmp_path):
    first, _ = two_nights
    clone = tmp_path / "clone"
    git("clone", "-q", str(project), str(clone), cwd=tmp_path)
    git("checkout", "-q", "nightly/2026-01-01", cwd=clone)
    reader = storage.settings(readonly=True)  # people who only fetch models need no write key
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **reader.env(),
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    for command in ([sys.executable, "-m", "slimline.nightly.storage", "configure"],
                    ["dvc", "pull", "models/quantized"]):
        done = subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    shipped = Path(first.published["model"])
    assert tree_digest(clone / "models" / "quantized") == tree_digest(shipped)
    assert (clone / "models" / "quantized" / "model.onnx").is_file()


@pytest.mark.slow
def test_a_failed_gate_publishes_nothing(project, airflow_home, storage):
    """evaluate refuses the night (its gate fails, exit 2): no retry, no publish, no tag."""
    before_tags, before_tip = tags(project), nightly_tip(project)
    impossible = {**UNTRAINED, "seed": 5,
                  "evaluate": {**UNTRAINED["evaluate"], "gate": {"max_top1_drop": 100.0,
                                                                "max_latency_ms": 1e-6}}}
    night = run_dag(project, airflow_home, storage.settings(), "2026-01-05T02:00:00", impossible)
    assert not succeeded(night)
    evaluate_log = (night.run_dir / "logs" / "evaluate.log").read_text()
    assert "stage evaluate: failed (exit 2): gate failed for the shipped model" in evaluate_log
    assert not (night.run_dir / "logs" / "publish.log").exists()
    assert tags(project) == before_tags and nightly_tip(project) == before_tip


@pytest.mark.slow
def test_wrong_credentials_fail_the_run_before_any_work(project, airflow_home, storage):
    before, before_tip = tags(project), nightly_tip(project)
    wrong = dataclasses.replace(storage.settings(), secret_key="not-the-secret-at-all")
    night = run_dag(project, airflow_home, wrong, "2026-01-03T02:00:00", UNTRAINED)
    assert not succeeded(night)
    assert "the storage rejected the credentials (SignatureDoesNotMatch)" in night.output
    assert "not-the-secret-at-all" not in night.output
    assert not night.workspace.exists()
    assert tags(project) == before and nightly_tip(project) == before_tip


@pytest.mark.slow
def test_refused_push_fails_the_run_and_tags_nothing(project, airflow_home, storage):
    """A key that may read but not write: the run gets as far as its first push, then stops."""
    before_tags, before_tip = tags(project), nightly_tip(project)
    reader = storage.settings(readonly=True)
    night = run_dag(project, airflow_home, reader, "2026-01-04T02:00:00", {**UNTRAINED, "seed": 7})
    assert not succeeded(night)
    assert "dvc push with s3://" in night.output
    assert "not allowed this operation (AccessDenied)" in night.output
    assert tags(project) == before_tags and nightly_tip(project) == before_tip


@pytest.mark.slow
def test_two_runs_started_together_keep_their_own_artifacts(project, airflow_home, storage,
                                                            tmp_path):
    # Two Airflow databases (SQLite takes one writer), one repository, one bucket, one night.
    homes = [airflow_home, tmp_path / "airflow-2"]
    shutil.copytree(airflow_home, homes[1], ignore=shutil.ignore_patterns("logs"))
    cfg = homes[1] / "airflow.cfg"
    if cfg.exists():
        cfg.write_text(cfg.read_text().replace(str(airflow_home), str(homes[1])))
    dates = ["2026-02-01T02:00:00", "2026-02-01T02:00:01"]
    seeds = [11, 12]
    nights: list[Night | None] = [None, None]

    def night(index: int) -> None:
        nights[index] = run_dag(project, homes[index], storage.settings(), dates[index],
                                {**UNTRAINED, "seed": seeds[index]})

    threads = [threading.Thread(target=night, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for one in nights:
        assert succeeded(one), one.output[-6000:]
    assert nights[0].workspace != nights[1].workspace
    for one, seed in zip(nights, seeds):
        lock = yaml.safe_load((one.workspace / "dvc.lock").read_text())
        assert lock["stages"]["prepare"]["params"]["params.yaml"]["seed"] == seed
    assert (tree_digest(nights[0].workspace / "data" / "prepared")
            != tree_digest(nights[1].workspace / "data" / "prepared"))
    assert sorted(n.published["tag"] for n in nights) == [
        "nightly/2026-02-01",
        "nightly/2026-02-01.2",
    ]
    history = git("log", "--first-parent", "--format=%H", "nightly", cwd=project).split()
    assert {n.published["commit"] for n in nights} <= set(history)


@pytest.mark.slow
def test_nightly_sh_ends_a_failed_night_with_the_task_its_error_and_the_storage_it_left(
        project, tmp_path):
    """The one-shot command's last lines: the failed task and its one-line error (here a night
    that fails at setup, before it has a workspace), after whether SeaweedFS still runs and the
    command that stops it."""
    state = tmp_path / "state"
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("AIRFLOW", "AWS_", "SLIMLINE_"))}
    env.update(SLIMLINE_REPO=str(project), SLIMLINE_STATE_DIR=str(state), SLIMLINE_S3_PORT="0",
               SLIMLINE_SOURCE_REF="no-such-revision")
    try:
        done = subprocess.run(["bash", "scripts/nightly.sh"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=900)
        left_running = seaweed.running_server(state / "seaweedfs")
    finally:
        seaweed.stop(state / "seaweedfs")
    assert done.returncode != 0
    lines = done.stdout.strip().splitlines()
    assert lines[-1].startswith("failed:    task setup_workspace (try 1): resolving git "
                                "revision 'no-such-revision' failed"), lines[-6:]
    assert left_running is not None
    assert (f"seaweedfs: still running; stop it with: .venv/bin/python -m slimline.nightly.seaweed "
            f"stop --dir {state / 'seaweedfs'}") in done.stdout, lines[-6:]



def test_nightly_sh_stopped_while_prepare_trains_leaves_no_process_of_its_night(project,
                                                                                tmp_path):
    """SIGTERM to scripts/nightly.sh alone (not its process group) while the teacher trains:
    `airflow dags test`, the step and the stage end with it. SeaweedFS stays, as documented."""
    state = tmp_path / "state"
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("AIRFLOW", "AWS_", "SLIMLINE_"))}
    env.update(SLIMLINE_REPO=str(project), SLIMLINE_STATE_DIR=str(state), SLIMLINE_S3_PORT="0")
    night = subprocess.Popen(["bash", "scripts/nightly.sh", '{"prepare.train.epochs": 20}'],
                             cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)

    def command_line(process: psutil.Process) -> str:
        try:
            return " ".join(process.cmdline())
        except psutil.NoSuchProcess:  # gone, or a zombie not yet reaped, between two looks
            return ""

    def of_the_night() -> list[psutil.Process]:
        try:
            below = psutil.Process(night.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        return [process for process in below if "weed" not in command_line(process)]

    def night_so_far() -> str:
        log = state / "last-run.log"
        return log.read_text(errors="replace")[-3000:] if log.exists() else "(no last-run.log)"

    doomed = []
    try:
        deadline = time.monotonic() + 600
        while not any("stages.prepare" in command_line(process) for process in of_the_night()):
            assert night.poll() is None and time.monotonic() < deadline, \
                f"prepare never ran:\n{night_so_far()}"
            time.sleep(0.5)
        doomed = of_the_night()
        os.kill(night.pid, signal.SIGTERM)
        _, left = psutil.wait_procs(doomed, timeout=30)
        assert left == [], [command_line(process)[:100] for process in left]
    finally:
        for process in [*doomed, *of_the_night()]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        night.wait()
        seaweed.stop(state / "seaweedfs")


# Fast checks of the pieces, without Airflow or storage.

def test_a_fresh_clone_continues_the_published_branch_instead_of_starting_its_own(tmp_path):
    published = tmp_path / "published"
    published.mkdir()
    commit = [
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "--quiet",
        "--allow-empty",
        "-m",
    ]
    for args in (["init", "--quiet", "--initial-branch", "main"], [*commit, "code"],
                 ["branch", "nightly"], [*commit, "more code"]):
        git(*args, cwd=published)
    night = branch_tip(published, "nightly")
    clone, single = tmp_path / "clone", tmp_path / "single"
    git("clone", "--quiet", str(published), str(clone), cwd=tmp_path)
    git("clone", "--quiet", "--single-branch", str(published), str(single), cwd=tmp_path)
    assert branch_tip(clone, "nightly") is None
    assert branch_tip(single, "nightly", ref_prefix="refs/remotes/origin") is None

    follow_published_branch(clone, "nightly", git_remote=None)        # from origin's copy
    follow_published_branch(single, "nightly", git_remote=str(published))  # fetched
    assert branch_tip(clone, "nightly") == branch_tip(single, "nightly") == night

    git("branch", "--quiet", "--delete", "nightly", cwd=single)
    follow_published_branch(single, "versions", git_remote=str(published))  # no night there yet
    assert branch_tip(single, "versions") is None
    with pytest.raises(
        SlimlineError,
        match=r"^publish: git fetch nightly from .*missing failed in "
        r".*: fatal: .* does not appear to be a git repository$",
    ):
        follow_published_branch(single, "nightly", git_remote=str(tmp_path / "missing"))


def test_dvc_in_process_streams_the_stage_output_scrubbed_and_gives_its_exit(tmp_path):
    """The step runs DVC in its own process: what the stage prints (a child of DVC, writing to the
    inherited descriptors) and DVC's own error must still reach the task log in order, scrubbed,
    with the exit readable as before; afterwards the step's stdout works again. Run as a step
    runs, in a process of its own (under pytest, DVC's logger would write to pytest's capture)."""
    git("init", "-q", cwd=tmp_path)
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  shout:\n    cmd: echo key-XYZ from the stage; echo to stderr >&2; exit 3\n")
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from slimline.nightly.commands import run_dvc_in_process\n"
        "where = Path(sys.argv[1])\n"
        "assert run_dvc_in_process(['init', '-q'], where, lambda line: None) == 0\n"
        "lines = []\n"
        "code = run_dvc_in_process(['repro', 'shout'], where, lines.append, ['key-XYZ'])\n"
        "print(json.dumps({'code': code, 'lines': lines}))\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    echoed, last = done.stdout.rstrip().rsplit("\n", 1)
    result = json.loads(last)  # the step's own print, after DVC: stdout is its own again
    lines = result["lines"]
    assert result["code"] != 0
    assert lines.index("*** from the stage") < lines.index("to stderr")
    assert any("exited with 3" in line for line in lines), lines  # what step.py classifies
    assert "key-XYZ" not in done.stdout + done.stderr and "*** from the stage" in echoed
