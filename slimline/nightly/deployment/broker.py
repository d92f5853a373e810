"""A private Redis as the Celery broker: loopback only, a password required, nothing persisted
(a queued task lost with it is queued again by the scheduler)."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from slimline.errors import SlimlineError
from slimline.nightly.deployment.processes import Processes
from slimline.nightly.deployment.settings import HOST
from slimline.nightly.seaweed import write_private

NAME = "redis"


def url(port: int, password: str) -> str:
    return f"redis://:{password}@{HOST}:{port}/0"


class Redis:
    def __init__(self, folder: Path, processes: Processes):
        self.folder = folder / "redis"
        self.conf = self.folder / "redis.conf"  # owner-only: it holds the password
        self.processes = processes

    def pid(self) -> int | None:
        return self.processes.running(NAME)

    def answers(self, port: int, password: str) -> bool:
        import redis

        try:
            return bool(redis.Redis(host=HOST, port=port, password=password,
                                    socket_timeout=2).ping())
        except redis.RedisError:
            return False

    def start(self, port: int, password: str, env: dict[str, str]) -> int:
        if self.pid() is not None:
            return self.pid()
        server = shutil.which("redis-server")
        if server is None:
            raise SlimlineError("redis: redis-server is not installed (apt-get install "
                                "redis-server; scripts/airflow.sh does it as root)")
        write_private(self.conf, "\n".join([
            f"bind {HOST}", f"port {port}", "protected-mode yes", "daemonize no",
            f"dir {self.folder}", 'save ""', "appendonly no", 'logfile ""',
            f"requirepass {password}", ""]))
        pid = self.processes.start(NAME, [server, str(self.conf)], env)
        deadline = time.monotonic() + 30
        while not self.answers(port, password):
            if self.pid() is None or time.monotonic() > deadline:
                raise SlimlineError(f"redis: not ready on {HOST}:{port} (see "
                                    f"{self.processes.output_dir / 'redis.log'})")
            time.sleep(0.2)
        return pid

    def stop(self) -> int | None:
        return self.processes.stop(NAME, grace=10)
