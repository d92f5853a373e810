"""A task log a person can read: the stage's own lines, one record per line, no progress bar
redrawn hundreds of times (a real command through the task's real runner)."""
from __future__ import annotations

import textwrap
from types import SimpleNamespace

from slimline.nightly import tasks
from slimline.nightly.workspace import Workspace

# A stage as the training loop draws it: tqdm's bar on stderr, log lines on stdout between.
STAGE = """
import sys
from tqdm import tqdm
for step in tqdm(range(300), desc="teacher 1/1", mininterval=0):
    if step % 100 == 0:
        print(f"stage line {step}", flush=True)
"""


def test_a_task_log_holds_the_stages_lines_and_not_its_progress_bar(tmp_path, monkeypatch):
    (tmp_path / "stage_with_bar.py").write_text(textwrap.dedent(STAGE))
    monkeypatch.setenv("SLIMLINE_S3_BUCKET", "unused")
    monkeypatch.setattr(tasks, "_runner_name", lambda config: "local")
    lines = []
    monkeypatch.setattr(tasks.log, "info",
                        lambda form, *args: lines.append(form % args if args else form))
    workspace = Workspace(repo=tmp_path, root=tmp_path, run_dir=tmp_path / "run", key="run",
                          revision="HEAD")
    config = tasks._config(str(tmp_path))
    tasks._run_job(config, "prepare", ["stage_with_bar"], workspace,
                   SimpleNamespace(try_number=1, id="first"))
    output = lines[1:]  # after the task's own line naming the runner and the log
    assert output == ["stage line 0", "stage line 100", "stage line 200"], output[:20]
    assert workspace.task_log("prepare").read_text().splitlines() == output
