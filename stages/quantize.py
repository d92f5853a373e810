"""quantize: the fp32 model becomes int8 (or 4-bit weights) in ONNX Runtime, calibrated on the
calibration split (slimline/techniques/quantize.py; schemes in slimline/config/schemes.py); the
log shows the CPU's int8 support, per-tensor quantization error, and fp32 vs int8 quality, size
and measured latency side by side (slimline/measure/comparison.py). A transformer's graph is
fused first where that holds parity and measures faster (quantize.fuse,
slimline/techniques/fusion.py)."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import onnx

from slimline.artifact.recipe import ONNX, ONNX_ARCHITECTURE, read_recipe, write_onnx_artifact
from slimline.artifact.store import load_model
from slimline.config.schemes import SCHEMES
from slimline.data.splits import load_split, load_splits
from slimline.errors import SlimlineError
from slimline.measure.comparison import compare_precisions
from slimline.measure.graph import load_onnx
from slimline.measure.runtime import check_feeds, make_session
from slimline.stage import artifact_arguments, pass_through, stage_main, write_metrics
from slimline.task import task_of
from slimline.techniques.layer_error import layer_lines
from slimline.techniques.quantize import (
    VNNI_FLAGS,
    choose_int8_target,
    cpu_int8_features,
    quantize_model,
)

# Layers named in the log as adding the most int8 error.
WORST_LAYERS = 5


def fp32_graph(args, params, calibration, target, log) -> onnx.ModelProto:
    """The graph to quantize: the input's, or (qat) that of the input fine-tuned under fake int8."""
    config = params.quantize
    if not SCHEMES[config.scheme].needs_torch:
        return load_onnx(args.input / ONNX)
    from slimline.artifact.onnx_export import export_onnx
    from slimline.techniques.qat import quantization_aware_training
    from slimline.training.loop import to_tensors

    model, recipe = load_model(args.input)
    train = load_split(args.data / "train.npz", params.model.num_classes)
    tuned = quantization_aware_training(model, train, calibration, config, target, seed=params.seed,
                                        log=log.info)
    with tempfile.TemporaryDirectory(prefix="slimline-qat-") as tmp:
        path = Path(tmp) / "qat.onnx"
        export_onnx(tuned, to_tensors(calibration.head(2)), path, axes=recipe.axes,
                    output_name=recipe.output_name)
        return onnx.load(str(path))


def fused_graph(args, params, splits, log):
    """(graph, report): the input transformer re-exported for ORT's fusion and fused, or (None,
    report) where fusion is off, does not apply or is not kept."""
    from slimline.artifact.onnx_export import export_onnx
    from slimline.models.huggingface import fusable_text_model
    from slimline.techniques.fusion import choose_fusion, fuse_transformer
    from slimline.training.loop import to_tensors

    config = params.quantize
    model, recipe = load_model(args.input)
    try:
        wrapper, heads, width = fusable_text_model(model)
    except SlimlineError as exc:
        if config.fuse == "on":
            raise SlimlineError(f"quantize.fuse = on: {exc}") from None
        log.info("graph fusion skipped: %s", exc)
        return None, None
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="slimline-fuse-") as tmp:
        path = Path(tmp) / "eager.onnx"
        export_onnx(wrapper, to_tensors(splits["val"].head(2)), path, axes=recipe.axes,
                    output_name=recipe.output_name)
        fused, counts = fuse_transformer(onnx.load(str(path)), heads, width)
    report = choose_fusion(load_onnx(args.input / ONNX), fused, counts, splits["val"].head(64),
                           splits["val"].head(1), mode=config.fuse, runs=config.latency_runs,
                           rounds=config.latency_rounds)
    log.info("%s [%.0f s]", report.describe(), time.perf_counter() - started)
    if config.fuse == "on" and not report.kept:
        raise SlimlineError(f"quantize.fuse = on: the fused graph cannot be used ({report.reason})")
    return (fused if report.kept else None), report


