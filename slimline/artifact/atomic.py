"""Atomic writes: build next to the target, then rename, so a killed stage leaves no half file.

Temporaries are hidden siblings named `.TARGET.tmp-*` (the new content) and `.TARGET.old-*`
(a directory being replaced). A later write of the same target deletes leftovers of a killed
one, so re-running needs no manual cleanup; DVC and git ignore them (.dvcignore, .gitignore).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fresh_sibling(target: Path, kind: str, is_dir: bool) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.{kind}-"
    if kind == "tmp":  # one writer per target: stages never write each other's outs
        for leftover in target.parent.glob(f".{target.name}.*-*"):
            _remove(leftover)
    if is_dir:
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
        path.chmod(0o755)  # mkdtemp's 0700 would hide artifacts from a container's other user
        return path
    handle, name = tempfile.mkstemp(prefix=prefix, dir=target.parent)
    os.close(handle)
    os.chmod(name, 0o644)
    return Path(name)


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike):
    """Yield a temp path; on success fsync it and rename it over `target`."""
    target = Path(target)
    tmp = _fresh_sibling(target, "tmp", is_dir=False)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike):
    """Yield a temp directory; on success swap it in place of `target`."""
    target = Path(target)
    tmp = _fresh_sibling(target, "tmp", is_dir=True)
    try:
        yield tmp
        for child in tmp.rglob("*"):
            if child.is_file():
                _fsync(child)
        if target.exists():
            # rename cannot replace a non-empty directory: move the old one aside first.
            old = _fresh_sibling(target, "old", is_dir=True)
            os.replace(target, old)
            os.replace(tmp, target)
            _remove(old)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            _remove(tmp)


def write_json(target: str | os.PathLike, data) -> None:
    with atomic_file(target) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_file(target) as tmp:
        tmp.write_text(text)
