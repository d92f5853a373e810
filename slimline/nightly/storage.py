"""The DVC remote: S3-compatible object storage, configured from the environment.

Any S3 endpoint works unchanged (AWS S3, a SeaweedFS cluster, Ceph RGW); only these differ:

  SLIMLINE_S3_ENDPOINT   e.g. http://127.0.0.1:8333 (unset for AWS S3 itself)
  SLIMLINE_S3_BUCKET     the bucket holding the DVC cache
  SLIMLINE_S3_PREFIX     optional folder inside the bucket (default: slimline)
  SLIMLINE_S3_REGION     optional region (AWS S3 needs the bucket's region)
  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY   the credentials

or an Airflow connection (see slimline.nightly.tasks). Credentials never reach a file: the remote
URL and endpoint go to .dvc/config.local (git-ignored), the keys travel only in the environment of
the processes that need them, and every message that could echo them is scrubbed.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from slimline.errors import SlimlineError

REMOTE_NAME = "nightly"
ENV_CREDENTIALS = "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"


@dataclass(frozen=True)
class S3Settings:
    bucket: str
    endpoint: str | None = None
    prefix: str = "slimline"
    region: str | None = None
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    # Where the keys came from, so that a refusal names the setting to fix (never the key).
    credentials_from: str = ENV_CREDENTIALS

    @classmethod
    def from_env(cls, env: dict | None = None) -> S3Settings:
        env = os.environ if env is None else env
        bucket = env.get("SLIMLINE_S3_BUCKET")
        if not bucket:
            raise SlimlineError("storage: SLIMLINE_S3_BUCKET is not set (start the embedded "
                                "SeaweedFS with `python -m slimline.nightly.seaweed start` and "
                                "source its env file, or point it at your S3 bucket)")
        return cls(bucket=bucket, endpoint=env.get("SLIMLINE_S3_ENDPOINT") or None,
                   prefix=env.get("SLIMLINE_S3_PREFIX", "slimline").strip("/"),
                   region=env.get("SLIMLINE_S3_REGION") or None,
                   access_key=env.get("AWS_ACCESS_KEY_ID") or None,
                   secret_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
                   credentials_from=env.get("SLIMLINE_S3_CREDENTIALS_FROM") or ENV_CREDENTIALS)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    @property
    def where(self) -> str:
        """How messages name the storage: endpoint and URL, never a key."""
        return f"{self.url} at {self.endpoint}" if self.endpoint else self.url

    def env(self) -> dict[str, str]:
        """The variables a child process (dvc, a stage step) needs to reach the remote."""
        values = {
            "SLIMLINE_S3_BUCKET": self.bucket,
            "SLIMLINE_S3_PREFIX": self.prefix,
            "SLIMLINE_S3_ENDPOINT": self.endpoint or "",
            "SLIMLINE_S3_REGION": self.region or "",
            "AWS_ACCESS_KEY_ID": self.access_key or "",
            "AWS_SECRET_ACCESS_KEY": self.secret_key or "",
            "SLIMLINE_S3_CREDENTIALS_FROM": self.credentials_from,
        }
        return {key: value for key, value in values.items() if value}

    def secrets(self) -> list[str]:
        return [value for value in (self.secret_key, self.access_key) if value]


def scrub(text: str, secrets: list[str]) -> str:
    """Belt and braces: no tool we call prints keys, but a log line must never carry one."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def configure_dvc_remote(repo: Path, settings: S3Settings) -> None:
    """Make `nightly` the default DVC remote of `repo`, in .dvc/config.local (git-ignored).

    Written with configobj, the library DVC reads its config with: each `dvc remote` call costs
    seconds of start-up, and every task of every run does this.
    """
    from configobj import ConfigObj

    if not (repo / ".dvc").is_dir():
        raise SlimlineError(f"storage: {repo} is not a DVC project (no .dvc folder)")
    config = ConfigObj(str(repo / ".dvc" / "config.local"))
    config.setdefault("core", {})["remote"] = REMOTE_NAME
    remote = {"url": settings.url}
    if settings.endpoint:
        remote["endpointurl"] = settings.endpoint
    if settings.region:
        remote["region"] = settings.region
    config[f'remote "{REMOTE_NAME}"'] = remote
    config.write()


def _client(settings: S3Settings):
    import boto3  # imported here: the DAG file imports this module and must stay light
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=settings.endpoint,
        region_name=settings.region or "us-east-1",
        aws_access_key_id=settings.access_key,
        aws_secret_access_key=settings.secret_key,
        config=Config(
            connect_timeout=5, read_timeout=30, retries={"max_attempts": 2, "mode": "standard"}
        ),
    )


def explain_s3_error(code: str, credentials_from: str = ENV_CREDENTIALS) -> str:
    if code in {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
                "AuthorizationHeaderMalformed", "403", "Forbidden"}:
        return f"the storage rejected the credentials ({code}); fix {credentials_from}"
    if code in {"AccessDenied"}:
        return ("the credentials are valid but not allowed this operation (AccessDenied); "
                f"{credentials_from} need read and write access to the bucket")
    if code in {"NoSuchBucket", "404", "NotFound"}:
        return "the bucket does not exist (create it, or fix SLIMLINE_S3_BUCKET)"
    return f"the storage answered {code}"


def check_access(settings: S3Settings) -> None:
    """Fail before any work when the bucket cannot be reached or the credentials are refused.

    Only read access is checked here; a key without write permission is reported by the first push.
    """
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    if not settings.access_key or not settings.secret_key:
        hint = (" (or SLIMLINE_S3_CONN_ID, the id of an Airflow connection holding them)"
                if settings.credentials_from == ENV_CREDENTIALS else "")
        raise SlimlineError(f"storage: no credentials for {settings.where}: set "
                            f"{settings.credentials_from}{hint}")
    try:
        # A listing, not head_bucket: HEAD answers carry no error code, only a bare 403.
        _client(settings).list_objects_v2(Bucket=settings.bucket, MaxKeys=1)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "unknown")
        raise SlimlineError(f"storage: cannot use {settings.where}: "
                            f"{explain_s3_error(code, settings.credentials_from)}") from None
    except NoCredentialsError:
        raise SlimlineError(f"storage: no credentials for {settings.where}: set "
                            f"{settings.credentials_from}") from None
    except BotoCoreError as exc:
        raise SlimlineError(f"storage: cannot reach {settings.where}: "
                            f"{scrub(str(exc), settings.secrets())}") from None


def main(argv: list[str] | None = None) -> None:
    """`configure`: point this checkout's DVC at the remote (in a fresh clone, before `dvc pull`);
    `check`: verify the bucket answers to these credentials."""
    parser = argparse.ArgumentParser(prog="python -m slimline.nightly.storage")
    parser.add_argument("action", choices=["configure", "check"])
    parser.add_argument(
        "--repo", type=Path, default=Path("."), help="the DVC project (default: here)"
    )
    args = parser.parse_args(argv)
    try:
        settings = S3Settings.from_env()
        if args.action == "configure":
            configure_dvc_remote(args.repo, settings)
            print(f"storage: DVC remote '{REMOTE_NAME}' -> {settings.where} (in .dvc/config.local; "
                  "credentials stay in the environment)")
        else:
            check_access(settings)
            print(f"storage: {settings.where} answers to these credentials")
    except SlimlineError as exc:
        print(f"slimline: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
