"""dvc.yaml -> the stage graph the DAG mirrors: one task per stage, the same dependencies.

Read straight from dvc.yaml (YAML only, no DVC import) because the scheduler parses the DAG file
every few seconds. A stage depends on another when one of its deps is, contains or lies inside
one of the other's outputs (outs, metrics or plots) — the rule DVC itself uses.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from slimline.config.params import read_yaml
from slimline.errors import SlimlineError

OUTPUT_KINDS = ("outs", "metrics", "plots")


@dataclass(frozen=True)
class Output:
    path: str
    cached: bool  # cache: false outputs (metrics) live in git, not in the DVC cache


@dataclass(frozen=True)
class Stage:
    name: str
    deps: tuple[str, ...]
    outputs: tuple[Output, ...]
    upstream: tuple[str, ...] = field(default=())


def _entries(raw_list) -> list[tuple[str, dict]]:
    """dvc.yaml lists paths either as strings or as one-key mappings {path: options}."""
    entries = []
    for item in raw_list or []:
        if isinstance(item, str):
            entries.append((item, {}))
        elif isinstance(item, dict):
            entries.extend((path, options or {}) for path, options in item.items())
    return entries


def _overlaps(dep: str, out: str) -> bool:
    dep_path, out_path = PurePosixPath(dep), PurePosixPath(out)
    return dep_path == out_path or out_path in dep_path.parents or dep_path in out_path.parents


def parse_pipeline(raw: dict, source: str = "dvc.yaml") -> dict[str, Stage]:
    stages_raw = (raw or {}).get("stages")
    if not isinstance(stages_raw, dict) or not stages_raw:
        raise SlimlineError(f"{source}: no stages defined")
    parsed: dict[str, Stage] = {}
    for name, body in stages_raw.items():
        if not isinstance(body, dict) or "cmd" not in body:
            raise SlimlineError(f"{source}: stage '{name}' has no cmd")
        if "foreach" in body or "matrix" in body or "wdir" in body:
            # Each would need its own task naming and workspace rules; none is used yet.
            raise SlimlineError(f"{source}: stage '{name}' uses foreach/matrix/wdir, which the "
                                "nightly DAG does not support")
        outputs = tuple(Output(path, bool(options.get("cache", True)))
                        for kind in OUTPUT_KINDS for path, options in _entries(body.get(kind)))
        deps = tuple(path for path, _ in _entries(body.get("deps")))
        parsed[name] = Stage(name, deps, outputs)

    with_upstream = {}
    for name, stage in parsed.items():
        upstream = tuple(other.name for other in parsed.values() if other.name != name and any(
            _overlaps(dep, out.path) for dep in stage.deps for out in other.outputs))
        with_upstream[name] = Stage(stage.name, stage.deps, stage.outputs, upstream)
    _check_acyclic(with_upstream, source)
    return with_upstream


def _check_acyclic(stages: dict[str, Stage], source: str) -> None:
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in path:
            raise SlimlineError(f"{source}: stages form a cycle: {' -> '.join(path + (name,))}")
        if name not in done:
            for parent in stages[name].upstream:
                visit(parent, path + (name,))
            done.add(name)

    for name in stages:
        visit(name, ())


def load_pipeline(path: str | Path) -> dict[str, Stage]:
    """Stages in dvc.yaml order, each with the names of the stages it needs."""
    return parse_pipeline(read_yaml(path), str(path))


def final_stages(stages: dict[str, Stage]) -> list[str]:
    """Stages nothing else depends on: publish waits for these."""
    needed = {parent for stage in stages.values() for parent in stage.upstream}
    return [name for name in stages if name not in needed]
