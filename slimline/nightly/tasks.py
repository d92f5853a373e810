"""The Airflow task callables of dags/slimline_nightly.py (the only module here that knows Airflow).

setup_workspace  validate the run's overrides and the storage, create the run's worktree
stage_task       one dvc.yaml stage through the configured runner (pull deps, repro, push outs)
publish          through the runner: gate check, push, versioning branch + tag, comparison
search           (slimline_search DAG) the budget-driven search for a target, in the run's workspace
record_failure   every task's on_failure_callback: the failed task and its one-line error, kept
                 in the run's folder (runs/<run>/failure.json) for the summary of the night

Failures that a retry cannot fix (bad overrides, refused credentials, a stage's bad-input exit)
raise AirflowFailException, so the run fails at once instead of retrying for an hour.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from airflow.sdk.exceptions import (
    AirflowFailException,
    AirflowNotFoundException,
    AirflowSkipException,
)

from slimline.errors import SlimlineError
from slimline.nightly import fence
from slimline.nightly.config import NightlyConfig
from slimline.nightly.overrides import finite_numbers, normalise
from slimline.nightly.pipeline import load_pipeline
from slimline.nightly.runner import Job, JobFailed, get_runner
from slimline.nightly.storage import S3Settings, check_access
from slimline.nightly.trigger import check_conf_keys, check_search, params_with_overrides
from slimline.nightly.workspace import (
    ensure_workspace,
    remove_old_workspaces,
    resolve_revision,
    run_key,
)

log = logging.getLogger("slimline.nightly")
SETUP_TASK = "setup_workspace"
PERMANENT_EXIT_CODES = {2}      # a stage's bad input: the same input fails again
GATE_FAILED_EXIT_CODE = 4


def _config(project: str) -> NightlyConfig:
    """`project` is the DAG file's project folder; SLIMLINE_REPO overrides it."""
    return NightlyConfig.from_env(default_repo=Path(project))


def storage_settings(config: NightlyConfig) -> S3Settings:
    """From the Airflow connection SLIMLINE_S3_CONN_ID when set, else from the environment."""
    if config.s3_conn_id:
        from airflow.sdk import BaseHook

        try:
            conn = BaseHook.get_connection(config.s3_conn_id)
        except AirflowNotFoundException:
            raise SlimlineError(f"storage: the Airflow connection '{config.s3_conn_id}' (named by "
                                "SLIMLINE_S3_CONN_ID) is not defined") from None
        extra = conn.extra_dejson or {}
        bucket = extra.get("bucket") or os.environ.get("SLIMLINE_S3_BUCKET")
        if not bucket:
            raise SlimlineError(f"storage: connection {config.s3_conn_id} has no extra 'bucket'")
        settings = S3Settings(
            bucket=bucket,
            endpoint=extra.get("endpoint_url") or conn.host or None,
            prefix=str(extra.get("prefix", "slimline")).strip("/"),
            region=extra.get("region_name"),
            access_key=conn.login,
            secret_key=conn.password,
            credentials_from=f"the login and password of the Airflow connection "
            f"'{config.s3_conn_id}'",
        )
    else:
        settings = S3Settings.from_env()
    from airflow.sdk.log import mask_secret

    for secret in settings.secrets():
        mask_secret(secret)  # Airflow's own masker too: no task log line can show a key
    return settings


def _runner_name(config: NightlyConfig) -> str:
    from airflow.sdk import Variable

    return Variable.get("slimline_runner", default=None) or config.runner


def _night(context) -> str:
    dag_run = context["dag_run"]
    when = context.get("logical_date") or dag_run.run_after
    return when.strftime("%Y-%m-%d")


