"""The deployment's passwords and keys: generated on the first `up` into owner-only files under
secrets/ (0700), kept across restarts, never printed and never on a command line.

  keys.json       the PostgreSQL and Redis passwords, Airflow's Fernet key, the api-server's
                  secret key (signs its requests to log servers) and the JWT secret (signs UI,
                  API and worker tokens); every component must share the same ones
  passwords.json  the UI login, in the format of Airflow's SimpleAuthManager, which would
                  generate a password itself and print it to its log if the user were missing
"""
from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from slimline.nightly.deployment.settings import ADMIN_USER, Deployment
from slimline.nightly.seaweed import write_private

KEYS = ("postgres_password", "redis_password", "fernet_key", "api_secret_key", "jwt_secret")


@dataclass(frozen=True)
class Secrets:
    keys: dict[str, str]
    passwords_file: Path

    @property
    def admin_password(self) -> str:
        return json.loads(self.passwords_file.read_text())[ADMIN_USER]


def _new(name: str) -> str:
    if name == "fernet_key":  # Fernet's format: 32 random bytes, URL-safe base64
        return base64.urlsafe_b64encode(os.urandom(32)).decode()
    return secrets.token_urlsafe(32)


def ensure(deployment: Deployment) -> Secrets:
    folder = deployment.secrets_dir
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    keys_file, passwords_file = folder / "keys.json", folder / "passwords.json"
    keys = json.loads(keys_file.read_text()) if keys_file.is_file() else {}
    if any(name not in keys for name in KEYS):
        keys = {name: keys.get(name) or _new(name) for name in KEYS}
        write_private(keys_file, json.dumps(keys, indent=2) + "\n")
    if not passwords_file.is_file():
        write_private(passwords_file, json.dumps({ADMIN_USER: secrets.token_urlsafe(18)}) + "\n")
    return Secrets(keys, passwords_file)
