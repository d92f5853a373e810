"""Audit the DVC remote against the published nights: nothing missing, nothing orphaned.

    python -m slimline.nightly.audit [--repo .] [--tags 'nightly/*']   (storage from the env)

Exit 0 when every tagged night can be restored and no object is orphaned, 1 otherwise, 2 when the
storage cannot be read. What the words mean here:

  referenced  named by a tagged night's dvc.lock (each output's md5; for a directory its `.dir`
              manifest and every file the manifest lists), or by a run-cache entry in the remote
              (`runs/`: what lets a later night restore a stage instead of running it again,
              whether or not that night was published; e.g. a night whose publish failed)
  missing     referenced but absent from the bucket: a night or a cache entry that cannot be
              restored
  orphan      an object under `files/md5/` that nothing referenced names: nothing will ever read it
  stray       any other key under the remote's prefix (neither `files/md5/` nor `runs/`)

Read-only: it deletes nothing (`dvc gc --cloud` does, with care, from a checkout of every tag).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from slimline.errors import SlimlineError
from slimline.nightly.storage import S3Settings, _client, explain_s3_error


@dataclass
class Audit:
    tags: list[str]
    objects: int                                   # keys under files/md5/
    run_cache_entries: int
    referenced: set[str] = field(default_factory=set)
    missing: dict[str, list[str]] = field(default_factory=dict)   # md5 -> who references it
    orphans: list[str] = field(default_factory=list)
    strays: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.orphans or self.strays)

    def summary(self) -> str:
        return (
            f"audit: {len(self.tags)} tagged night(s), {self.run_cache_entries} run-cache "
            f"entries, {self.objects} objects; {len(self.referenced)} referenced, "
            f"{len(self.missing)} missing, {len(self.orphans)} orphaned, {len(self.strays)} stray"
        )


def _object_key(prefix: str, md5: str) -> str:
    """Where DVC 3 keeps an object in an S3 remote."""
    return f"{prefix + '/' if prefix else ''}files/md5/{md5[:2]}/{md5[2:]}"


def _outputs(entry: dict) -> list[str]:
    return [out["md5"] for out in entry.get("outs", []) if out.get("md5")]


def nightly_tags(repo: Path, pattern: str = "nightly/*") -> list[str]:
    listed = subprocess.run(["git", "tag", "--list", pattern], cwd=repo, capture_output=True,
                            text=True, check=True)
    return listed.stdout.split()


def _lock_at(repo: Path, tag: str) -> dict:
    shown = subprocess.run(
        ["git", "show", f"{tag}:dvc.lock"], cwd=repo, capture_output=True, text=True
    )
    if shown.returncode != 0:
        raise SlimlineError(f"audit: {tag} has no dvc.lock ({shown.stderr.strip()})")
    return yaml.safe_load(shown.stdout) or {}


def audit_remote(repo: Path, settings: S3Settings, pattern: str = "nightly/*") -> Audit:
    from botocore.exceptions import BotoCoreError, ClientError

    client, prefix = _client(settings), settings.prefix
    try:
        keys = {item["Key"] for page in client.get_paginator("list_objects_v2").paginate(
                    Bucket=settings.bucket, Prefix=f"{prefix}/" if prefix else "")
                for item in page.get("Contents", [])}
        root = f"{prefix}/" if prefix else ""
        files_root, runs_root = f"{root}files/md5/", f"{root}runs/"
        runs = sorted(key for key in keys if key.startswith(runs_root))

        def read(key: str) -> str:
            return client.get_object(Bucket=settings.bucket, Key=key)["Body"].read().decode()

        # who references what: md5 -> names of the tags / run-cache entries
        named: dict[str, list[str]] = {}
        tags = nightly_tags(repo, pattern)
        for tag in tags:
            for stage, entry in (_lock_at(repo, tag).get("stages") or {}).items():
                for md5 in _outputs(entry):
                    named.setdefault(md5, []).append(f"{tag}:{stage}")
        for key in runs:
            for md5 in _outputs(yaml.safe_load(read(key)) or {}):
                named.setdefault(md5, []).append(key.removeprefix(runs_root))
        for md5 in [md5 for md5 in named if md5.endswith(".dir")]:
            manifest_key = _object_key(prefix, md5)
            if manifest_key in keys:
                for item in json.loads(read(manifest_key)):
                    named.setdefault(item["md5"], []).append(f"{md5} ({item['relpath']})")
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "unknown")
        raise SlimlineError(
            f"storage: cannot audit {settings.where}: {explain_s3_error(code)}"
        ) from None
    except BotoCoreError as exc:
        raise SlimlineError(
            f"storage: cannot reach {settings.where}: {type(exc).__name__}"
        ) from None

    objects = {key for key in keys if key.startswith(files_root)}
    referenced_keys = {_object_key(prefix, md5): md5 for md5 in named}
    return Audit(
        tags=tags, objects=len(objects), run_cache_entries=len(runs), referenced=set(named),
        missing={md5: named[md5] for key, md5 in referenced_keys.items() if key not in keys},
        orphans=sorted(objects - set(referenced_keys)),
        strays=sorted(keys - objects - set(runs)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m slimline.nightly.audit",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=Path("."), help="the project's git repository")
    parser.add_argument("--tags", default="nightly/*", help="which tags are published nights")
    args = parser.parse_args(argv)
    try:
        result = audit_remote(args.repo, S3Settings.from_env(), args.tags)
    except SlimlineError as exc:
        print(f"slimline: error: {exc}", file=sys.stderr)
        sys.exit(2)
    for md5, who in sorted(result.missing.items()):
        print(f"missing {md5} (referenced by {', '.join(who[:3])})")
    for key in result.orphans:
        print(f"orphan {key}")
    for key in result.strays:
        print(f"stray {key}")
    print(result.summary())
    sys.exit(0 if result.clean else 1)


if __name__ == "__main__":
    main()
