"""Deployment targets: a profile is a recipe (params overrides) plus budgets for the gate.

Profiles are YAML files in `profiles/` beside params.yaml; `target: <name>` in params.yaml (or a
DAG run's overrides) selects one. Users add a device by adding a file; no code changes.
Precedence, lowest first: params.yaml (including a DAG run's overrides, which are written into
it), then the profile's recipe, then the profile's budgets (which set evaluate.gate). To vary a
knob the profile sets, edit the profile or run without a target.
"""
from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, ValidationError

from slimline.config.params import (
    GateParams,
    Params,
    Section,
    deep_merge,
    describe_error,
    read_yaml,
)
from slimline.errors import SlimlineError

PROFILES_DIR = "profiles"
PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")   # a file stem, never a path


class Profile(Section):
    description: str = Field(min_length=1)
    recipe: dict = {}          # params.yaml sections to override, e.g. {prune: {keep_ratio: 0.5}}
    budgets: GateParams        # max_top1_drop, max_latency_ms, max_size_mb, min_throughput, rule


def available_profiles(directory: Path) -> list[str]:
    return sorted(path.stem for path in directory.glob("*.yaml"))


def load_profile(directory: Path, name: str, source: str = "params.yaml") -> Profile:
    if not PROFILE_NAME.match(name):
        raise SlimlineError(
            f"{source}: target = {name!r} is not allowed: a profile is named by its "
            "bare file name in profiles/ (letters, digits, '_' and '-'), not a path"
        )
    path = directory / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(available_profiles(directory)) or "none"
        raise SlimlineError(f"{source}: target = {name!r} is not a known profile "
                            f"(no {path}; known: {known})")
    try:
        profile = Profile.model_validate(read_yaml(path, "profile"))
    except ValidationError as exc:
        raise SlimlineError(describe_error(exc.errors()[0], str(path))) from None
    try:  # the recipe must be valid params on its own (every key known, every value in range)
        Params.model_validate(profile.recipe)
    except ValidationError as exc:
        raise SlimlineError(describe_error(exc.errors()[0], f"{path}: recipe")) from None
    if "evaluate" in profile.recipe and "gate" in profile.recipe["evaluate"]:
        raise SlimlineError(f"{path}: recipe.evaluate.gate: put budgets under `budgets:`")
    return profile


def apply_profile(raw: dict, directory: Path, source: str = "params.yaml") -> dict:
    """`raw` params with the selected profile's recipe and budgets folded in."""
    name = raw.get("target")
    if name is None:
        return raw
    if not isinstance(name, str):
        raise SlimlineError(f"{source}: target = {name!r} is not allowed: a profile name or null")
    profile = load_profile(directory, name, source)
    resolved = deep_merge(raw, profile.recipe)
    budgets = profile.budgets.model_dump()
    return deep_merge(resolved, {"evaluate": {"gate": budgets}})
