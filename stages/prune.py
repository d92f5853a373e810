"""prune: structured channel pruning (or unstructured magnitude pruning) + fine-tuning.

Reads the input artifact and the train/val splits, prunes with slimline/techniques/prune.py (a
Hugging Face transformer: attention heads and FFN neurons, techniques/prune_transformer.py),
records the channel changes as `resize` edits in the recipe, writes the artifact (ONNX + parity
check) and measures it against the input in ONNX Runtime, side by side.
"""
from __future__ import annotations

import copy
import time

from slimline.artifact.edits import resize_edits
from slimline.artifact.recipe import ONNX
from slimline.artifact.store import load_model, write_artifact
from slimline.data.splits import load_splits
from slimline.measure.comparison import compare_onnx, describe_onnx_comparison
from slimline.stage import artifact_arguments, passes_through, stage_main, write_metrics
from slimline.task import task_of
from slimline.techniques.channels import check_layer_names, weight_sparsity
from slimline.techniques.prune import prune_model
from slimline.techniques.prune_transformer import head_counts
from slimline.training.device import configure_from
from slimline.training.loop import seed_everything, to_tensors


def main(args, params, log):
    config = params.prune
    if passes_through("prune", config.enabled, args, log):
        return
    seed_everything(params.seed)
    configure_from(params.training, log.info)
    model, recipe = load_model(args.input)
    splits = load_splits(args.data, ("train", "val"), recipe.arguments.get("num_classes"))
    train, val = splits["train"], splits["val"]
    check_layer_names(model, config.exclude, f"{args.params}: prune.exclude")
    reference = copy.deepcopy(model)
    # An embedding model has no labels: it is judged, and repaired, by closeness to its input.
    task = task_of(recipe)
    score = task.score(reference)
    val_before = score(model, val)
    log.info(
        "input %s: val %s %.4f; %s pruning, keep ratio %g, %s importance, %s scope, %d step(s)",
        args.input,
        task.metric,
        val_before,
        config.method,
        config.keep_ratio,
        config.importance,
        config.scope,
        config.steps,
    )

    started = time.perf_counter()
    report = prune_model(model, config, to_tensors(val.head(2)), train, val, seed=params.seed,
                         log=log.info, loss_fn=task.recovery_loss(reference), score=score)
    seconds = time.perf_counter() - started
    for name, before in report.channels_before.items():
        log.info(
            "layer %-28s %4d -> %4d output channels", name, before, report.channels_after[name]
        )
    val_after = score(model, val)
    log.info("val %s: %.4f before, %.4f right after pruning, %.4f after fine-tuning",
             task.metric, val_before, report.val_top1_pruned, val_after)

    new_recipe = recipe.derive("prune", edits=recipe.edits + resize_edits(reference, model))
    difference = write_artifact(
        args.output, model, new_recipe, val.head(64), config.parity_tolerance
    )
    log.info("artifact written to %s (%d resize edits); torch/ONNX parity max |logit diff| %.2e",
             args.output, len(new_recipe.edits) - len(recipe.edits), difference)

    measured = compare_onnx(args.input / ONNX, args.output / ONNX, val.head(1),
                            runs=config.latency_runs)
    log.info("%s", describe_onnx_comparison(measured))
    sparsity = weight_sparsity(model)
    if config.method == "unstructured":
        log.info(
            "unstructured pruning: %.1f%% of Conv/Linear weights are now zero. What it buys: the "
            "zlib-compressed ONNX shrinks %d -> %d bytes (%.2fx). What it does not: the raw ONNX "
            "file (%d -> %d bytes) and the latency (measured %.2fx) stay the same, because ONNX "
            "Runtime's CPU kernels are dense and multiply the zeros like any other weight.",
            100 * sparsity,
            measured["onnx_zlib_bytes_before"],
            measured["onnx_zlib_bytes_after"],
            measured["onnx_zlib_bytes_before"] / measured["onnx_zlib_bytes_after"],
            measured["onnx_bytes_before"],
            measured["onnx_bytes_after"],
            measured["latency_speedup"],
        )
    heads = head_counts(model)
    write_metrics(
        args.metrics,
        {
            "enabled": 1,
            "structured": int(config.method == "structured"),
            "keep_ratio": config.keep_ratio,
            "steps": config.steps,
            "val_top1_before": val_before,
            "val_top1_pruned": report.val_top1_pruned,
            "val_top1_after": val_after,
            "val_top1_drop_points": round(100 * (val_before - val_after), 2),
            "weight_sparsity": sparsity,
            "onnx_parity_max_abs_diff": difference,
            "prune_and_finetune_seconds": round(seconds, 1),
            **measured,
            **(
                {
                    "attention_heads_before": sum(head_counts(reference).values()),
                    "attention_heads_after": sum(heads.values()),
                }
                if heads
                else {}
            ),
        },
    )


if __name__ == "__main__":
    stage_main("prune", main, artifact_arguments)
