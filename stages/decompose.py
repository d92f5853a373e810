"""decompose: low-rank factorization (SVD / Tucker-2 / CP) of the layers it makes faster, then
fine-tuning.

Reads the input artifact and the train/val splits, factorizes with slimline/techniques/decompose.py
(every layer timed in ONNX Runtime before it is accepted), records `factorize` edits in the recipe,
writes the artifact (ONNX + parity check) and measures it against the input side by side.
"""
from __future__ import annotations

import copy
import functools
import time

from slimline.artifact.edits import factorize_edit
from slimline.artifact.recipe import ONNX
from slimline.artifact.store import load_model, write_artifact
from slimline.data.splits import load_splits
from slimline.measure.comparison import compare_onnx, describe_onnx_comparison
from slimline.measure.module_latency import p50_latencies
from slimline.stage import artifact_arguments, passes_through, stage_main, write_metrics
from slimline.task import task_of
from slimline.techniques.decompose import check_config, decompose_model
from slimline.training.device import configure_from
from slimline.training.loop import seed_everything

# Examples whose activations measure each factorized layer's output error (before fine-tuning).
ERROR_SAMPLES = 64


def main(args, params, log):
    config = params.decompose
    if passes_through("decompose", config.enabled, args, log):
        return
    seed_everything(params.seed)
    configure_from(params.training, log.info)
    model, recipe = load_model(args.input)
    splits = load_splits(args.data, ("train", "val"), recipe.arguments.get("num_classes"))
    train, val = splits["train"], splits["val"]
    check_config(model, config, str(args.params))
    # An embedding model has no labels: it is judged, and repaired, by closeness to its input.
    task, reference = task_of(recipe), copy.deepcopy(model)
    score = task.score(reference)
    val_before = score(model, val)
    log.info("input %s: val %s %.4f; Linear: %s, Conv2d: %s, ranks by %s (energy %g, parameter "
             "reduction %g), a layer is kept only if >= %gx faster in ONNX Runtime",
             args.input, task.metric, val_before, config.linear_method, config.conv_method,
             config.rank_rule, config.energy, config.param_reduction, config.min_speedup)

    started = time.perf_counter()
    report = decompose_model(model, config, train.head(ERROR_SAMPLES), train, val,
                             seed=params.seed, log=log.info, loss_fn=task.recovery_loss(reference),
                             score=score,
                             measure_latency=functools.partial(p50_latencies,
                                                               runs=config.latency_runs))
    seconds = time.perf_counter() - started
    val_after = score(model, val)
    if report.kept:
        log.info("val %s: %.4f before, %.4f right after factorizing, %.4f after fine-tuning",
                 task.metric, val_before, report.val_top1_factorized, val_after)

    edits = [factorize_edit(layer.layer, layer.method, layer.ranks) for layer in report.kept]
    new_recipe = recipe.derive("decompose", edits=recipe.edits + edits)
    difference = write_artifact(
        args.output, model, new_recipe, val.head(64), config.parity_tolerance
    )
    log.info("artifact written to %s (%d factorize edits); torch/ONNX parity max |logit diff| %.2e",
             args.output, len(edits), difference)

    measured = compare_onnx(args.input / ONNX, args.output / ONNX, val.head(1),
                            runs=config.latency_runs)
    log.info("%s", describe_onnx_comparison(measured))
    write_metrics(
        args.metrics,
        {
            "enabled": 1,
            "layers_considered": len(report.layers),
            "layers_factorized": len(report.kept),
            "val_top1_before": val_before,
            "val_top1_factorized": report.val_top1_factorized if report.kept else val_before,
            "val_top1_after": val_after,
            "val_top1_drop_points": round(100 * (val_before - val_after), 2),
            "onnx_parity_max_abs_diff": difference,
            "decompose_and_finetune_seconds": round(seconds, 1),
            **measured,
        },
    )


if __name__ == "__main__":
    stage_main("decompose", main, artifact_arguments)
