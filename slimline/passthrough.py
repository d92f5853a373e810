"""A switched-off technique stage: its input goes through unchanged, and it says so."""
from __future__ import annotations

from slimline.artifact import copy_artifact
from slimline.stage import write_metrics


def pass_through(stage: str, args, log) -> None:
    copy_artifact(args.input, args.output, stage)
    log.info("%s is disabled (params.yaml: %s.enabled = false): %s passed through unchanged to %s",
             stage, stage, args.input, args.output)
    write_metrics(args.metrics, {"enabled": 0})
