"""Publish a run that passed evaluate's gate: the last task of the nightly DAG.

1. compare with the previous night (paired accuracy change, `dvc metrics diff`, the trend) and
   write that to publish's own file, night/comparison.md (+ night/trend.png), never into
   evaluate's report: editing a DVC output after its stage pushed it would orphan the pushed
   version in the remote;
2. push every artifact (and the run cache) to the DVC remote, so nothing tagged is missing there;
3. commit dvc.lock, params.yaml, the metrics and night/ to the versioning branch (default
   `nightly`) — first parent the previous night, second parent the source revision — and tag the
   night `nightly/YYYY-MM-DD` (`.2`, `.3`... when it is re-run the same day).

The branch moves by compare-and-swap, so two runs publishing at once both land, one after the
other, each compared with the night before it. A fresh clone can `git checkout <tag>` and
`dvc pull` exactly that night's model.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from slimline.artifact.atomic import write_json, write_text
from slimline.errors import SlimlineError
from slimline.nightly import fence
from slimline.nightly.commands import end_group_on_sigterm, run_quiet, run_streaming
from slimline.nightly.pipeline import load_pipeline
from slimline.nightly.retry import (
    RetryPolicy,
    TransientStorageError,
    limit_request_retries,
    with_retries,
)
from slimline.nightly.step import UNREACHABLE_REASON, apply_upstream, storage_reason
from slimline.nightly.storage import S3Settings, configure_dvc_remote
from slimline.report.trend import COMPARISON_FILE, GATE_KEY, TREND_PLOT, night_tag, nights_section

REPORT = Path("reports/report.md")
GATE_METRICS = Path("metrics/evaluate.json")
COMPARISON_HEADING = "## Compared with the previous night"
COMPARISON_TITLE = "# Slimline night over night"
ZERO_OID = "0" * 40
TASK = "publish"
ATTEMPTS = 5


@dataclass(frozen=True)
class Published:
    tag: str
    commit: str
    branch: str
    previous: str | None
    workspace: str
    report: str
    comparison: str
    stage_logs: str
    task_logs: str
    model: str
    remote: str


def gate_verdict(workspace: Path) -> tuple[bool, str]:
    """(passed, why). A metrics file without `gate_passed` counts as passed, and says so."""
    path = workspace / GATE_METRICS
    if not path.is_file():
        raise SlimlineError(f"publish: {GATE_METRICS} is missing in {workspace}; did evaluate run?")
    metrics = json.loads(path.read_text())
    if GATE_KEY not in metrics:
        return True, f"{GATE_METRICS} has no {GATE_KEY} key: treated as passed"
    passed = bool(metrics[GATE_KEY])
    return (
        passed,
        f"evaluate's gate {'passed' if passed else 'failed'} "
        f"({GATE_METRICS}: {GATE_KEY} = {metrics[GATE_KEY]})",
    )


def git_identity() -> dict[str, str]:
    name = os.environ.get("SLIMLINE_GIT_NAME", "Slimline nightly")
    email = os.environ.get("SLIMLINE_GIT_EMAIL", "slimline-nightly@localhost")
    return {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}


def branch_tip(repo: Path, branch: str, ref_prefix: str = "refs/heads") -> str | None:
    result = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{ref_prefix}/{branch}"],
                            cwd=repo, capture_output=True, text=True)
    return result.stdout.strip() or None


def follow_published_branch(repo: Path, branch: str, git_remote: str | None) -> None:
    """Start a missing local versioning branch where the published one is.

    A fresh clone has the branch only as origin's (or on the remote it publishes to). Starting a
    new branch instead would compare tonight with nothing and make the push a second, unrelated
    history that the remote refuses.
    """
    if branch_tip(repo, branch):
        return
    if git_remote:
        try:
            run_quiet(["git", "fetch", "--quiet", git_remote,
                       f"refs/heads/{branch}:refs/heads/{branch}"],
                      repo, what=f"publish: git fetch {branch} from {git_remote}")
        except SlimlineError as exc:
            if "couldn't find remote ref" not in str(exc):  # else the remote has had no night yet
                raise
        return
    cloned = branch_tip(repo, branch, ref_prefix="refs/remotes/origin")
    if cloned:  # (fails only if a run publishing beside this one created the branch first: fine)
        subprocess.run(["git", "update-ref", f"refs/heads/{branch}", cloned, ZERO_OID], cwd=repo,
                       capture_output=True)


def comparison_section(workspace: Path, previous: str | None, previous_name: str) -> str:
    nights = nights_section(workspace, previous)  # paired interval vs last night + the trend
    if previous is None:
        return (f"{COMPARISON_HEADING}\n\nThe first published night: nothing to compare with.\n\n"
                f"{nights}\n")
    diff = run_quiet(["dvc", "metrics", "diff", previous, "--md", "--precision", "4"], workspace,
                     what="dvc metrics diff")
    table = diff.strip() or "No metric changed."
    return (f"{COMPARISON_HEADING}\n\n{nights}\n`dvc metrics diff` against {previous_name} "
            f"({previous[:10]}):\n\n{table}\n")


def write_comparison(workspace: Path, section: str) -> Path:
    """night/comparison.md: publish's own output (in git), rewritten whole on every attempt."""
    path = workspace / COMPARISON_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, f"{COMPARISON_TITLE}\n\nThe night's models, gate and lineage: `{REPORT}` "
                     f"(a DVC output: `dvc pull {REPORT.parent}`).\n\n{section}")
    return path