def setup_workspace(project: str, for_search: bool = False, **context) -> dict:
    """Check the trigger's input again (an Airflow without slimline.nightly.policy creates any
    run), the runner and the storage, then create the run's worktree. `for_search`: the
    slimline_search DAG's setup."""
    config = _config(project)
    settings = context["params"] or {}
    run_id = context["run_id"]
    try:
        # The run's params are the DAG's own plus every key of its conf.
        check_conf_keys(settings, context["dag"].params)
        finite_numbers(settings)
        overrides = normalise(settings.get("overrides"))
        revision = resolve_revision(config.repo, config.source_ref)
        params = params_with_overrides(config.repo, revision, overrides) if overrides else None
        if for_search:
            check_search(config.repo, revision, settings)
        get_runner(_runner_name(config))
        settings = storage_settings(config)
        check_access(settings)
    except SlimlineError as exc:
        if "cannot reach" in str(exc):
            raise  # storage down may come back: let the retries have a go
        raise AirflowFailException(str(exc)) from None
    workspace = ensure_workspace(config.repo, config.state_dir, run_id, revision, params)
    removed = remove_old_workspaces(config.state_dir, config.repo, config.keep_runs, workspace.key)
    log.info("run %s builds %s (%s) in %s; overrides: %s; storage: %s; old workspaces removed: %s",
             run_id, config.source_ref, revision[:10], workspace.root, overrides or "none",
             settings.where, removed or "none")
    return {"run_id": run_id, "revision": revision, "overrides": overrides,
            "workspace": str(workspace.root), "run_dir": str(workspace.run_dir)}


def record_failure(context, project: str) -> None:
    """Where a failed night stopped and why, in one line, for whoever reads the night's summary
    (`python -m slimline.nightly.summary`, the end of scripts/nightly.sh): the run's folder holds
    it even when the run failed before it had a workspace."""
    config = _config(project)
    error = context.get("exception")
    lines = [line.strip() for line in str(error or "").splitlines() if line.strip()]
    reason = lines[0] if lines else type(error).__name__ if error else "no error recorded"
    run_dir = config.state_dir / "runs" / run_key(context["run_id"])
    run_dir.mkdir(parents=True, exist_ok=True)
    ti = context["ti"]
    (run_dir / "failure.json").write_text(json.dumps(
        {"task": ti.task_id, "try": ti.try_number, "error": reason}, indent=2) + "\n")


def _workspace_for(context, config: NightlyConfig):
    setup = context["ti"].xcom_pull(task_ids=SETUP_TASK)
    params = (params_with_overrides(config.repo, setup["revision"], setup["overrides"])
              if setup["overrides"] else None)
    return ensure_workspace(
        config.repo, config.state_dir, setup["run_id"], setup["revision"], params
    )


def _run_job(config: NightlyConfig, task: str, module_args: list[str], workspace, ti) -> None:
    settings = storage_settings(config)
    runner = get_runner(_runner_name(config))
    try_id = f"{ti.try_number}:{ti.id}"
    ended = fence.claim(workspace.root, task, try_id)
    if ended:
        log.warning("%s", ended)
    # TQDM_DISABLE: a progress bar redraws itself with '\r' many times a second, which a task
    # log turns into hundreds of lines glued to the log lines between them; the training loop
    # writes a progress line every 30 s instead (slimline/training/loop.py).
    job = Job(task=task, module_args=module_args, workspace=workspace.root,
              env={**settings.env(), fence.TRY_VARIABLE: try_id, "TQDM_DISABLE": "1"},
              secrets=settings.secrets(), log_file=workspace.task_log(task),
              shared=(workspace.run_dir,))
    log.info("%s: %s runner, workspace %s, log %s", task, runner.name, workspace.root, job.log_file)
    runner.run(job, log.info)


def _run_or_fail(
    config: NightlyConfig, task: str, module_args: list[str], workspace, what: str, ti
) -> None:
    """_run_job; a bad-input exit fails the task at once, anything else is left to retries."""
    try:
        _run_job(config, task, module_args, workspace, ti)
    except JobFailed as exc:
        reason = failure_line(what, str(exc))
        if exc.exit_code in PERMANENT_EXIT_CODES:
            raise AirflowFailException(reason) from None
        raise RuntimeError(reason) from None


def failure_line(what: str, said: str) -> str:
    """`what` failed, and why, naming it once: the command's own last line often names it
    already ("slimline nightly: stage prepare: ...")."""
    said = said.removeprefix("slimline nightly: ")
    return said if said.startswith(f"{what}:") else f"{what}: {said}"


