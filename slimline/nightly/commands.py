"""Running a command with its output streamed line by line (to a task log, a file, or both).

Output is scrubbed of secrets before anyone sees it, and the whole process group is ended when
the caller is interrupted (an Airflow execution timeout, a kill), so no stage outlives its task.
"""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Callable

from slimline.errors import SlimlineError
from slimline.nightly.storage import scrub


def run_streaming(command: list[str], cwd: Path, env: dict[str, str],
                  on_line: Callable[[str], None], secrets: list[str] = (),
                  grace_seconds: float = 20) -> int:
    """Run `command`, hand every output line (stdout and stderr, in order) to on_line; return the exit code."""
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                               errors="replace", bufsize=1, start_new_session=True)
    try:
        for line in process.stdout:
            on_line(scrub(line.rstrip("\n"), list(secrets)))
        return process.wait()
    except BaseException:
        _end_group(process, grace_seconds)
        raise
    finally:
        process.stdout.close()


def _end_group(process: subprocess.Popen, grace_seconds: float) -> None:
    """SIGTERM the command's process group (stages clean up temp files), SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGTERM, grace_seconds), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_quiet(command: list[str], cwd: Path, env: dict[str, str] | None = None,
              what: str | None = None) -> str:
    """Run a short command (git, dvc config); return stdout, or raise one line naming what failed."""
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        detail = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        reason = detail[-1].strip() if detail else f"exit {result.returncode}"
        raise SlimlineError(f"{what or ' '.join(command[:3])} failed in {cwd}: {reason}")
    return result.stdout
