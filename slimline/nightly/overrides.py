"""Run-time params overrides (dag_run.conf, the DAG's `overrides` param, nightly.sh's JSON).

Whoever triggers a run is not trusted (docs/reliability.md, "Threat model"): an override may tune
technique knobs, never name code, a file or where the model and data come from. So overrides are
an allow-list derived from the params schema:

* allowed: numbers, booleans and enums (a `Literal`), lists of numbers, the layer names the
  techniques look up in the model (`prune.exclude`, `decompose.exclude`, `decompose.ranks`), and
  `target` as the bare name of a profile in the repository's profiles/;
* refused, with one line naming the key and why: anything naming code (`*.factory`,
  `*.factory_args`), a path (`data.path`, `model.path`, `model.onnx`, `model.weights`,
  `data.text.pairs`), a source switch (`data.source`, `model.source`) and every other free-form
  string or mapping (column names, array keys).

Every knob a trigger may set is bounded (slimline/nightly/bounds.py): a number at most its bound,
a list or mapping at most its length, so a conf cannot hold a worker for hours
(`prepare.train.epochs: 100000000`). The deployment (never the conf) sets the bounds in
SLIMLINE_OVERRIDES_BOUNDS and can allow more keys in SLIMLINE_OVERRIDES_ALLOW (comma-separated
dotted keys or fnmatch patterns, e.g. "data.text.text_column,model.task").

Overrides are given nested or with dotted keys, or both:

    {"prune": {"keep_ratio": 0.6}}      {"prune.keep_ratio": 0.6, "model.widths": [8, 16, 32]}

`normalise` is the one reading of a conf's overrides, shared by the cluster policy and the
tasks: a knob given twice (nested and dotted) is refused rather than resolved by key order, which
the database storing the conf does not keep, so the value checked is the value applied. NaN and
Infinity are refused too. The merged result goes through slimline.config.load.parse_params, so a
wrong type or an out-of-range value stops the run before any work with the same one-line message a
bad params.yaml gives.
"""
from __future__ import annotations

import fnmatch
import math
import os
import types
import typing
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel

from slimline.config.load import parse_params
from slimline.config.params import Params, deep_merge
from slimline.config.profiles import PROFILE_NAME, available_profiles
from slimline.errors import SlimlineError
from slimline.nightly.bounds import check_bound

SOURCE = "run overrides"
ALLOW_VARIABLE = "SLIMLINE_OVERRIDES_ALLOW"

# Keys whose values are module names of the model: looked up, never imported or opened.
LAYER_NAME_KEYS = {"prune.exclude", "decompose.exclude", "decompose.ranks"}
SOURCE_KEYS = {"data.source", "model.source"}
PATH_KEYS = {"data.path", "model.path", "model.onnx", "model.weights", "data.text.pairs"}


