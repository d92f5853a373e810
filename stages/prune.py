"""prune: structured channel pruning (or unstructured magnitude pruning) + fine-tuning.

Reads the input artifact and the train/val splits, prunes with slimline/prune.py (a Hugging
Face transformer: attention heads and FFN neurons, slimline/prune_transformer.py), records the
channel changes as `resize` edits in the recipe, writes the artifact (ONNX + parity check) and
measures it against the input in ONNX Runtime, side by side.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path

import torch

from slimline.artifact import ONNX, build_from_recipe, load_model, write_artifact
from slimline.data import load_split
from slimline.errors import SlimlineError
from slimline.passthrough import pass_through, skipped_onnx_only
from slimline.prune import check_layer_names, prune_structured, prune_unstructured, weight_sparsity
from slimline.recipe import resize_edits
from slimline.prune_transformer import head_counts, prune_transformer
from slimline.speed import compare_onnx
from slimline.stage import run_stage, write_metrics
from slimline.embedding import fidelity_score, is_embedding_model, stay_close_loss
from slimline.train import accuracy, cross_entropy, seed_everything, to_tensors


def add_arguments(parser):
    parser.add_argument("--input", type=Path, required=True, help="input model artifact folder")
    parser.add_argument("--data", type=Path, required=True, help="folder of split .npz files")
    parser.add_argument("--output", type=Path, required=True, help="output model artifact folder")
    parser.add_argument("--metrics", type=Path, required=True, help="output: metrics JSON")


def check_replay(recipe, model) -> None:
    """The recipe must rebuild exactly these tensor shapes, or the artifact would not reload."""
    skeleton = build_from_recipe(recipe)
    try:
        skeleton.load_state_dict(model.state_dict(), strict=True)
    except RuntimeError as exc:
        raise SlimlineError(f"recipe edits do not reproduce the pruned model ({str(exc)[:200]})") from None


def main(args, params, log):
    config = params.prune
    if not config.enabled:
        pass_through("prune", args, log)
        return
    if skipped_onnx_only("prune", args, log):
        return
    seed_everything(params.seed)
    model, recipe = load_model(args.input)
    num_classes = recipe.arguments.get("num_classes")
    train = load_split(args.data / "train.npz", num_classes)
    val = load_split(args.data / "val.npz", num_classes)
    check_layer_names(model, config.exclude, f"{args.params}: prune.exclude")
    reference = copy.deepcopy(model)
    example = to_tensors(val.head(1))
    embedding = is_embedding_model(recipe)
    # An embedding model has no labels: it is judged, and repaired, by closeness to its input.
    score, loss_fn = ((fidelity_score(reference), stay_close_loss(copy.deepcopy(model))) if embedding
                      else (accuracy, cross_entropy))
    what = "embedding fidelity to the input model" if embedding else "top-1"
    val_before = score(model, val)
    log.info("input %s: val %s %.4f; %s pruning, keep ratio %g, %s importance, %s scope, %d step(s)",
             args.input, what, val_before, config.method, config.keep_ratio, config.importance,
             config.scope, config.steps)

    started = time.perf_counter()
    if recipe.architecture == "huggingface":
        heads_before = head_counts(model)
        report = prune_transformer(model, config, to_tensors(val.head(2)), train, val, seed=params.seed,
                                   log=log.info, loss_fn=loss_fn, score=score)
    elif config.method == "structured":
        report = prune_structured(model, config, example, train, val, seed=params.seed, log=log.info)
    else:
        report = prune_unstructured(model, config, train, val, seed=params.seed, log=log.info)
    seconds = time.perf_counter() - started
    for name, before in report.channels_before.items():
        log.info("layer %-28s %4d -> %4d output channels", name, before, report.channels_after[name])
    val_after = score(model, val)
    log.info("val %s: %.4f before, %.4f right after pruning, %.4f after fine-tuning",
             what, val_before, report.val_top1_pruned, val_after)

    new_recipe = recipe.derive("prune", edits=recipe.edits + resize_edits(reference, model))
    check_replay(new_recipe, model)
    difference = write_artifact(args.output, model, new_recipe, val.head(64), config.parity_tolerance)
    log.info("artifact written to %s (%d resize edits); torch/ONNX parity max |logit diff| %.2e",
             args.output, len(new_recipe.edits) - len(recipe.edits), difference)

    measured = compare_onnx(args.input / ONNX, args.output / ONNX, val.head(1),
                            runs=config.latency_runs)
    log.info("ONNX Runtime (batch 1, 1 thread, interleaved): p50 %.3f ms -> %.3f ms (%.2fx faster); "
             "parameters %d -> %d (%.2fx); MACs %d -> %d (%.2fx)",
             measured["latency_p50_ms_before"], measured["latency_p50_ms_after"],
             measured["latency_speedup"], measured["parameters_before"], measured["parameters_after"],
             measured["parameter_ratio"], measured["macs_before"], measured["macs_after"],
             measured["macs_ratio"])
    sparsity = weight_sparsity(model)
    if config.method == "unstructured":
        log.info("unstructured pruning: %.1f%% of Conv/Linear weights are now zero. What it buys: the "
                 "zlib-compressed ONNX shrinks %d -> %d bytes (%.2fx). What it does not: the raw ONNX "
                 "file (%d -> %d bytes) and the latency (measured %.2fx) stay the same, because ONNX "
                 "Runtime's CPU kernels are dense and multiply the zeros like any other weight.",
                 100 * sparsity, measured["onnx_zlib_bytes_before"], measured["onnx_zlib_bytes_after"],
                 measured["onnx_zlib_bytes_before"] / measured["onnx_zlib_bytes_after"],
                 measured["onnx_bytes_before"], measured["onnx_bytes_after"],
                 measured["latency_speedup"])
    write_metrics(args.metrics, {
        "enabled": 1, "structured": int(config.method == "structured"),
        "keep_ratio": config.keep_ratio, "steps": config.steps,
        "val_top1_before": val_before, "val_top1_pruned": report.val_top1_pruned,
        "val_top1_after": val_after, "val_top1_drop_points": round(100 * (val_before - val_after), 2),
        "weight_sparsity": sparsity, "onnx_parity_max_abs_diff": difference,
        "prune_and_finetune_seconds": round(seconds, 1), **measured,
        **({"attention_heads_before": sum(heads_before.values()),
            "attention_heads_after": sum(head_counts(model).values())}
           if recipe.architecture == "huggingface" else {}),
    })


if __name__ == "__main__":
    run_stage("prune", main, add_arguments)
