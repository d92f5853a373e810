"""User code named in params: "package.module:function", imported when a stage needs it.

Every stage puts the folder holding params.yaml first on the import path (user_code_path), so
a user's module next to params.yaml (or a package in the project) imports without installing
anything.
"""
from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path

from slimline.errors import SlimlineError


def user_code_path(folder: str | Path) -> None:
    """Make modules in `folder` (the one holding params.yaml) importable, ahead of others."""
    folder = str(Path(folder).resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)


def resolve(spec: str, key: str) -> Callable:
    """The callable `spec` names; `key` (e.g. "model.factory") is what the error lines cite."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise SlimlineError(f"{key} = {spec!r} is not allowed: expected 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SlimlineError(
            f"{key} = {spec!r}: cannot import module '{module_name}' ({exc})"
        ) from None
    except Exception as exc:  # the user's module raised while importing
        raise SlimlineError(
            f"{key} = {spec!r}: importing '{module_name}' failed "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        ) from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise SlimlineError(
            f"{key} = {spec!r}: module '{module_name}' has no function '{attribute}'"
        )
    return function


def call(spec: str, key: str, arguments: dict):
    """`spec(**arguments)`; a TypeError from mismatched arguments is one line naming the key."""
    function = resolve(spec, key)
    try:
        return function(**arguments)
    except TypeError as exc:
        raise SlimlineError(f"{key} = {spec!r}: cannot call it with {key}_args {arguments} "
                            f"({exc})") from None
