"""Where a run's results are: `python -m slimline.nightly.summary --run-id ID [--state-dir DIR]`.

Prints the published tag, the report, the comparison with the previous night, the stage logs, the
task logs and the shipped model of one run, and how to fetch that model elsewhere — or, for a run
that did not publish, where its logs are and, last, the task that failed with its one-line error.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from slimline.nightly.workspace import run_key


def _failure(run_dir: Path) -> str | None:
    """The failed task and its error, as the DAG's on_failure_callback recorded them."""
    path = run_dir / "failure.json"
    if not path.is_file():
        return None
    failure = json.loads(path.read_text())
    return f"failed:    task {failure['task']} (try {failure['try']}): {failure['error']}"


def describe(state_dir: Path, run_id: str) -> tuple[bool, str]:
    """(published, text)."""
    key = run_key(run_id)
    workspace, run_dir = state_dir / "workspaces" / key, state_dir / "runs" / key
    published = run_dir / "published.json"
    if published.is_file():
        info = json.loads(published.read_text())
        return True, "\n".join(
            [
                f"published: {info['tag']} (commit {info['commit'][:10]} on branch "
                f"{info['branch']})",
                f"report:    {info['report']}",
                f"compared:  {info.get('comparison', '(not recorded)')} (with the previous night; "
                f"in git on {info['branch']})",
                f"stage logs: {info['stage_logs']}/<stage>.log",
                f"task logs: {info['task_logs']}/<task>.log (every command each task ran)",
                f"model:     {info['model']} (in the remote: {info['remote']})",
                f"elsewhere: git checkout {info['tag']} && "
                "python -m slimline.nightly.storage configure "
                "&& dvc pull  (with the storage variables set)",
            ]
        )
    failure = _failure(run_dir)
    if not workspace.exists():
        return False, "\n".join(filter(None, [
            f"run {run_id}: nothing published; it stopped before it had a workspace",
            failure or "failed:    before any task recorded why (see the output above)"]))
    evaluate_log = run_dir / "logs" / "evaluate.log"
    gate_failed = evaluate_log.is_file() and "gate failed" in evaluate_log.read_text()
    reason = ("evaluate's gate failed: nothing published (the report says why)" if gate_failed
              else "nothing published")
    return False, "\n".join(filter(None, [
        f"run {run_id}: {reason}",
        f"report:    {workspace / 'reports' / 'report.md'}",
        f"stage logs: {workspace / 'logs'}/<stage>.log",
        f"task logs: {run_dir / 'logs'}/<task>.log",
        failure,
    ]))


def latest_run(state_dir: Path, since: float = 0) -> str | None:
    """The newest run folder's name (a run key, which describe() accepts like a run id), among
    those changed at or after `since` (a Unix time)."""
    runs = (
        [p for p in (state_dir / "runs").glob("*") if p.is_dir() and p.stat().st_mtime >= since]
        if (state_dir / "runs").is_dir()
        else []
    )
    return max(runs, key=lambda p: p.stat().st_mtime).name if runs else None


def _last_line(path: Path | None) -> str:
    if path is None or not path.is_file():
        return ""
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines()
             if line.strip()]
    return lines[-1] if lines else ""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m slimline.nightly.summary")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--run-id")
    which.add_argument("--latest", action="store_true", help="the most recently started run")
    parser.add_argument("--state-dir", type=Path, default=Path(".nightly"))
    parser.add_argument("--since", type=float, default=0,
                        help="--latest: only a run that started at or after this Unix time")
    parser.add_argument("--output", type=Path,
                        help="the run's console output, quoted when no run started at all")
    args = parser.parse_args(argv)
    state_dir = args.state_dir.resolve()
    run_id = args.run_id or latest_run(state_dir, args.since)
    if run_id is None:
        print(f"no run started (none found in {state_dir})")
        if last := _last_line(args.output):
            print(f"failed:    {last}")
        sys.exit(1)
    ok, text = describe(state_dir, run_id)
    print(text)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