def _unwrap(annotation) -> list:
    """The alternatives of an annotation, without Annotated, Optional and None."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return [alt for arg in typing.get_args(annotation) for alt in _unwrap(arg)]
    return [] if annotation is type(None) else [annotation]


def _is_number_or_flag(annotation) -> bool:
    return annotation in (bool, int, float) or typing.get_origin(annotation) is Literal


def _refusal(key: str, annotation) -> str | None:
    """Why a trigger may not set this leaf key, or None for a technique knob."""
    if key.endswith("factory"):
        return "it names code to import and run"
    if key.endswith("factory_args"):
        return "it passes arguments to the code a factory names"
    if key in PATH_KEYS:
        return "it names a file to read"
    if key in SOURCE_KEYS:
        return "it switches where the data or the model come from"
    if key in LAYER_NAME_KEYS:
        return None
    alternatives = _unwrap(annotation)
    for alternative in alternatives:
        if typing.get_origin(alternative) is list:
            if all(_is_number_or_flag(item) for item in _unwrap(typing.get_args(alternative)[0])):
                continue
        elif _is_number_or_flag(alternative):
            continue
        return "it is free-form text or a mapping, not a technique knob"
    return None


def _leaf_keys(model: type[BaseModel], prefix: str = "") -> dict[str, Any]:
    """Dotted key -> annotation of every leaf field of a params section, recursively."""
    leaves = {}
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            leaves.update(_leaf_keys(annotation, f"{key}."))
        else:
            leaves[key] = annotation
    return leaves


@lru_cache(maxsize=1)
def refusals() -> dict[str, str | None]:
    """Every params leaf key -> why a trigger may not set it (None: an allowed knob)."""
    return {key: _refusal(key, annotation) for key, annotation in _leaf_keys(Params).items()
            if key != "target"}


def deployment_allow(env: dict | None = None) -> list[str]:
    """The keys (or fnmatch patterns) the deployment allows beyond the default knobs."""
    raw = (os.environ if env is None else env).get(ALLOW_VARIABLE, "")
    return [item.strip() for item in raw.split(",") if item.strip()]


def _merge_once(into: dict, addition: dict, prefix: str) -> None:
    """Merge `addition` into `into`, refusing any key both set (whichever came first)."""
    for name, value in addition.items():
        key = f"{prefix}{name}"
        if name not in into:
            into[name] = value
        elif isinstance(into[name], dict) and isinstance(value, dict):
            _merge_once(into[name], value, f"{key}.")
        else:
            raise SlimlineError(f"{SOURCE}: {key} is given twice (dotted and nested, or "
                                "repeated): give each knob once")


def _nest(overrides: dict, prefix: str = "") -> dict:
    nested: dict = {}
    for key, value in overrides.items():
        if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
            raise SlimlineError(f"{SOURCE}: '{prefix}{key}' is not a params key (use section.key)")
        if isinstance(value, dict):
            value = _nest(value, f"{prefix}{key}.")
        else:
            finite_numbers(value, f"{SOURCE}: {prefix}{key}")
        for part in reversed(key.split(".")):
            value = {part: value}
        _merge_once(nested, value, prefix)
    return nested


def normalise(overrides) -> dict:
    """A conf's overrides as one nested mapping: the one reading the policy checks and the
    tasks apply (SlimlineError, one line, for a non-mapping, a knob given twice, NaN)."""
    if overrides is None:
        return {}
    if not isinstance(overrides, dict):
        raise SlimlineError(f"{SOURCE}: overrides must be a JSON object of params "
                            f'(e.g. {{"prune.keep_ratio": 0.6}}), not {type(overrides).__name__}')
    return _nest(overrides)


def finite_numbers(value, where: str = "conf") -> None:
    """Refuse NaN and Infinity anywhere in a conf (PostgreSQL cannot store them in JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise SlimlineError(f"{where} = {value} is refused: a number must be finite")
    items = (value.items() if isinstance(value, dict)
             else enumerate(value) if isinstance(value, list) else ())
    for key, item in items:
        finite_numbers(item, f"{where}.{key}" if isinstance(value, dict) else f"{where}[{key}]")


def _set_keys(nested: dict, prefix: str = "") -> list[str]:
    """The dotted keys an override sets: down to the schema's leaves (a leaf's own mapping value,
    say factory_args, is the value); keys the schema does not know are returned as they are."""
    keys = []
    policy = refusals()
    for name, value in nested.items():
        key = f"{prefix}{name}"
        if key in policy or key == "target" or not isinstance(value, dict):
            keys.append(key)
        else:
            keys.extend(_set_keys(value, f"{key}."))
    return keys


def _value_at(nested: dict, key: str):
    for part in key.split("."):
        nested = nested[part]
    return nested


def check_allowed(nested: dict, profiles: list[str], allow: list[str] | None = None) -> None:
    """Refuse (SlimlineError, one line) the first key a trigger may not set, or sets beyond its
    bound."""
    allow = deployment_allow() if allow is None else allow
    policy = refusals()
    for key in _set_keys(nested):
        if key != "target":
            check_bound(SOURCE, key, _value_at(nested, key))
        if any(fnmatch.fnmatchcase(key, pattern) for pattern in allow):
            continue
        if key == "target":
            check_target(nested["target"], profiles)
            continue
        if key not in policy:
            # Unknown keys and whole sections given a non-mapping: the schema says it best.
            continue
        reason = policy[key]
        if reason is not None:
            raise SlimlineError(
                f"{SOURCE}: {key} is refused: {reason}; a run's trigger may only set "
                f"technique knobs (the deployment can allow more in {ALLOW_VARIABLE})"
            )


def check_target(name, profiles: list[str]) -> None:
    """`target` from a trigger: null, or the bare name of one of the repository's profiles."""
    if name is None:
        return
    if not isinstance(name, str) or not PROFILE_NAME.match(name):
        raise SlimlineError(
            f"{SOURCE}: target = {name!r} is refused: a profile is named by its bare "
            "name (letters, digits, '_' and '-'), never a path"
        )
    if name not in profiles:
        raise SlimlineError(f"{SOURCE}: target = {name!r} is refused: no such profile in profiles/ "
                            f"(known: {', '.join(profiles) or 'none'})")


def merge_overrides(params: dict, overrides: dict | None, profiles_dir: Path | None = None) -> dict:
    """params.yaml's mapping with a trigger's overrides applied, checked against the allow-list
    and validated (a `target` is folded in from `profiles_dir`); raises SlimlineError."""
    nested = normalise(overrides)
    check_allowed(nested, available_profiles(profiles_dir) if profiles_dir else [])
    merged = deep_merge(params or {}, nested)
    parse_params(merged, SOURCE, profiles_dir)
    return merged

