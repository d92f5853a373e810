"""How far a trigger may turn each knob: the bounds of the overrides' allow-list.

The params schema says what a value may be (a ratio in (0, 1], a positive epoch count); it does
not say what one run may cost. A trigger is not trusted, so every number it may set has an upper
bound on its size and every list or mapping a bound on its length: `prepare.train.epochs:
100000000` is refused in one line before the run exists instead of holding a worker for years.

Defaults below (first matching fnmatch pattern wins; `*` bounds every other number, so a knob
added to the schema later is bounded too). The deployment, never the conf, changes them:

    SLIMLINE_OVERRIDES_BOUNDS="prepare.train.epochs=200,*.latency_runs=20000,items:model.widths=12"

(`items:<key>` bounds a list's or mapping's length). Booleans and choices are bounded by what
they are. A stage's wall time is bounded apart from this, by its task's execution timeout
(SLIMLINE_STAGE_TIMEOUT_MINUTES, slimline/nightly/config.py).
"""
from __future__ import annotations

import fnmatch
import os

from slimline.errors import SlimlineError

BOUNDS_VARIABLE = "SLIMLINE_OVERRIDES_BOUNDS"

# The largest size of a number a trigger may set. Measured on the 2-core CI machine: a default
# teacher epoch on MNIST takes about 30 s, so 100 epochs is under an hour of prepare.
DEFAULT_BOUNDS: dict[str, float] = {
    "*.epochs": 100,
    "prune.steps": 20,
    "prune.taylor_batches": 1000,
    "*.latency_runs": 5000,
    "*.latency_rounds": 100,
    "evaluate.rounds": 100,
    "evaluate.warmup_runs": 1000,
    "evaluate.throughput_runs": 1000,
    "evaluate.throughput_batch": 1024,
    "*batch_size": 4096,
    "data.val_size": 100_000,
    "data.test_size": 100_000,
    "data.calibration_size": 100_000,
    "data.text.max_length": 512,
    "data.preprocess.size": 1024,
    "model.widths": 1024,
    "distill.student_widths": 1024,
    "distill.student_layers": 48,
    "model.blocks_per_stage": 8,
    "model.num_classes": 100_000,
    "distill.text_variants": 32,
    "*.max_shift": 16,
    "evaluate.threads": 64,
    "quantize.block_size": 4096,
    "decompose.ranks": 100_000,
    "seed": 2**32 - 1,
    # the search DAG's own params
    "minutes": 24 * 60,
    "max_trials": 1000,
    # rates, ratios, weights, tolerances, budgets: the schema's ranges hold most; finite here
    "*": 1_000_000,
}
# The longest list or mapping: layer names of a large model, else a few numbers.
DEFAULT_ITEMS: dict[str, int] = {
    "prune.exclude": 1000,
    "decompose.exclude": 1000,
    "decompose.ranks": 1000,
    "*": 16,
}


def deployment_bounds(env=None) -> tuple[dict[str, float], dict[str, int]]:
    """(number bounds, length bounds): the deployment's entries first, then the defaults."""
    raw = (os.environ if env is None else env).get(BOUNDS_VARIABLE, "")
    numbers: dict[str, float] = {}
    items: dict[str, int] = {}
    for entry in filter(None, (part.strip() for part in raw.split(","))):
        key, sep, bound = entry.partition("=")
        try:
            value = float(bound)
        except ValueError:
            value = None
        if not sep or value is None or value < 0:
            raise SlimlineError(f"{BOUNDS_VARIABLE}: {entry!r} is not key=bound")
        if key.startswith("items:"):
            items[key.removeprefix("items:").strip()] = int(value)
        else:
            numbers[key.strip()] = value
    return _before(numbers, DEFAULT_BOUNDS), _before(items, DEFAULT_ITEMS)


def _before(first: dict, then: dict) -> dict:
    return {**first, **{key: value for key, value in then.items() if key not in first}}


def _first(table: dict, key: str):
    return next(bound for pattern, bound in table.items() if fnmatch.fnmatchcase(key, pattern))


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_bound(source: str, key: str, value, env=None) -> None:
    """SlimlineError (one line) when `value` for `key` is beyond the deployment's bounds."""
    numbers, lengths = deployment_bounds(env)
    why = f"(the deployment sets bounds in {BOUNDS_VARIABLE})"
    if isinstance(value, list | dict):
        longest = _first(lengths, key)
        if len(value) > longest:
            raise SlimlineError(f"{source}: {key} has {len(value)} items, more than its bound "
                                f"{longest} {why}")
        members = value.values() if isinstance(value, dict) else value
    else:
        members = [value]
    bound = _first(numbers, key)
    for member in members:
        if _is_number(member) and abs(member) > bound:
            raise SlimlineError(f"{source}: {key} = {member!r} is refused: beyond its bound "
                                f"{bound:g} {why}")
