"""params.yaml as a stage reads it: the file, its `target` profile folded in (profiles.py), then
validated against the schema (params.py)."""
from __future__ import annotations

from pathlib import Path

from slimline.config.params import Params, read_yaml, validate
from slimline.config.profiles import PROFILES_DIR, apply_profile


def parse_params(raw, source: str = "params.yaml", profiles: Path | None = None) -> Params:
    """Validate raw params; with `profiles` (a folder), fold in the `target` profile first."""
    if profiles is not None and isinstance(raw, dict):
        raw = apply_profile(raw, profiles, source)
    return validate(raw, source)


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    return parse_params(
        read_yaml(path, "params file"), str(path), profiles=path.parent / PROFILES_DIR
    )
