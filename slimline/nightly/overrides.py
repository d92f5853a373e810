"""Run-time params overrides (dag_run.conf / DAG params), validated exactly like params.yaml.

An override is a mapping merged into params.yaml, nested or with dotted keys, or both:

    {"prune": {"keep_ratio": 0.6}}      {"prune.keep_ratio": 0.6, "model.widths": [8, 16, 32]}

Mappings merge key by key; anything else (numbers, lists) replaces the value. The merged result
goes through slimline.params.parse_params, so a wrong type or an unknown key stops the run before
any work with the same one-line message a bad params.yaml gives.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from slimline.errors import SlimlineError
from slimline.params import deep_merge, parse_params

SOURCE = "run overrides"


def _nest(overrides: dict) -> dict:
    nested: dict = {}
    for key, value in overrides.items():
        if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
            raise SlimlineError(f"{SOURCE}: '{key}' is not a params key (use section.key)")
        *parents, leaf = key.split(".")
        target = nested
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise SlimlineError(f"{SOURCE}: '{key}' conflicts with another override")
        value = _nest(value) if isinstance(value, dict) else value
        if isinstance(target.get(leaf), dict) and isinstance(value, dict):
            target[leaf] = deep_merge(target[leaf], value)
        else:
            target[leaf] = value
    return nested


def merge_overrides(params: dict, overrides: dict | None, profiles: Path | None = None) -> dict:
    """params.yaml's mapping with the overrides applied, validated; raises SlimlineError."""
    if overrides is None:
        overrides = {}
    if not isinstance(overrides, dict):
        raise SlimlineError(f"{SOURCE}: expected a mapping of params, got {type(overrides).__name__}")
    merged = deep_merge(params or {}, _nest(overrides))
    parse_params(merged, SOURCE, profiles)  # a `target` override is checked against profiles/ too
    return merged


def apply_overrides(params_file: Path, overrides: dict | None) -> bool:
    """Rewrite params_file with the overrides merged in; returns whether anything was overridden.

    With no overrides the file is left byte-for-byte alone (its comments are the documentation).
    """
    raw = yaml.safe_load(params_file.read_text()) or {}
    merged = merge_overrides(raw, overrides, params_file.parent / "profiles")
    if not overrides:
        return False
    params_file.write_text("# params.yaml with this run's overrides applied (see dag_run.conf)\n"
                           + yaml.safe_dump(merged, sort_keys=False))
    return True
