"""A private PostgreSQL cluster for Airflow's metadata database: its own data folder inside the
deployment, listening on 127.0.0.1 only, a password (scram-sha-256) required over TCP.

PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` system user
that Debian's package creates; that user must be able to reach the deployment's folder.
"""
from __future__ import annotations

import getpass
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from slimline.errors import SlimlineError
from slimline.nightly.deployment.processes import Processes
from slimline.nightly.deployment.settings import HOST

NAME = "postgres"
DATABASE = ROLE = "airflow"


def server_binaries() -> Path | None:
    """The newest installed server's folder (Debian keeps initdb and pg_ctl off PATH)."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                      key=lambda path: int(path.parent.parent.name)
                      if path.parent.parent.name.isdigit() else 0)
    if versions:
        return versions[-1].parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def url(port: int, password: str) -> str:
    """SQLAlchemy's URL; Airflow derives its async twin (asyncpg) from it."""
    return f"postgresql+psycopg2://{ROLE}:{password}@{HOST}:{port}/{DATABASE}"


class Postgres:
    def __init__(self, folder: Path, processes: Processes):
        self.folder = folder / "postgres"
        self.data = self.folder / "data"
        self.socket_dir = self.folder / "socket"
        self.log = self.folder / "postgres.log"
        self.processes = processes
        self.as_root = os.geteuid() == 0
        self.owner = "postgres" if self.as_root else getpass.getuser()
        self.bin = server_binaries()

    def _as_owner(self, command: list) -> list[str]:
        command = [str(part) for part in command]
        return ["runuser", "-u", self.owner, "--", *command] if self.as_root else command

    def _run(self, command: list, env: dict[str, str], what: str, stdin: str | None = None):
        done = subprocess.run(self._as_owner(command), env=self.processes.environment(env),
                              input=stdin, capture_output=True, text=True)
        if done.returncode != 0:
            detail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["failed"]
            raise SlimlineError(f"postgres: {what} failed: {detail[0]}")
        return done

    @property
    def _role_pending(self) -> Path:
        return self.folder / "role-pending"

    def ensure_cluster(self, env: dict[str, str]) -> None:
        """Create the cluster on first use (its role comes once the server runs)."""
        if (self.data / "PG_VERSION").is_file():
            return
        if self.bin is None:
            raise SlimlineError("postgres: no PostgreSQL server is installed "
                                "(apt-get install postgresql; scripts/airflow.sh does it as root)")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o700)
        if self.as_root:
            shutil.chown(self.folder, self.owner, self.owner)
            reach = subprocess.run(self._as_owner(["test", "-w", self.folder]))
            if reach.returncode != 0:
                raise SlimlineError(
                    f"postgres: the {self.owner} user cannot reach {self.folder} (a folder above "
                    "it is closed to other users); put the deployment elsewhere with "
                    "SLIMLINE_AIRFLOW_DIR, e.g. /srv/slimline-airflow")
        self._run([self.bin / "initdb", "-D", self.data, "-U", self.owner, "--encoding=UTF8",
                   "--locale=C.UTF-8", "--auth-local=peer", "--auth-host=scram-sha-256"],
                  env, "initdb")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"\n# slimline deployment\nlisten_addresses = '{HOST}'\n"
                       f"unix_socket_directories = '{self.socket_dir}'\nmax_connections = 200\n")
        self._role_pending.touch()

    def pid(self) -> int | None:
        return self.processes.running(NAME)

    def start(self, port: int, password: str, env: dict[str, str]) -> int:
        self.ensure_cluster(env)
        if self.pid() is None:
            self.socket_dir.mkdir(exist_ok=True)
            if self.as_root:
                shutil.chown(self.socket_dir, self.owner, self.owner)
            self._run([self.bin / "pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "120",
                       "-o", f"-p {port}", "start"], env,
                      f"starting the server (its log: {self.log})")
            self.processes.record(NAME, int((self.data / "postmaster.pid").read_text().split()[0]))
        if self._role_pending.exists():
            # The password reaches psql as a variable on stdin, never on a command line.
            self._run([self.bin / "psql", "-h", self.socket_dir, "-p", port, "-U", self.owner,
                       "-d", "postgres", "-q", "-v", "ON_ERROR_STOP=1"], env, "creating the role",
                      stdin=f"\\set pw '{password}'\nCREATE ROLE {ROLE} LOGIN PASSWORD :'pw';\n"
                            f"CREATE DATABASE {DATABASE} OWNER {ROLE};\n")
            self._role_pending.unlink()
        return self.pid()

    def stop(self) -> int | None:
        """SIGINT is PostgreSQL's fast shutdown: sessions are closed, the data stays consistent."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGINT)
            deadline = time.monotonic() + 60
            while self.pid() is not None and time.monotonic() < deadline:
                time.sleep(0.3)
            if self.pid() is not None:  # immediate shutdown: recovery at the next start
                os.kill(pid, signal.SIGQUIT)
                time.sleep(2)
        (self.processes.pids_dir / f"{NAME}.json").unlink(missing_ok=True)
        return pid
