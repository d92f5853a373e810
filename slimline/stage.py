"""The stage contract, in one place: params, a readable log, metrics, one-line failures, and
the pass-through of a stage that does not act.

Every stage module ends with `stage_main("name", main, add_arguments)`. `main(args, params, log)`
does the work; whatever goes wrong reaches the user as one line on stderr and a non-zero exit,
with the traceback (if any) kept in the stage's log file for whoever debugs it.
"""
from __future__ import annotations

import argparse
import errno
import logging
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from slimline.artifact.atomic import write_json
from slimline.artifact.recipe import ONNX_ARCHITECTURE, copy_artifact, read_recipe
from slimline.config.load import load_params
from slimline.config.params import Params
from slimline.config.user_code import user_code_path
from slimline.errors import SlimlineError
from slimline.measure.lineage import code_revision, cpu_info, flatten, package_versions, sha256_file

EXIT_BAD_INPUT, EXIT_CRASH = 2, 1


class _NoTraceback(logging.Formatter):
    """Console lines stay one line each; tracebacks go to the log file only."""

    def format(self, record: logging.LogRecord) -> str:
        saved, record.exc_info, record.exc_text = record.exc_info, None, None
        try:
            return super().format(record)
        finally:
            record.exc_info = saved


def stage_logger(stage: str, log_file: Path | None) -> logging.Logger:
    logger = logging.getLogger(f"slimline.{stage}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.handlers.clear()
    layout = ("%(asctime)s %(name)s %(levelname)s %(message)s", "%H:%M:%S")
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(_NoTraceback(*layout))
    logger.addHandler(console)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(log_file, mode="w")
        to_file.setFormatter(logging.Formatter(*layout))
        logger.addHandler(to_file)
    # Library warnings (torch's notes on pickles, deprecations) go to the stage log, never to
    # stderr, where the one-line error is all a user should have to read.
    warnings_logger = logging.getLogger("py.warnings")
    warnings_logger.handlers = list(logger.handlers)
    warnings_logger.propagate = False
    # Set on every call, not through logging.captureWarnings: that hooks only once per process
    # and stays silent after anything (a test runner, a second stage) restored the original.
    warnings.showwarning = _warning_to_log
    return logger


def _warning_to_log(message, category, filename, lineno, file=None, line=None) -> None:
    text = warnings.formatwarning(message, category, filename, lineno, line).rstrip()
    logging.getLogger("py.warnings").warning("%s", text)


def write_metrics(path: str | Path, metrics: dict) -> None:
    """Flat keys with numbers (or lineage strings), so `dvc metrics diff` compares every key."""
    flat = {
        key: (int(value) if isinstance(value, bool) else value) for key, value in metrics.items()
    }
    bad = [key for key, value in flat.items() if not isinstance(value, (int, float, str))]
    if bad:
        raise TypeError(f"metrics must be flat numbers or strings; not: {bad}")
    write_json(path, flat)


def add_lineage(path: Path, params_file: Path, seed: int) -> None:
    """Every stage's metrics say which code, params, packages and machine made them."""
    import json

    torch = sys.modules.get("torch")  # threads only matter to stages that train with torch
    device = sys.modules.get("slimline.training.device")  # set by stages that train
    metrics = json.loads(path.read_text())
    metrics.update(
        flatten(
            {
                "code_revision": code_revision(),
                "params_sha256": sha256_file(params_file),
                "packages": package_versions(),
                "cpu": cpu_info(),
                "torch_threads": torch.get_num_threads() if torch else 0,
                "training_device": device.current().name if device else "none",
                "seed": seed,
            }
        )
    )
    write_json(path, metrics)


def raise_unexpected(stage: str, exc: BaseException, log: logging.Logger, log_file: Path | None):
    log.error("unexpected failure", exc_info=exc)
    where = f" (traceback in {log_file})" if log_file else ""
    first_line = (str(exc).strip().splitlines() or [""])[0]
    print(f"slimline {stage}: unexpected error: {type(exc).__name__}: {first_line}{where}",
          file=sys.stderr)
    sys.exit(EXIT_CRASH)


def stage_main(stage: str, main: Callable[[argparse.Namespace, Params, logging.Logger], None],
              add_arguments: Callable[[argparse.ArgumentParser], None],
              argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m stages.{stage}")
    parser.add_argument("--params", default="params.yaml", type=Path, help="params file")
    parser.add_argument("--log", type=Path, help="also write the stage log to this file")
    add_arguments(parser)
    args = parser.parse_args(argv)
    user_code_path(args.params.parent)  # model/data factories named in params live beside it
    log = stage_logger(stage, args.log)
    started = time.perf_counter()
    try:
        params = load_params(args.params)
        log.info("stage %s started (params %s, seed %d, target profile: %s)", stage, args.params,
                 params.seed, params.target or "none")
        main(args, params, log)
        metrics_file = getattr(args, "metrics", None)
        if metrics_file is not None and metrics_file.is_file():
            add_lineage(metrics_file, args.params, params.seed)
    except SlimlineError as exc:
        log.error("%s", exc)
        print(f"slimline {stage}: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise_unexpected(stage, exc, log, args.log)
        print(
            f"slimline {stage}: error: {exc.filename or 'output'}: no space left on device; "
            "nothing was published",
            file=sys.stderr,
        )
        sys.exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        print(f"slimline {stage}: interrupted; no output was published", file=sys.stderr)
        sys.exit(130)
    except (
        Exception
    ) as exc:  # a bug or an unforeseen input: one line here, the traceback in the log
        raise_unexpected(stage, exc, log, args.log)
    log.info("stage %s finished in %.1f s", stage, time.perf_counter() - started)


def artifact_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of a stage that turns one model artifact into another (prune, decompose,
    distill, quantize)."""
    parser.add_argument("--input", type=Path, required=True, help="input model artifact folder")
    parser.add_argument("--data", type=Path, required=True, help="folder of split .npz files")
    parser.add_argument("--output", type=Path, required=True, help="output model artifact folder")
    parser.add_argument("--metrics", type=Path, required=True, help="output: metrics JSON")


ONNX_ONLY_REASON = ("skipped: ONNX-only model (model.source onnx): this technique edits and "
                    "retrains a torch model")


def pass_through(stage: str, args, log) -> None:
    """A switched-off stage: its input, unchanged, becomes its output (the report shows it)."""
    copy_artifact(args.input, args.output, stage)
    log.info("%s is disabled (params.yaml: %s.enabled = false): %s passed through unchanged to %s",
             stage, stage, args.input, args.output)
    write_metrics(args.metrics, {"enabled": 0})


def passes_through(stage: str, enabled: bool, args, log) -> bool:
    """True when a technique stage does not act on its input, which then becomes its output:
    switched off in params, or given an ONNX-only model it cannot edit and retrain."""
    if not enabled:
        pass_through(stage, args, log)
        return True
    return skipped_onnx_only(stage, args, log)


def skipped_onnx_only(stage: str, args, log) -> bool:
    """Pass an ONNX-only input through (True), with the reason in the log and the recipe history
    the report shows; False for a torch model, which the stage then compresses."""
    if read_recipe(args.input).architecture != ONNX_ARCHITECTURE:
        return False
    copy_artifact(args.input, args.output, stage, note=ONNX_ONLY_REASON)
    log.warning("%s %s; %s passed through unchanged to %s", stage, ONNX_ONLY_REASON, args.input,
                args.output)
    write_metrics(args.metrics, {"enabled": 1, "skipped_onnx_only": 1})
    return True
