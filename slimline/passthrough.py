"""A stage that does not act on its input passes it through unchanged, and says why: switched
off in params, or (prune, decompose, distill) given an ONNX-only model it cannot edit."""
from __future__ import annotations

from slimline.artifact import copy_artifact, read_recipe
from slimline.stage import write_metrics
from slimline.teacher import ONNX_ARCHITECTURE

ONNX_ONLY_REASON = ("skipped: ONNX-only model (model.source onnx): this technique edits and "
                    "retrains a torch model")


def pass_through(stage: str, args, log) -> None:
    copy_artifact(args.input, args.output, stage)
    log.info("%s is disabled (params.yaml: %s.enabled = false): %s passed through unchanged to %s",
             stage, stage, args.input, args.output)
    write_metrics(args.metrics, {"enabled": 0})


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
