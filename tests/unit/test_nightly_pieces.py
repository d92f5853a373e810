"""The nightly DAG end to end: real Airflow (`airflow dags test`), real DVC, a real SeaweedFS on
loopback with credentials required, and the real stages on a tiny configuration.

One SeaweedFS and one Airflow database serve the whole file; each run gets its own logical date,
so its run id, workspace and tag are predictable.
"""
from __future__ import annotations

import json

import pytest
import yaml

from slimline.errors import SlimlineError
from slimline.nightly.publish import gate_verdict
from slimline.nightly.step import apply_upstream
from slimline.nightly.storage import S3Settings, scrub
from slimline.nightly.workspace import run_key

# (test_containers.py and test_search_dag.py import these from here too)


def test_publish_follows_the_gate_and_treats_a_missing_verdict_as_passed(tmp_path):
    metrics = tmp_path / "metrics" / "evaluate.json"
    metrics.parent.mkdir()
    for content, expected in (({"gate_passed": 1}, True), ({"gate_passed": 0}, False), ({}, True)):
        metrics.write_text(json.dumps(content))
        passed, why = gate_verdict(tmp_path)
        assert passed is expected
    assert "no gate_passed key: treated as passed" in why


def test_upstream_results_rebuild_the_lock_and_metrics_on_another_machine(tmp_path):
    result = {"stage": "prepare", "lock": {"cmd": "python -m stages.prepare", "outs": []},
              "files": {"metrics/prepare.json": '{"teacher_val_top1": 0.9}'}}
    apply_upstream(tmp_path, [result])
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())
    assert lock["stages"]["prepare"] == result["lock"]
    assert (tmp_path / "metrics" / "prepare.json").read_text() == result["files"][
        "metrics/prepare.json"
    ]


def test_run_ids_become_safe_folder_names():
    assert (
        run_key("manual__2026-11-27T02:00:00.123+00:00") == "manual__2026-11-27T02-00-00.123-00-00"
    )
    assert run_key("scheduled__2026-11-27T02:00:00+00:00") != run_key(
        "manual__2026-11-27T02:00:00+00:00"
    )


def test_output_is_scrubbed_of_keys():
    settings = S3Settings(bucket="b", access_key="AKIAEXAMPLE", secret_key="s3cr3t-value")
    assert scrub("key AKIAEXAMPLE secret s3cr3t-value", settings.secrets()) == "key *** secret ***"
    assert "s3cr3t" not in repr(settings)