def main(args, params, log):
    config = params.quantize
    if not config.enabled:
        pass_through("quantize", args, log)
        return
    scheme = SCHEMES[config.scheme]
    num_classes = params.model.num_classes
    recipe = read_recipe(args.input)
    if recipe.precision != "fp32":
        raise SlimlineError(f"{args.input}: model is already quantized ({recipe.precision}); "
                            f"quantize needs an fp32 model")
    if scheme.needs_torch and recipe.architecture == ONNX_ARCHITECTURE:
        raise SlimlineError(
            f"{args.params}: quantize.scheme = {scheme.name} needs a torch model to "
            f"fine-tune; {args.input} is ONNX-only (model.source onnx): use static "
            "or dynamic"
        )
    fp32_path = args.input / ONNX
    splits = load_splits(args.data, ("calibration", "val", "test"), num_classes)
    calibration = splits.pop("calibration")
    check_feeds(make_session(fp32_path), calibration.inputs, str(fp32_path))

    features = cpu_int8_features()
    target = choose_int8_target(config, features)
    vnni = any(flag in features for flag in VNNI_FLAGS)
    log.info(
        "CPU int8 support: %s (VNNI %s, AMX %s)",
        ", ".join(sorted(features)) or "none detected",
        "yes" if vnni else "no",
        "yes" if "amx_int8" in features else "no",
    )
    transformer = recipe.architecture == "huggingface"
    log.info("scheme %s: %s", scheme.name, target.reason if scheme.name != "weight_only_4bit"
             else f"4-bit weight-only MatMulNBits, block {config.block_size}"
             + (", embedding tables as GatherBlockQuantized (int4)" if transformer else ""))
    task = task_of(recipe)
    if scheme.needs_torch or transformer:
        from slimline.training.device import configure_from

        configure_from(params.training, log.info)

    started = time.perf_counter()
    graph, fusion = None, None
    if transformer and scheme.name == "dynamic" and config.fuse != "off":
        graph, fusion = fused_graph(args, params, splits, log)
    quantized, report = quantize_model(
        graph if graph is not None else fp32_graph(args, params, calibration, target, log),
        calibration, config, target, transformer=transformer, fused=graph is not None,
        embedding=task.is_embedding, log=log.info)
    seconds = time.perf_counter() - started
    log.info("quantized in %.1f s (%d calibration examples, %s calibration); graph ops: %s",
             seconds, len(calibration), config.calibration_method,
             ", ".join(f"{op} {count}" for op, count in report.quantized_ops.items()))
    for line in report.tensor_lines() + layer_lines(report.layers, WORST_LAYERS):
        log.info("%s", line)

    shipped_scheme = SCHEMES[report.scheme]   # static may fall back to dynamic (transformers)
    with tempfile.TemporaryDirectory(prefix="slimline-quant-") as tmp:
        int8_path = Path(tmp) / "model.onnx"
        onnx.save(quantized, str(int8_path))
        compared = compare_precisions(fp32_path, int8_path, splits, task, runs=config.latency_runs,
                                      rounds=config.latency_rounds)
        # 4-bit weight-only is the size-first scheme, slower by design; int8 is for speed
        ships_fp32 = shipped_scheme.name != "weight_only_4bit" \
            and compared.speedup < config.min_speedup
        if ships_fp32:
            write_onnx_artifact(args.output, fp32_path, recipe.derive("quantize", precision="fp32"))
        else:
            write_onnx_artifact(args.output, int8_path,
                                recipe.derive("quantize", precision=shipped_scheme.precision))

    for line in compared.summary(task):
        log.info("%s", line)
    latency = compared.latency_p50_ms
    if ships_fp32:
        log.warning("the int8 graph ran %.2fx of its fp32 input's speed (%.3f ms vs %.3f ms; "
                    "quantize.min_speedup %g; int8 support here: %s): shipping the fp32 input "
                    "instead", compared.speedup, latency["int8"], latency["fp32"],
                    config.min_speedup, ", ".join(sorted(features)) or "none")
    elif compared.speedup < 1:
        log.warning("the quantized model is SLOWER than fp32 on this CPU: %.3f ms vs %.3f ms "
                    "(%.2fx), shipped as quantize.min_speedup = %g allows", latency["int8"],
                    latency["fp32"], compared.speedup, config.min_speedup)
    if not task.is_embedding and compared.drop_points("val") > config.max_top1_drop:
        log.warning("quantization lost %.2f val top-1 points, more than quantize.max_top1_drop = "
                    "%g; try calibration_method, per_channel or scheme: qat",
                    compared.drop_points("val"), config.max_top1_drop)
    if shipped_scheme.name == "weight_only_4bit":
        log.info("4-bit weight-only is the size-first scheme: measured here %.2fx of fp32's speed "
                 "(MatMulNBits at batch 1 ran 0.86-0.94x of fp32 on an AVX2 CPU)", compared.speedup)
    log.info("quantized artifact written to %s (precision %s)", args.output,
             "fp32" if ships_fp32 else shipped_scheme.precision)
    metrics = {"enabled": 1, **compared.metrics(task), "shipped_fp32": ships_fp32,
               "cpu_vnni": vnni,
               "reduce_range": bool(report.settings.get("reduce_range", target.reduce_range)),
               "quantize_seconds": round(seconds, 1), "calibration_images": len(calibration),
               "fused": bool(fusion and fusion.kept)}
    if fusion is not None and fusion.speedup is not None:
        metrics["fusion_fp32_speedup"] = fusion.speedup
        metrics["fused_attention"] = fusion.fused_ops.get("Attention", 0)
    for key in ("fidelity_reduce_range", "fidelity_full_range", "fidelity_static",
                "fidelity_dynamic", "fidelity_plain", "fidelity_equalized",
                "fidelity_bias_corrected", "fidelity_fp32_layers", "fidelity_shipped",
                "equalized", "bias_corrected"):
        if key in report.settings:
            metrics[key] = report.settings[key]
    if report.layers:
        metrics["fp32_layers"] = len(report.settings.get("fp32_layers", []))
        worst = min(report.layers, key=lambda row: row.own_sqnr_db)
        metrics["worst_layer"] = worst.name
        metrics["worst_layer_own_sqnr_db"] = round(worst.own_sqnr_db, 2)
        metrics["lowest_layer_sqnr_db"] = round(min(row.sqnr_db for row in report.layers), 2)
    for kind in ("weight", "activation"):
        if report.worst_sqnr_db(kind) is not None:
            metrics[f"worst_{kind}_sqnr_db"] = report.worst_sqnr_db(kind)
    write_metrics(args.metrics, metrics)


if __name__ == "__main__":
    stage_main("quantize", main, artifact_arguments)
