"""One workspace per run: a git worktree of the project at the run's revision.

Two runs never share a DVC lock, a cache or an output file, because each has its own checkout
(`git worktree add`, cheap: it shares the repository's objects). The run's overrides are applied
to the worktree's params.yaml, so DVC tracks them like any params change, and dvc.lock records
exactly what ran. Layout under the state folder (SLIMLINE_STATE_DIR, default <repo>/.nightly):

  workspaces/<run>/   the worktree: code, params, DVC outputs, dvc.lock
  runs/<run>/         the run's task logs (every command a task ran, with its output)
"""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from slimline.errors import SlimlineError
from slimline.nightly.commands import run_quiet


def run_key(run_id: str) -> str:
    """A folder name for a run id (`manual__2026-11-27T02:00:00+00:00` has ':' and '+')."""
    key = re.sub(r"[^A-Za-z0-9._-]+", "-", run_id).strip("-.")
    if not key:
        raise SlimlineError(f"run id {run_id!r} gives an empty workspace name")
    return key


@dataclass(frozen=True)
class Workspace:
    repo: Path       # the project repository the run was cut from
    root: Path       # the run's git worktree, where DVC runs
    run_dir: Path    # the run's task logs
    key: str
    revision: str    # the commit the run builds

    def task_log(self, task: str) -> Path:
        return self.run_dir / "logs" / f"{task}.log"


def resolve_revision(repo: Path, ref: str = "HEAD") -> str:
    return run_quiet(["git", "rev-parse", "--verify", f"{ref}^{{commit}}"], repo,
                     what=f"resolving git revision {ref!r}").strip()


def _is_worktree_at(path: Path, revision: str) -> bool:
    if not (path / ".git").exists():
        return False
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True)
    return head.returncode == 0 and head.stdout.strip() == revision


def ensure_workspace(repo: Path, state_dir: Path, run_id: str, revision: str,
                     params: dict | None) -> Workspace:
    """Create the run's worktree, or reuse it (a retried task, a second task on this machine);
    `params`, when the run has overrides, is its params.yaml (slimline.nightly.trigger made it).

    Idempotent on purpose: any task of the run can call it, so tasks could land on different
    machines that share nothing but the git repository and the DVC remote.
    """
    key = run_key(run_id)
    root = state_dir / "workspaces" / key
    workspace = Workspace(repo, root, state_dir / "runs" / key, key, revision)
    workspace.run_dir.mkdir(parents=True, exist_ok=True)
    if not _is_worktree_at(root, revision):
        if root.exists():  # a half-made worktree from a killed attempt
            subprocess.run(["git", "worktree", "remove", "--force", str(root)], cwd=repo,
                           capture_output=True)
            shutil.rmtree(root, ignore_errors=True)
        run_quiet(["git", "worktree", "prune"], repo)
        root.parent.mkdir(parents=True, exist_ok=True)
        run_quiet(["git", "worktree", "add", "--detach", str(root), revision], repo,
                  what="creating the run's git worktree")
    if params:
        (root / "params.yaml").write_text(
            "# params.yaml of this run: the committed file with the run's overrides applied\n"
            + yaml.safe_dump(params, sort_keys=False))
    return workspace


def remove_old_workspaces(state_dir: Path, repo: Path, keep: int, current: str) -> list[str]:
    """Delete all but the newest `keep` run worktrees (their artifacts are in the remote)."""
    folder = state_dir / "workspaces"
    if keep <= 0 or not folder.is_dir():
        return []
    runs = sorted((p for p in folder.iterdir() if p.is_dir() and p.name != current),
                  key=lambda p: p.stat().st_mtime, reverse=True)
    removed = []
    for old in runs[max(keep - 1, 0):]:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(old)], cwd=repo, capture_output=True
        )
        shutil.rmtree(old, ignore_errors=True)
        removed.append(old.name)
    if removed:
        subprocess.run(["git", "worktree", "prune"], cwd=repo, capture_output=True)
    return removed
