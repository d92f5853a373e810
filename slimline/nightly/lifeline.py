"""The processes a task's try lives by, and a watch that fires when any of them dies.

A stage step asks Linux for SIGTERM when its parent (the task runner) dies, but that is one
link. Under a Celery worker the chain is worker main -> pool process (Airflow's task supervisor,
which heartbeats the try) -> task runner -> step: with the worker's main process or the
supervisor killed, the task runner is re-parented to PID 1 and runs on, its step with it, while
Airflow writes the try off and retries it. So the task runner watches every ancestor of its own
session up to the session's leader (`scripts/airflow.sh up` starts each worker as a session of
its own; systemd does the same for a service) and ends the try when one goes.

The leader of a session with a terminal is a person's login shell, not part of the try: it is
left out, so `nohup bash scripts/nightly.sh &` still survives a logout, while a SIGTERM to
nightly.sh itself ends its night. The watch holds a pidfd per ancestor (Linux 5.3+): it names
that very process, never a later one given the same pid, and costs no polling.
"""
from __future__ import annotations

import ctypes
import os
import select
import threading
from collections.abc import Callable

import psutil

PR_SET_PDEATHSIG = 1


def signal_when_parent_dies(signum: int) -> bool:
    """Ask Linux to send `signum` to this process when its parent dies, even by SIGKILL. False
    where that cannot be asked, or when the parent died already (the caller acts on it)."""
    parent = os.getppid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signum)
    except (OSError, AttributeError):
        return False
    return os.getppid() == parent


def _started_at(pid: int, started: float) -> bool:
    try:
        return psutil.Process(pid).create_time() == started
    except psutil.NoSuchProcess:
        return False


def _has_terminal(pid: int) -> bool:
    return psutil.Process(pid).terminal() is not None


def try_ancestors(pid: int | None = None) -> list[tuple[int, float]]:
    """The ancestors of `pid` (default: this process) in its session, nearest first, up to the
    session's leader (left out when it holds a terminal) and never PID 1: (pid, start time)
    pairs, so that a later process given the same pid is not taken for one of them."""
    pid = os.getpid() if pid is None else pid
    session = os.getsid(pid)
    chain = []
    parent = psutil.Process(pid).ppid()
    while parent > 1:
        try:
            if os.getsid(parent) != session:
                break
            if parent == session and _has_terminal(parent):
                break
            process = psutil.Process(parent)
            chain.append((parent, process.create_time()))
            if parent == session:
                break
            parent = process.ppid()
        except (ProcessLookupError, psutil.NoSuchProcess):
            break
    return chain


_first_seen: dict[int, list[tuple[int, float]]] = {}


def own_try_ancestors() -> list[tuple[int, float]]:
    """try_ancestors of this process as it first asked: `airflow dags test` runs every task of a
    night in one process, and once scripts/nightly.sh is gone (between two stages, say) the
    next stage must not start under PID 1 as if nothing had happened."""
    return _first_seen.setdefault(os.getpid(), try_ancestors())


class Lifeline:
    """Calls `on_death(pid)` once, from a daemon thread, when any of `processes` ((pid, start
    time) pairs) exits, or already has. `close()` stops watching."""

    def __init__(self, processes: list[tuple[int, float]], on_death: Callable[[int], None]):
        self.on_death = on_death
        self.stop_read, self.stop_write = os.pipe()
        self.fds: dict[int, int] = {}
        gone = None
        for pid, started in processes:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                gone = pid if gone is None else gone
                continue
            self.fds[fd] = pid
            if not _started_at(pid, started):  # the pid is another process's now
                gone = pid if gone is None else gone
        self.thread = threading.Thread(target=self._watch, args=(gone,), name="lifeline",
                                       daemon=True)
        self.thread.start()

    def _watch(self, gone: int | None) -> None:
        if gone is None:
            poller = select.poll()
            for fd in (*self.fds, self.stop_read):
                poller.register(fd, select.POLLIN)
            ready = poller.poll()
            if any(fd == self.stop_read for fd, _ in ready):
                return
            gone = self.fds[ready[0][0]]
        self.on_death(gone)

    def close(self) -> None:
        os.write(self.stop_write, b"x")
        self.thread.join(timeout=5)
        for fd in (*self.fds, self.stop_read, self.stop_write):
            os.close(fd)
