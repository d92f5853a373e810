"""Atomic writes: build next to the target, then rename, so a killed stage leaves no half file."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path


def _tmp_sibling(target: Path, is_dir: bool) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.tmp-"
    if is_dir:
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
        path.chmod(0o755)  # mkdtemp's 0700 would hide artifacts from a container's other user
        return path
    fd, name = tempfile.mkstemp(prefix=prefix, dir=target.parent)
    os.close(fd)
    os.chmod(name, 0o644)
    return Path(name)


def remove_stale_temps(parent: Path) -> None:
    """Delete leftovers of earlier killed writes (`.NAME.tmp-*`), so re-running needs no cleanup."""
    if not parent.is_dir():
        return
    for leftover in parent.glob(".*.tmp-*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike):
    """Yield a temp path; on success fsync it and rename it over `target`."""
    target = Path(target)
    tmp = _tmp_sibling(target, is_dir=False)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike):
    """Yield a temp directory; on success swap it in place of `target` in one rename."""
    target = Path(target)
    tmp = _tmp_sibling(target, is_dir=True)
    try:
        yield tmp
        for child in tmp.rglob("*"):
            if child.is_file():
                _fsync(child)
        if target.exists():
            # Move the old one aside first: rename cannot replace a non-empty directory.
            old = _tmp_sibling(target, is_dir=True)
            os.rmdir(old)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(target: str | os.PathLike, data) -> None:
    with atomic_file(target) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_file(target) as tmp:
        tmp.write_text(text)
