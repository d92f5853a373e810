"""One stage of one run, as a runner executes it (the same command locally or in a container):

    python -m slimline.nightly.step <stage> [--upstream FILE] [--result FILE]   (cwd: the workspace)

1. take the upstream stages' results (their dvc.lock entries and git-tracked outputs such as
   metrics), so this machine knows exactly which artifacts to fetch;
2. `dvc repro --pull --single-item <stage>`: fetch missing deps from the remote, then either
   restore the stage from DVC's run cache (same code, params and deps ran before: nothing is
   recomputed) or run its command;
3. `dvc push --run-cache <stage>`: its outputs and run-cache entry go to the remote (the entry
   written by save_run_cache_entry when DVC writes none);
4. write this stage's result for the downstream tasks.

DVC runs in this process (its CLI entry point, slimline.nightly.commands.run_dvc_in_process):
one DVC import per step instead of one per command. Everything DVC and the stage print goes to
stdout, which the runner streams into the task log.
An unreachable storage endpoint is retried with back-off inside the step (slimline.nightly.retry).
Exit codes: 0 done, 2 bad input (the same input would fail again: do not retry),
3 storage refused or unreachable, 1 anything else.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import re
import sys
from pathlib import Path

import yaml

from slimline.artifact.atomic import write_json
from slimline.errors import SlimlineError
from slimline.nightly import fence
from slimline.nightly.commands import end_group_on_sigterm, run_dvc_in_process
from slimline.nightly.pipeline import load_pipeline
from slimline.nightly.retry import (
    RetryPolicy,
    TransientStorageError,
    limit_request_retries,
    with_retries,
)
from slimline.nightly.storage import S3Settings, configure_dvc_remote, explain_s3_error

EXIT_BAD_INPUT, EXIT_STORAGE, EXIT_FAILED = 2, 3, 1
RESTORED_MARKER = "is cached - skipping run"  # restored from the run cache: its entry is here
REUSED_MARKERS = (RESTORED_MARKER, "didn't change, skipping", "Pulling data for")
S3_CODES = re.compile(r"\b(InvalidAccessKeyId|SignatureDoesNotMatch|AccessDenied|NoSuchBucket|"
                      r"Forbidden|ExpiredToken)\b")
# Failures that waiting can fix: the endpoint is down, restarting or overloaded.
UNREACHABLE = re.compile(r"Could not connect|Connection refused|Name or service not known|"
                         r"EndpointConnectionError|timed out|Connection reset|ServiceUnavailable|"
                         r"SlowDown|Service Unavailable|Bad Gateway", re.IGNORECASE)
UNREACHABLE_REASON = "the storage endpoint cannot be reached"


class StepError(Exception):
    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def apply_upstream(workspace: Path, results: list[dict]) -> None:
    """Merge upstream lock entries into dvc.lock and write their git-tracked outputs.

    On the machine that ran them this changes nothing; elsewhere it is what lets DVC pull them.
    """
    if not results:
        return
    lock_file = workspace / "dvc.lock"
    before = yaml.safe_load(lock_file.read_text()) if lock_file.is_file() else None
    lock = copy.deepcopy(before) if before else {"schema": "2.0", "stages": {}}
    for result in results:
        lock["stages"][result["stage"]] = result["lock"]
        for relative, text in result.get("files", {}).items():
            target = workspace / relative
            if not target.is_file() or target.read_text() != text:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
    if lock != before:
        lock_file.write_text(yaml.safe_dump(lock, sort_keys=False))


def stage_result(workspace: Path, stage: str, reused: bool) -> dict:
    lock = yaml.safe_load((workspace / "dvc.lock").read_text())
    entry = lock["stages"][stage]
    uncached = [output.path for output in load_pipeline(workspace / "dvc.yaml")[stage].outputs
                if not output.cached]
    files = {}
    for relative in uncached:
        path = workspace / relative
        if path.is_file():
            files[relative] = path.read_text()
    return {"stage": stage, "lock": entry, "files": files, "reused": reused}


def storage_reason(output: list[str], settings: S3Settings) -> str | None:
    text = "\n".join(output)
    code = S3_CODES.search(text)
    if code:
        return explain_s3_error(code.group(1), settings.credentials_from)
    if UNREACHABLE.search(text):
        return UNREACHABLE_REASON
    return None


def _dvc(arguments: list[str], workspace: Path, settings: S3Settings) -> list[str]:
    """Run `dvc <arguments>` (in this process: one DVC import per step, not one per command);
    its output lines, or raise what went wrong, classified for retries and exit codes."""
    output: list[str] = []
    print(f"$ dvc {' '.join(arguments)}", flush=True)
    code = run_dvc_in_process(arguments, workspace, output.append, settings.secrets())
    if code == 0:
        return output
    stage_exit = re.search(r"exited with (\d+)", "\n".join(output))
    if stage_exit:
        stage_code = int(stage_exit.group(1))
        # The stage's own one-line error (stage contract: "slimline <stage>: error: ...").
        said = [found.group(1) for line in output
                if (found := re.match(r"slimline \w+: (?:unexpected )?error: (.*)", line))]
        raise StepError(f"failed (exit {stage_code}): {said[-1] if said else 'see its log above'}",
                        EXIT_BAD_INPUT if stage_code == EXIT_BAD_INPUT else EXIT_FAILED)
    reason = storage_reason(output, settings)
    verb = arguments[0]
    if reason == UNREACHABLE_REASON:
        raise TransientStorageError(reason)
    if reason:
        raise StepError(f"dvc {verb} with {settings.where} failed: {reason}", EXIT_STORAGE)
    raise StepError(f"dvc {verb} failed (exit {code}): {last_error(output)}", EXIT_FAILED)


def last_error(output: list[str]) -> str:
    """DVC's last ERROR line; one that ends in ':' with the line it announces (a lock's holder:
    "... is being blocked by:" / "(PID 4242): dvc repro ...")."""
    errors = [index for index, line in enumerate(output) if line.startswith("ERROR")]
    if not errors:
        return "see the output above"
    line = output[errors[-1]]
    if line.endswith(":"):
        following = [text.strip() for text in output[errors[-1] + 1:] if text.strip()]
        line = f"{line} {following[0]}" if following else line
    return line


def push_uncached_outputs(workspace: Path, stage: str, settings: S3Settings) -> None:
    """Put the stage's `cache: false` outputs (metrics) in the cache and push them.

    DVC's run cache records these outputs and restores them from the cache, but neither
    `dvc repro` nor `dvc push --run-cache` reliably stores or sends their objects (measured with
    DVC 3.67: "Missing cache files" at the next night, which then re-ran the stage). Without them
    a run-cache entry is useless on another machine or in a fresh worktree. So: add each file to
    the local cache under the hash dvc.lock records, and send it the way `dvc push` does.
    """
    from dvc.repo import Repo
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_objects.fs.local import LocalFileSystem

    entry = yaml.safe_load((workspace / "dvc.lock").read_text())["stages"][stage]
    uncached = {output.path for output in load_pipeline(workspace / "dvc.yaml")[stage].outputs
                if not output.cached}
    recorded = {out["path"]: out["md5"] for out in entry.get("outs", [])
                if out["path"] in uncached and out.get("hash", "md5") == "md5" and "md5" in out}
    if not recorded:
        return
    try:
        with Repo(str(workspace)) as repo:
            for relative, md5 in recorded.items():
                path = workspace / relative
                if path.is_file() and hashlib.md5(path.read_bytes()).hexdigest() == md5:
                    repo.cache.local.add(str(path), LocalFileSystem(), md5)
            result = repo.cloud.push([HashInfo("md5", md5) for md5 in recorded.values()])
    except Exception as exc:  # DVC and botocore raise many types; the message says what failed
        reason = storage_reason([str(exc)], settings) or str(exc).splitlines()[0]
        if reason == UNREACHABLE_REASON:
            raise TransientStorageError(reason) from None
        raise StepError(f"pushing the metrics of {stage} to {settings.where} failed: {reason}",
                        EXIT_STORAGE) from None
    if result.failed:  # refused keys fail the `dvc push` before this; what is left is transport
        raise TransientStorageError(f"{len(result.failed)} file(s) not uploaded")
    print(f"metrics of {stage} pushed: {', '.join(sorted(recorded))}", flush=True)


def save_run_cache_entry(workspace: Path, stage: str) -> None:
    """Record the stage that just ran in DVC's run cache, as `dvc commit` would.

    `dvc repro` writes no run-cache entry for a stage with a `cache: false` output that is neither
    a metric nor a plot (DVC 3.67, Stage.run): evaluate's metrics/predictions.json, kept in git so
    the next night can pair against it. Without the entry evaluate ran again every night. The
    entry names the outputs dvc.lock records; no output is touched.
    """
    from dvc.repo import Repo

    with Repo(str(workspace)) as repo:
        repo.stage_cache.save(repo.stage.collect(stage)[0])


def run_step(stage: str, workspace: Path, upstream: list[dict]) -> dict:
    settings = S3Settings.from_env()
    policy = RetryPolicy.from_env()
    fence.enter(workspace, stage)
    configure_dvc_remote(workspace, settings)
    apply_upstream(workspace, upstream)

    def retried(action, what: str):
        fence.check(workspace, stage)  # a written-off try pushes nothing
        try:
            return with_retries(action, f"{what} with {settings.where}", policy,
                                lambda line: print(line, flush=True))
        except SlimlineError as exc:
            raise StepError(str(exc), EXIT_STORAGE) from None

    # A repro that ran its stage and then failed to reach the remote is cheap to repeat: DVC
    # sees the outputs match the lock and only retries the transfer.
    output = retried(lambda: _dvc(["repro", "--pull", "--single-item", stage], workspace, settings),
                     "dvc repro --pull")
    reused = any(marker in line for line in output for marker in REUSED_MARKERS)
    if not any(RESTORED_MARKER in line for line in output):  # ran now, or in a retried attempt
        save_run_cache_entry(workspace, stage)
    retried(lambda: _dvc(["push", "--run-cache", stage], workspace, settings), "dvc push")
    retried(
        lambda: push_uncached_outputs(workspace, stage, settings), f"pushing the metrics of {stage}"
    )
    return stage_result(workspace, stage, reused)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m slimline.nightly.step")
    parser.add_argument("stage")
    parser.add_argument("--upstream", type=Path, help="JSON list of the upstream stages' results")
    parser.add_argument("--result", type=Path, help="where to write this stage's result (JSON)")
    args = parser.parse_args(argv)
    end_group_on_sigterm()
    limit_request_retries()
    workspace = Path.cwd()
    try:
        upstream = json.loads(args.upstream.read_text()) if args.upstream else []
        result = run_step(args.stage, workspace, upstream)
    except StepError as exc:
        print(f"slimline nightly: stage {args.stage}: {exc}", file=sys.stderr, flush=True)
        sys.exit(exc.exit_code)
    except fence.WrittenOff as exc:
        print(f"slimline nightly: stage {args.stage}: {exc}", file=sys.stderr, flush=True)
        sys.exit(EXIT_FAILED)
    except SlimlineError as exc:
        print(f"slimline nightly: stage {args.stage}: {exc}", file=sys.stderr, flush=True)
        sys.exit(EXIT_STORAGE if str(exc).startswith("storage") else EXIT_BAD_INPUT)
    if args.result:
        write_json(args.result, result)
    print(
        f"slimline nightly: stage {args.stage} "
        f"{'reused from the run cache' if result['reused'] else 'ran'}"
        f"; outputs pushed to {S3Settings.from_env().where}",
        flush=True,
    )


if __name__ == "__main__":
    main()
