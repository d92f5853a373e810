"""Files that params.yaml names, kept inside the project (docs/reliability.md, "Threat model").

params.yaml is trusted, but the data files it points at are not, and a run must never read a file
outside the project: a path (relative to the folder holding params.yaml) must lead inside that
folder once every symbolic link is followed, and so must every link inside a folder it names (an
image folder, a Hugging Face model folder). The deployment, never params or a trigger, can name
more folders in SLIMLINE_DATA_ROOTS (separated by ':'), e.g. a shared data volume; absolute paths
are allowed only inside those.
"""
from __future__ import annotations

import os
from pathlib import Path

from slimline.errors import SlimlineError

ROOTS_VARIABLE = "SLIMLINE_DATA_ROOTS"


def allowed_roots(project: Path) -> list[Path]:
    extra = [Path(item) for item in os.environ.get(ROOTS_VARIABLE, "").split(os.pathsep) if item]
    return [project.resolve(), *(root.resolve() for root in extra if root.is_absolute())]


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def project_path(project: Path, value: str, key: str) -> Path:
    """The file or folder `value` names (params key `key`), relative to `project`; SlimlineError
    when it, or a link inside the folder it names, leads outside the project."""
    roots = allowed_roots(project)
    path = Path(value) if Path(value).is_absolute() else project / value
    resolved = path.resolve()
    if not _inside(resolved, roots):
        raise SlimlineError(
            f"{key} = {value!r} is not allowed: it leads to {resolved}, outside the "
            f"project folder {project} (more folders: {ROOTS_VARIABLE}, set by the "
            "deployment)"
        )
    if resolved.is_dir():
        for folder, subfolders, files in os.walk(path):
            for name in subfolders + files:
                entry = Path(folder) / name
                if entry.is_symlink() and not _inside(entry.resolve(), roots):
                    raise SlimlineError(f"{key} = {value!r} is not allowed: {entry} is a link to "
                                        f"{entry.resolve()}, outside the project folder {project}")
    return path