def _dvc_remote(arguments: list[str], workspace: Path, settings: S3Settings,
                on_line: Callable[[str], None]) -> None:
    """Run a dvc command that talks to the remote, retrying while the endpoint is unreachable."""
    def attempt() -> None:
        output: list[str] = []

        def keep(line: str) -> None:
            output.append(line)
            on_line(line)

        on_line(f"$ dvc {' '.join(arguments)}")
        if run_streaming(["dvc", *arguments], workspace, dict(os.environ), keep, settings.secrets(),
                         own_group=False) == 0:
            return
        reason = storage_reason(output, settings) or next(
            (line for line in reversed(output) if line.startswith("ERROR")), "see the output above")
        if reason == UNREACHABLE_REASON:
            raise TransientStorageError(reason)
        raise SlimlineError(f"publish: dvc {arguments[0]} to {settings.where} failed: {reason}; "
                            "nothing was committed or tagged")

    try:
        with_retries(
            attempt, f"dvc {arguments[0]} to {settings.where}", RetryPolicy.from_env(), on_line
        )
    except SlimlineError as exc:
        if str(exc).startswith("publish:"):
            raise
        raise SlimlineError(f"publish: {exc}; nothing was committed or tagged") from None


def _tracked_outputs(workspace: Path) -> list[str]:
    """Files that live in git rather than in the DVC cache: the lock, params, metrics, and
    publish's own comparison with the previous night."""
    paths = ["dvc.lock", "params.yaml", str(COMPARISON_FILE), str(TREND_PLOT)]
    for stage in load_pipeline(workspace / "dvc.yaml").values():
        paths += [
            out.path for out in stage.outputs if not out.cached and (workspace / out.path).exists()
        ]
    return paths


def _commit(workspace: Path, previous: str | None, message: str) -> str:
    env = {**os.environ, **git_identity()}
    run_quiet(["git", "add", "--force", "--", *_tracked_outputs(workspace)], workspace, env)
    tree = run_quiet(["git", "write-tree"], workspace, env).strip()
    source = run_quiet(["git", "rev-parse", "HEAD"], workspace, env).strip()
    parents = (["-p", previous] if previous else []) + ["-p", source]
    return run_quiet(["git", "commit-tree", tree, *parents, "-m", message], workspace, env).strip()


def _create_tag(repo: Path, date: str, commit: str, message: str) -> str:
    env = {**os.environ, **git_identity()}
    for attempt in range(1, 100):
        tag = f"nightly/{date}" if attempt == 1 else f"nightly/{date}.{attempt}"
        # `git tag` without --force refuses an existing name, so concurrent runs cannot clash.
        result = subprocess.run(["git", "tag", "--annotate", tag, commit, "--message", message],
                                cwd=repo, env=env, capture_output=True, text=True)
        if result.returncode == 0:
            return tag
        if "already exists" not in result.stderr:
            raise SlimlineError(f"publish: git tag {tag} failed: {result.stderr.strip()}")
    raise SlimlineError(f"publish: too many tags for {date}")


def shipped_model_path(workspace: Path) -> str:
    artifacts = (yaml.safe_load((workspace / "dvc.yaml").read_text()) or {}).get("artifacts") or {}
    models = [spec["path"] for spec in artifacts.values() if spec.get("type") == "model"]
    return models[0] if models else "models"