def _exchange_dir(workspace) -> Path:
    """Where a task hands its command the upstream results (git-ignored, per workspace)."""
    folder = workspace.root / ".dvc" / "tmp" / "nightly"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def stage_task(project: str, stage: str, **context) -> dict:
    config = _config(project)
    workspace = _workspace_for(context, config)
    upstream = load_pipeline(workspace.root / "dvc.yaml")[stage].upstream
    results = [context["ti"].xcom_pull(task_ids=name) for name in upstream]
    exchange = _exchange_dir(workspace)
    upstream_file, result_file = (
        exchange / f"{stage}.upstream.json",
        exchange / f"{stage}.result.json",
    )
    upstream_file.write_text(json.dumps([r for r in results if r]))
    result_file.unlink(missing_ok=True)
    _run_or_fail(config, stage, ["slimline.nightly.step", stage, "--upstream", str(upstream_file),
                                 "--result", str(result_file)], workspace, f"stage {stage}",
                 context["ti"])
    return json.loads(result_file.read_text())


def publish(project: str, **context) -> dict:
    config = _config(project)
    workspace = _workspace_for(context, config)
    stages = load_pipeline(workspace.root / "dvc.yaml")
    results = [context["ti"].xcom_pull(task_ids=name) for name in stages]
    upstream_file = _exchange_dir(workspace) / "publish.upstream.json"
    upstream_file.write_text(json.dumps([r for r in results if r]))
    arguments = [
        "slimline.nightly.publish",
        "--run-id",
        context["run_id"],
        "--date",
        _night(context),
        "--run-dir",
        str(workspace.run_dir),
        "--branch",
        config.branch,
        "--upstream",
        str(upstream_file),
    ]
    if config.git_remote:
        arguments += ["--git-remote", config.git_remote]
    (workspace.run_dir / "published.json").unlink(missing_ok=True)
    try:
        _run_job(config, "publish", arguments, workspace, context["ti"])
    except JobFailed as exc:
        if exc.exit_code == GATE_FAILED_EXIT_CODE:
            raise AirflowSkipException(failure_line("publish", str(exc))) from None
        raise RuntimeError(failure_line("publish", str(exc))) from None
    published = json.loads((workspace.run_dir / "published.json").read_text())
    # A run cleared and re-run after a failure has published: that failure is history.
    (workspace.run_dir / "failure.json").unlink(missing_ok=True)
    log.info("published %s: report %s, comparison with the previous night %s, stage logs %s, "
             "model %s", published["tag"], published["report"], published["comparison"],
             published["stage_logs"], published["model"])
    return published


def search(project: str, **context) -> dict:
    """The search of stages.search in the run's workspace, on the data and teacher that the
    `prepare` task pulled or built. Trials live in the workspace, so a retried task resumes the
    study instead of starting over."""
    config = _config(project)
    workspace = _workspace_for(context, config)
    settings = context["params"]
    target = settings["target"]
    out = Path("search") / target
    arguments = ["stages.search", "--target", target, "--minutes", str(settings["minutes"]),
                 "--max-trials", str(settings["max_trials"]), "--out", str(out),
                 "--log", str(out / "search.log")]
    if settings.get("write_profile"):
        arguments += ["--write-profile", settings["write_profile"]]
    _run_or_fail(config, "search", arguments, workspace, "search", context["ti"])
    folder = workspace.root / out
    result = {"front": str(folder / "front.md"), "plot": str(folder / "front.png"),
              "pick": json.loads((folder / "front.json").read_text())["pick"]}
    if settings.get("write_profile"):
        result["profile"] = str(workspace.root / "profiles" / f"{settings['write_profile']}.yaml")
    log.info(
        "search for %s: front %s; pick %s; profile %s",
        target,
        result["front"],
        result["pick"]["number"] if result["pick"] else "none (no candidate meets the budgets)",
        result.get("profile", "not written"),
    )
    return result
