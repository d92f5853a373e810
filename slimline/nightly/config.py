"""The nightly line's settings, from environment variables (all optional):

SLIMLINE_REPO                  the project's git repository (default: the DAG file's project)
SLIMLINE_STATE_DIR             workspaces, run logs, the embedded storage (default <repo>/.nightly)
SLIMLINE_SOURCE_REF            the git revision each night builds (default HEAD)
SLIMLINE_PUBLISH_BRANCH        the versioning branch (default nightly)
SLIMLINE_GIT_REMOTE            also push the branch and tags there, and start a missing local
                               branch from its copy (default: none; origin's copy if cloned)
SLIMLINE_KEEP_RUNS             run worktrees kept on disk (default 14; the remote keeps all)
SLIMLINE_RUNNER                local (default), docker or kubernetes; the Airflow Variable
                               slimline_runner wins (their settings: slimline/nightly/containers.py)
SLIMLINE_S3_CONN_ID            take the S3 settings from this Airflow connection instead of env
SLIMLINE_SCHEDULE              cron (default "0 2 * * *": 02:00 UTC every night)
SLIMLINE_RETRIES               retries per task (default 2), with exponential back-off from
SLIMLINE_RETRY_DELAY_SECONDS   (default 300) up to one hour
SLIMLINE_STAGE_TIMEOUT_MINUTES execution timeout of a stage task (default 180)
SLIMLINE_STAGE_TIMEOUTS        per-stage exceptions, e.g. "distill=360,evaluate=60"
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from slimline.errors import SlimlineError


def _int(env: dict, name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise SlimlineError(f"{name} = {raw!r} is not an integer") from None


def _stage_timeouts(raw: str) -> dict[str, int]:
    timeouts = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        stage, sep, minutes = item.partition("=")
        if not sep or not minutes.strip().isdigit():
            raise SlimlineError(f"SLIMLINE_STAGE_TIMEOUTS: {item!r} is not stage=minutes")
        timeouts[stage.strip()] = int(minutes)
    return timeouts


@dataclass(frozen=True)
class NightlyConfig:
    repo: Path
    state_dir: Path
    source_ref: str = "HEAD"
    branch: str = "nightly"
    git_remote: str | None = None
    keep_runs: int = 14
    runner: str = "local"
    s3_conn_id: str | None = None
    schedule: str = "0 2 * * *"
    retries: int = 2
    retry_delay: timedelta = timedelta(minutes=5)
    stage_timeout: timedelta = timedelta(minutes=180)
    stage_timeouts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_env(cls, default_repo: Path | None = None, env: dict | None = None) -> NightlyConfig:
        env = os.environ if env is None else env
        repo_raw = env.get("SLIMLINE_REPO") or default_repo
        if repo_raw is None:
            raise SlimlineError("SLIMLINE_REPO is not set")
        repo = Path(repo_raw).resolve()
        return cls(
            repo=repo,
            state_dir=Path(env.get("SLIMLINE_STATE_DIR") or repo / ".nightly").resolve(),
            source_ref=env.get("SLIMLINE_SOURCE_REF") or "HEAD",
            branch=env.get("SLIMLINE_PUBLISH_BRANCH") or "nightly",
            git_remote=env.get("SLIMLINE_GIT_REMOTE") or None,
            keep_runs=_int(env, "SLIMLINE_KEEP_RUNS", 14),
            runner=env.get("SLIMLINE_RUNNER") or "local",
            s3_conn_id=env.get("SLIMLINE_S3_CONN_ID") or None,
            schedule=env.get("SLIMLINE_SCHEDULE") or "0 2 * * *",
            retries=_int(env, "SLIMLINE_RETRIES", 2),
            retry_delay=timedelta(seconds=_int(env, "SLIMLINE_RETRY_DELAY_SECONDS", 300)),
            stage_timeout=timedelta(minutes=_int(env, "SLIMLINE_STAGE_TIMEOUT_MINUTES", 180)),
            stage_timeouts=_stage_timeouts(env.get("SLIMLINE_STAGE_TIMEOUTS", "")),
        )

    def timeout_for(self, stage: str) -> timedelta:
        minutes = self.stage_timeouts.get(stage)
        return timedelta(minutes=minutes) if minutes else self.stage_timeout
