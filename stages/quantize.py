"""quantize: the fp32 model becomes int8 (or 4-bit weights) in ONNX Runtime, calibrated on the
calibration split (slimline/techniques/quantize.py; schemes in slimline/config/schemes.py); the
log shows the CPU's int8 support, per-tensor quantization error, and fp32 vs int8 quality, size
and measured latency side by side (slimline/measure/comparison.py)."""
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
from slimline.techniques.quantize import (
    VNNI_FLAGS,
    choose_int8_target,
    cpu_int8_features,
    quantize_model,
)


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
    log.info("scheme %s: %s", scheme.name, target.reason if scheme.name != "weight_only_4bit"
             else f"4-bit weight-only MatMulNBits, block {config.block_size}")

    started = time.perf_counter()
    quantized, report = quantize_model(fp32_graph(args, params, calibration, target, log),
                                       calibration, config, target,
                                       transformer=recipe.architecture == "huggingface")
    seconds = time.perf_counter() - started
    log.info("quantized in %.1f s (%d calibration examples, %s calibration); graph ops: %s",
             seconds, len(calibration), config.calibration_method,
             ", ".join(f"{op} {count}" for op, count in report.quantized_ops.items()))
    for line in report.tensor_lines():
        log.info("%s", line)

    task = task_of(recipe)
    with tempfile.TemporaryDirectory(prefix="slimline-quant-") as tmp:
        int8_path = Path(tmp) / "model.onnx"
        onnx.save(quantized, str(int8_path))
        compared = compare_precisions(fp32_path, int8_path, splits, task, runs=config.latency_runs,
                                      rounds=config.latency_rounds)
        write_onnx_artifact(args.output, int8_path,
                            recipe.derive("quantize", precision=scheme.precision))

    for line in compared.summary(task):
        log.info("%s", line)
    latency = compared.latency_p50_ms
    if compared.speedup < 1:
        log.warning("the quantized model is SLOWER than fp32 on this CPU: %.3f ms vs %.3f ms "
                    "(%.2fx). Int8 support here: %s. Consider scheme, activation_type or shipping "
                    "fp32.", latency["int8"], latency["fp32"], compared.speedup,
                    ", ".join(sorted(features)) or "none")
    if not task.is_embedding and compared.drop_points("val") > config.max_top1_drop:
        log.warning("quantization lost %.2f val top-1 points, more than quantize.max_top1_drop = "
                    "%g; try calibration_method, per_channel or scheme: qat",
                    compared.drop_points("val"), config.max_top1_drop)
    log.info("quantized artifact written to %s (precision %s)", args.output, scheme.precision)
    metrics = {"enabled": 1, **compared.metrics(task), "cpu_vnni": vnni,
               "reduce_range": target.reduce_range, "quantize_seconds": round(seconds, 1),
               "calibration_images": len(calibration)}
    for kind in ("weight", "activation"):
        if report.worst_sqnr_db(kind) is not None:
            metrics[f"worst_{kind}_sqnr_db"] = report.worst_sqnr_db(kind)
    write_metrics(args.metrics, metrics)


if __name__ == "__main__":
    stage_main("quantize", main, artifact_arguments)
