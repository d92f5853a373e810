"""decompose: low-rank factorization (SVD / Tucker-2 / CP) of the layers it makes faster + fine-tuning.

Reads the input artifact and the train/val splits, factorizes with slimline/decompose.py (every
layer timed in ONNX Runtime before it is accepted), records `factorize` edits in the recipe,
writes the artifact (ONNX + parity check) and measures it against the input side by side.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path


from slimline.artifact import ONNX, build_from_recipe, load_model, write_artifact
from slimline.data import load_split
from slimline.decompose import check_config, decompose_model
from slimline.errors import SlimlineError
from slimline.embedding import fidelity_score, is_embedding_model, stay_close_loss
from slimline.passthrough import pass_through, skipped_onnx_only
from slimline.speed import compare_onnx
from slimline.stage import run_stage, write_metrics
from slimline.train import accuracy, cross_entropy, seed_everything

# Images whose activations measure each factorized layer's output error (before fine-tuning).
ERROR_SAMPLES = 64


def add_arguments(parser):
    parser.add_argument("--input", type=Path, required=True, help="input model artifact folder")
    parser.add_argument("--data", type=Path, required=True, help="folder of split .npz files")
    parser.add_argument("--output", type=Path, required=True, help="output model artifact folder")
    parser.add_argument("--metrics", type=Path, required=True, help="output: metrics JSON")


def main(args, params, log):
    config = params.decompose
    if not config.enabled:
        pass_through("decompose", args, log)
        return
    if skipped_onnx_only("decompose", args, log):
        return
    seed_everything(params.seed)
    model, recipe = load_model(args.input)
    num_classes = recipe.arguments.get("num_classes")
    train = load_split(args.data / "train.npz", num_classes)
    val = load_split(args.data / "val.npz", num_classes)
    check_config(model, config, str(args.params))
    # An embedding model has no labels: it is judged, and repaired, by closeness to its input.
    embedding = is_embedding_model(recipe)
    score, loss_fn = ((fidelity_score(copy.deepcopy(model)), stay_close_loss(copy.deepcopy(model)))
                      if embedding else (accuracy, cross_entropy))
    what = "embedding fidelity to the input model" if embedding else "top-1"
    val_before = score(model, val)
    log.info("input %s: val %s %.4f; Linear: %s, Conv2d: %s, ranks by %s (energy %g, parameter "
             "reduction %g), a layer is kept only if >= %gx faster in ONNX Runtime",
             args.input, what, val_before, config.linear_method, config.conv_method, config.rank_rule,
             config.energy, config.param_reduction, config.min_speedup)

    started = time.perf_counter()
    report = decompose_model(model, config, train.head(ERROR_SAMPLES), train, val,
                             seed=params.seed, log=log.info, loss_fn=loss_fn, score=score)
    seconds = time.perf_counter() - started
    val_after = score(model, val)
    if report.kept:
        log.info("val %s: %.4f before, %.4f right after factorizing, %.4f after fine-tuning",
                 what, val_before, report.val_top1_factorized, val_after)

    new_recipe = recipe.derive("decompose", edits=recipe.edits + report.edits)
    try:  # the recipe must rebuild exactly these tensors, or the artifact would not reload
        build_from_recipe(new_recipe).load_state_dict(model.state_dict(), strict=True)
    except RuntimeError as exc:
        raise SlimlineError(f"factorize edits do not reproduce the model ({str(exc)[:200]})") from None
    difference = write_artifact(args.output, model, new_recipe, val.head(64), config.parity_tolerance)
    log.info("artifact written to %s (%d factorize edits); torch/ONNX parity max |logit diff| %.2e",
             args.output, len(report.edits), difference)

    measured = compare_onnx(args.input / ONNX, args.output / ONNX, val.head(1),
                            runs=config.latency_runs)
    log.info("ONNX Runtime (batch 1, 1 thread, interleaved): p50 %.3f ms -> %.3f ms (%.2fx faster); "
             "parameters %d -> %d (%.2fx); MACs %d -> %d (%.2fx)",
             measured["latency_p50_ms_before"], measured["latency_p50_ms_after"],
             measured["latency_speedup"], measured["parameters_before"], measured["parameters_after"],
             measured["parameter_ratio"], measured["macs_before"], measured["macs_after"],
             measured["macs_ratio"])
    write_metrics(args.metrics, {
        "enabled": 1, "layers_considered": len(report.layers), "layers_factorized": len(report.kept),
        "val_top1_before": val_before,
        "val_top1_factorized": report.val_top1_factorized if report.kept else val_before,
        "val_top1_after": val_after, "val_top1_drop_points": round(100 * (val_before - val_after), 2),
        "onnx_parity_max_abs_diff": difference, "decompose_and_finetune_seconds": round(seconds, 1),
        **measured,
    })


if __name__ == "__main__":
    run_stage("decompose", main, add_arguments)
