"""The environment the deployment's processes start in: the caller's at the `up` that starts the
deployment, recorded, and the recorded one at every later `up` that restarts a process.

A later `up` (say, to bring back a dead worker) runs from whatever shell a person has open, and
that shell may hold other storage keys: the read-only ones docs/orchestration.md exports to fetch
a model. A worker restarted with them failed every push (AccessDenied). So the record wins, for
the nightly settings (SLIMLINE_RETRIES, ...) as for the storage. The storage keys themselves are
not written down, only a fingerprint of the storage settings:

* embedded SeaweedFS: the server's own credentials file holds the keys; a shell's storage
  variables are ignored, with one line saying so;
* storage of your own (SLIMLINE_S3_BUCKET or SLIMLINE_S3_CONN_ID at the first `up`): the shell
  must hold the same settings, else `up` is refused in one line (`down`, then `up`, changes them).
"""
from __future__ import annotations

import hashlib
import json
import os

from slimline.errors import SlimlineError
from slimline.nightly.deployment.settings import Deployment

STORAGE_VARIABLES = ("SLIMLINE_S3_", "AWS_")
RECORD = "environment.json"


def storage_of(env: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in env.items() if key.startswith(STORAGE_VARIABLES)}


def uses_own_storage(env: dict[str, str]) -> bool:
    return bool(env.get("SLIMLINE_S3_BUCKET") or env.get("SLIMLINE_S3_CONN_ID"))


def _fingerprint(storage: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(sorted(storage.items())).encode()).hexdigest()


def record(deployment: Deployment, env: dict[str, str]) -> dict[str, str]:
    """At the `up` that starts the deployment: keep `env` (storage keys only as a fingerprint)
    in the owner-only secrets folder; `env` itself is what the processes get."""
    own_storage = uses_own_storage(env)
    saved = {
        "env": {key: value for key, value in env.items()
                if not key.startswith(STORAGE_VARIABLES)},
        "own_storage": own_storage,
        "storage": _fingerprint(storage_of(env)) if own_storage else None,
    }
    deployment.secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = deployment.secrets_dir / RECORD
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump(saved, out)
    return env


def restore(deployment: Deployment, caller: dict[str, str], say) -> dict[str, str]:
    """At a later `up`: the recorded environment, with the caller's storage settings only where
    they are the recorded ones. Without a record (a deployment older than it), `caller`'s,
    recorded now."""
    path = deployment.secrets_dir / RECORD
    if not path.is_file():
        return record(deployment, caller)
    saved = json.loads(path.read_text())
    env = dict(saved["env"])
    storage = storage_of(caller)
    if saved["own_storage"]:
        if _fingerprint(storage) != saved["storage"]:
            raise SlimlineError(
                "this shell's storage settings (SLIMLINE_S3_*, AWS_*) are not the ones the "
                "running deployment started with; run up from a shell that has them, or down "
                "and then up to change them")
        env.update(storage)
    elif storage:
        say(f"ignoring this shell's {', '.join(sorted(storage))}: the deployment keeps "
            "the embedded SeaweedFS's own keys (down, then up, to change its storage)")
    return env