def publish(workspace: Path, run_dir: Path, settings: S3Settings, *, branch: str,
            date: str, run_id: str, on_line: Callable[[str], None] = print,
            git_remote: str | None = None) -> Published:
    repo = workspace  # a worktree shares its repository's branches and tags
    fence.enter(workspace, TASK)
    configure_dvc_remote(workspace, settings)
    follow_published_branch(repo, branch, git_remote)
    for _ in range(ATTEMPTS):
        previous = branch_tip(repo, branch)
        previous_tag = night_tag(repo, previous) if previous else None
        section = comparison_section(workspace, previous, previous_tag or f"the tip of {branch}")
        comparison = write_comparison(workspace, section)
        write_text(run_dir / "comparison.md", section)
        on_line(section)
        fence.check(workspace, TASK)  # a written-off try pushes, commits and tags nothing
        _dvc_remote(["push", "--run-cache"], workspace, settings, on_line)
        commit = _commit(workspace, previous, f"nightly {date}: run {run_id}")
        fence.check(workspace, TASK)
        moved = subprocess.run(["git", "update-ref", "-m", f"slimline nightly {run_id}",
                                f"refs/heads/{branch}", commit, previous or ZERO_OID],
                               cwd=repo, capture_output=True, text=True)
        if moved.returncode == 0:
            break
        on_line(f"publish: {branch} moved while publishing (another run?); retrying on its new tip")
    else:
        raise SlimlineError(f"publish: could not update branch {branch} after {ATTEMPTS} attempts")
    tag = _create_tag(repo, date, commit, f"Slimline nightly {date} (run {run_id})")
    if git_remote:
        run_quiet(["git", "push", git_remote, f"refs/heads/{branch}", f"refs/tags/{tag}"], repo,
                  what=f"git push to {git_remote}")
    published = Published(
        tag=tag,
        commit=commit,
        branch=branch,
        previous=previous,
        workspace=str(workspace),
        report=str(workspace / REPORT),
        comparison=str(comparison),
        stage_logs=str(workspace / "logs"),
        task_logs=str(run_dir / "logs"),
        model=str(workspace / shipped_model_path(workspace)),
        remote=settings.where,
    )
    write_json(run_dir / "published.json", asdict(published))
    return published


EXIT_GATE_FAILED, EXIT_STORAGE, EXIT_BAD_INPUT = 4, 3, 2


def main(argv: list[str] | None = None) -> None:
    """python -m slimline.nightly.publish --run-id ID --date YYYY-MM-DD --run-dir DIR
    (cwd: the workspace)"""
    parser = argparse.ArgumentParser(prog="python -m slimline.nightly.publish")
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--date", required=True, help="the night, YYYY-MM-DD (UTC)")
    parser.add_argument("--run-dir", type=Path, required=True, help="the run's log folder")
    parser.add_argument("--branch", default="nightly", help="the versioning branch")
    parser.add_argument("--git-remote", help="also push the branch and the tag to this git remote")
    parser.add_argument("--upstream", type=Path, help="JSON list of every stage's result (step.py)")
    args = parser.parse_args(argv)
    end_group_on_sigterm()
    limit_request_retries()
    workspace = Path.cwd()
    try:
        # Every stage's lock entry and metrics: on the machine that ran them a no-op, elsewhere
        # what makes this workspace's dvc.lock the whole night's.
        apply_upstream(workspace, json.loads(args.upstream.read_text()) if args.upstream else [])
        passed, why = gate_verdict(workspace)
        print(f"publish: {why}", flush=True)
        if not passed:
            print("publish: not publishing; the previous night stays the latest", flush=True)
            sys.exit(EXIT_GATE_FAILED)
        published = publish(workspace, args.run_dir, S3Settings.from_env(), branch=args.branch,
                            date=args.date, run_id=args.run_id, git_remote=args.git_remote,
                            on_line=lambda line: print(line, flush=True))
    except SlimlineError as exc:
        print(f"slimline nightly: {exc}", file=sys.stderr, flush=True)
        sys.exit(
            EXIT_STORAGE
            if " to s3://" in str(exc) or str(exc).startswith("storage")
            else EXIT_BAD_INPUT
        )
    print(
        f"publish: tagged {published.tag} ({published.commit[:10]}) on branch {published.branch}; "
        f"comparison with the previous night: {published.comparison}",
        flush=True,
    )


if __name__ == "__main__":
    main()