def test_back_off_doubles_is_capped_and_is_configured_in_the_environment():
    from slimline.nightly.retry import RetryPolicy, TransientStorageError, with_retries

    policy = RetryPolicy.from_env(
        {
            "SLIMLINE_S3_ATTEMPTS": "5",
            "SLIMLINE_S3_RETRY_DELAY_SECONDS": "3",
            "SLIMLINE_S3_MAX_RETRY_DELAY_SECONDS": "10",
        }
    )
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [3, 6, 10, 10]
    slept, said, calls = [], [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise TransientStorageError("the storage endpoint cannot be reached")
        return "done"

    assert with_retries(flaky, "dvc push", policy, said.append, slept.append) == "done"
    assert slept == [3, 6] and len(said) == 2 and "attempt 2/5" in said[1]
    with pytest.raises(SlimlineError, match="SLIMLINE_S3_ATTEMPTS = 'many' is not a number"):
        RetryPolicy.from_env({"SLIMLINE_S3_ATTEMPTS": "many"})


# Credentials: the message names the setting to fix and never shows the secret.


def test_a_failed_runs_summary_ends_with_the_failed_task_and_its_one_line_error(tmp_path):
    from slimline.nightly.summary import describe, latest_run

    run_dir = tmp_path / "runs" / run_key("manual__2026-11-30T02:00:00+00:00")
    run_dir.mkdir(parents=True)
    (run_dir / "failure.json").write_text(json.dumps(
        {"task": "setup_workspace", "try": 1, "error": "the storage rejected the credentials"}))
    published, text = describe(tmp_path, "manual__2026-11-30T02:00:00+00:00")
    assert not published
    assert text.splitlines()[-1] == (
        "failed:    task setup_workspace (try 1): the storage rejected the credentials")
    assert "before it had a workspace" in text
    assert latest_run(tmp_path) == run_dir.name
    assert latest_run(tmp_path, since=run_dir.stat().st_mtime + 60) is None  # an older night


def test_a_night_that_never_started_quotes_the_last_line_of_its_output(tmp_path, capsys):
    from slimline.nightly.summary import main

    output = tmp_path / "last-run.log"
    output.write_text("Traceback (most recent call last):\n  ...\nValueError: bad conf\n\n")
    with pytest.raises(SystemExit) as exit_code:
        main(["--latest", "--state-dir", str(tmp_path), "--output", str(output)])
    assert exit_code.value.code == 1
    assert capsys.readouterr().out.splitlines()[-1] == "failed:    ValueError: bad conf"


def test_a_step_whose_try_was_written_off_after_its_repro_pushes_nothing(tmp_path, monkeypatch):
    from slimline.nightly import fence, step

    monkeypatch.setenv(fence.TRY_VARIABLE, "1:first")
    monkeypatch.setenv("SLIMLINE_S3_BUCKET", "bucket")
    monkeypatch.setattr(step, "configure_dvc_remote", lambda *args: None)
    monkeypatch.setattr(step, "save_run_cache_entry", lambda *args: None)
    fence.claim(tmp_path, "prepare", "1:first")
    ran = []

    def dvc(arguments, *args):
        ran.append(arguments[0])
        fence.claim(tmp_path, "prepare", "2:second")  # Airflow retried it meanwhile
        return []

    monkeypatch.setattr(step, "_dvc", dvc)
    with pytest.raises(fence.WrittenOff):
        step.run_step("prepare", tmp_path, [])
    assert ran == ["repro"]


def test_a_failure_line_names_the_stage_once_and_a_locks_holder():
    from slimline.nightly.step import last_error
    from slimline.nightly.tasks import failure_line

    output = ["Running stage 'prepare':",
              "ERROR: failed to reproduce 'prepare': 'metrics/prepare.json' is busy, it is being "
              "blocked by:", "  (PID 4242): dvc repro --pull --single-item prepare", "",
              "If there are no processes with such PIDs, you can manually remove '.dvc/tmp/rwlock'"
              " and try again."]
    said = f"slimline nightly: stage prepare: dvc repro failed (exit 1): {last_error(output)}"
    line = failure_line("stage prepare", said)
    assert line.count("stage prepare") == 1 and line.startswith("stage prepare: dvc repro failed")
    assert line.endswith("is being blocked by: (PID 4242): dvc repro --pull --single-item prepare")
    assert failure_line("publish", "push refused") == "publish: push refused"


def test_dvcs_git_hints_are_not_relayed():
    from slimline.nightly.commands import DvcHints

    hints = DvcHints()
    output = ["Updating lock file 'dvc.lock'", "", "To track the changes with git, run:", "",
              "\tgit add dvc.lock", "", "To enable auto staging, run:", "",
              "\tdvc config core.autostage true", "stage prepare finished in 3.1 s"]
    kept = [line for line in output if not hints.drop(line)]
    assert kept == ["Updating lock file 'dvc.lock'", "", "stage prepare finished in 3.1 s"]


def test_a_run_that_publishes_after_a_failure_drops_its_failure_record(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from slimline.nightly import tasks

    run_dir = tmp_path / "runs" / "manual"
    (tmp_path / "dvc.yaml").write_text("stages:\n  prepare:\n    cmd: python -m stages.prepare\n")
    run_dir.mkdir(parents=True)
    (run_dir / "failure.json").write_text('{"task": "prepare", "try": 1, "error": "lock"}')
    workspace = SimpleNamespace(root=tmp_path, run_dir=run_dir)
    published = {"tag": "nightly/2026-12-04", "report": "r", "comparison": "c",
                 "stage_logs": "l", "model": "m"}
    monkeypatch.setattr(tasks, "_workspace_for", lambda context, config: workspace)
    monkeypatch.setattr(tasks, "_run_job", lambda *args: (
        run_dir / "published.json").write_text(json.dumps(published)))
    ti = SimpleNamespace(xcom_pull=lambda task_ids: None)
    when = SimpleNamespace(strftime=lambda form: "2026-12-04")
    assert tasks.publish(str(tmp_path), ti=ti, run_id="manual", logical_date=when,
                         dag_run=None) == published
    assert not (run_dir / "failure.json").exists()
