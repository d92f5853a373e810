"""`bash scripts/airflow.sh cli ...`: an airflow command whose Python traceback, when it fails
with one, is cut to its final line (`ParamValidationError: conf key 'x' is not accepted: ...`);
its other output and its exit status are Airflow's own.

stdout passes through untouched. stderr is passed on line by line until a traceback starts; from
there it is held until the command ends: a failed command prints only the exception line of its
last traceback, one that still succeeds (a traceback it logged and got over) prints all it held.
"""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable

TRACEBACK = "Traceback (most recent call last):"


def exception_line(held: list[str]) -> str | None:
    """The line naming the exception of the last traceback in `held` (the first line of its
    message: a schema's refusal goes on for pages)."""
    starts = [index for index, line in enumerate(held) if line.startswith(TRACEBACK)]
    if not starts:
        return None
    for line in held[starts[-1] + 1:]:
        if line.strip() and not line[0].isspace():
            return line
    return None


def filter_stderr(lines: Iterable[str], write, failed) -> None:
    """Write `lines` on through `write`, a traceback cut as the module says; `failed()` tells,
    once the lines end, whether the command failed."""
    held: list[str] = []
    for line in lines:
        if held or line.startswith(TRACEBACK):
            held.append(line)
        else:
            write(line)
    if not held:
        return
    final = exception_line(held) if failed() else None
    for line in [final] if final else held:
        write(line)


def run(command: list[str], env: dict[str, str]) -> int:
    sys.stdout.flush()
    with subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True,
                          errors="replace") as process:
        filter_stderr(process.stderr, sys.stderr.write, lambda: process.wait() != 0)
    return process.returncode
