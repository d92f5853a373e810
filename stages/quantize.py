"""quantize: the fp32 model becomes int8 (or 4-bit weights) in ONNX Runtime, calibrated on the
calibration split; the log shows the CPU's int8 support, per-tensor quantization error, and
fp32 vs int8 accuracy, size and measured latency side by side."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import onnx

from slimline.artifact import ONNX, load_model, read_recipe, write_onnx_artifact
from slimline.data import load_split
from slimline.embedding import embedding_fidelity, is_embedding_model
from slimline.errors import SlimlineError
from slimline.measure import check_feeds, file_size, load_onnx, onnx_predict, time_interleaved
from slimline.passthrough import pass_through
from slimline.quantize import PRECISION, VNNI_FLAGS, choose_int8_target, cpu_int8_features, quantize_model
from slimline.runtime import make_session
from slimline.stage import run_stage, write_metrics
from slimline.teacher import ONNX_ARCHITECTURE


def add_arguments(parser):
    parser.add_argument("--input", type=Path, required=True, help="input fp32 model artifact folder")
    parser.add_argument("--data", type=Path, required=True, help="folder of split .npz files")
    parser.add_argument("--output", type=Path, required=True, help="output model artifact folder")
    parser.add_argument("--metrics", type=Path, required=True, help="output: metrics JSON")


def _fp32_graph(args, params, calibration, target, log) -> onnx.ModelProto:
    config = params.quantize
    if config.scheme != "qat":
        return load_onnx(args.input / ONNX)
    from slimline.onnx_export import export_onnx
    from slimline.qat import quantization_aware_training
    from slimline.train import to_tensors

    model, recipe = load_model(args.input)
    train = load_split(args.data / "train.npz", params.model.num_classes)
    tuned = quantization_aware_training(model, train, calibration, config, target, seed=params.seed,
                                        log=log.info)
    with tempfile.TemporaryDirectory(prefix="slimline-qat-") as tmp:
        path = Path(tmp) / "qat.onnx"
        export_onnx(tuned, to_tensors(calibration.head(2)), path, axes=recipe.axes,
                    output_name=recipe.output_name)
        return onnx.load(str(path))


def _log_tensors(report, log) -> None:
    for kind in ("weight", "activation"):
        rows = [row for row in report.tensors if row.kind == kind]
        if not rows:
            continue
        worst = min(rows, key=lambda row: row.sqnr_db)
        log.info("%s quantization error (%d tensors; SQNR in dB, higher is better; worst %s at %.1f dB):",
                 kind, len(rows), worst.name, worst.sqnr_db)
        for row in rows:
            agreement = "" if row.scale_agreement is None else (
                f"  scale vs formula: {'match' if row.scale_agreement < 1e-6 else f'{row.scale_agreement:.1e} off'}")
            log.info("  %-48s scale %.3e zp %4d  SQNR %5.1f  max|err| %.3e%s", row.name[-48:], row.scale,
                     row.zero_point, row.sqnr_db, row.max_abs_error, agreement)


def main(args, params, log):
    config = params.quantize
    if not config.enabled:
        pass_through("quantize", args, log)
        return
    num_classes = params.model.num_classes
    recipe = read_recipe(args.input)
    if recipe.precision != "fp32":
        raise SlimlineError(f"{args.input}: model is already quantized ({recipe.precision}); "
                            f"quantize needs an fp32 model")
    if config.scheme == "qat" and recipe.architecture == ONNX_ARCHITECTURE:
        raise SlimlineError(f"{args.params}: quantize.scheme = qat needs a torch model to fine-tune; "
                            f"{args.input} is ONNX-only (model.source onnx): use static or dynamic")
    fp32_path = args.input / ONNX
    calibration = load_split(args.data / "calibration.npz", num_classes)
    val = load_split(args.data / "val.npz", num_classes)
    test = load_split(args.data / "test.npz", num_classes)
    check_feeds(make_session(fp32_path), calibration.inputs, str(fp32_path))

    features = cpu_int8_features()
    target = choose_int8_target(config, features)
    vnni = any(flag in features for flag in VNNI_FLAGS)
    log.info("CPU int8 support: %s (VNNI %s, AMX %s)", ", ".join(sorted(features)) or "none detected",
             "yes" if vnni else "no", "yes" if "amx_int8" in features else "no")
    log.info("scheme %s: %s", config.scheme, target.reason if config.scheme != "weight_only_4bit"
             else f"4-bit weight-only MatMulNBits, block {config.block_size}")

    started = time.perf_counter()
    fp32 = _fp32_graph(args, params, calibration, target, log)
    quantized, report = quantize_model(fp32, calibration, config, target,
                                       transformer=recipe.architecture == "huggingface")
    seconds = time.perf_counter() - started
    log.info("quantized in %.1f s (%d calibration images, %s calibration); graph ops: %s", seconds,
             len(calibration), config.calibration_method,
             ", ".join(f"{op} {count}" for op, count in report.quantized_ops.items()))
    _log_tensors(report, log)

    with tempfile.TemporaryDirectory(prefix="slimline-quant-") as tmp:
        int8_path = Path(tmp) / "model.onnx"
        onnx.save(quantized, str(int8_path))
        sessions = {"fp32": make_session(fp32_path), "int8": make_session(int8_path)}
        logits = {name: {split: onnx_predict(session, data.inputs) for split, data in
                         (("val", val), ("test", test))} for name, session in sessions.items()}
        top1 = {name: {split: float((values.argmax(1) == data.labels).mean()) for split, values, data in
                       ((s, logits[name][s], d) for s, d in (("val", val), ("test", test)))}
                for name in sessions}
        agreement = float((logits["fp32"]["test"].argmax(1) == logits["int8"]["test"].argmax(1)).mean())
        timings = time_interleaved(sessions, val.head(1), runs=config.latency_runs,
                                   warmup=max(10, config.latency_runs // 10), rounds=config.latency_rounds)
        sizes = {"fp32": file_size(fp32_path), "int8": file_size(int8_path)}
        write_onnx_artifact(args.output, int8_path, recipe.derive("quantize", precision=PRECISION[config.scheme]))

    latency = {name: timing.percentile(50) for name, timing in timings.items()}
    speedup = latency["fp32"] / latency["int8"]
    drop = {split: 100 * (top1["fp32"][split] - top1["int8"][split]) for split in ("val", "test")}
    if is_embedding_model(recipe):  # no labels: the int8 embeddings are judged against fp32's
        fidelity = {split: embedding_fidelity(logits["fp32"][split], logits["int8"][split])
                    for split in ("val", "test")}
        log.info("embedding fidelity of the quantized model to fp32 (mean cosine): val %.4f, test %.4f",
                 fidelity["val"], fidelity["test"])
    else:
        log.info("top-1 val: fp32 %.2f%% -> quantized %.2f%% (drop %+.2f points); test: %.2f%% -> "
                 "%.2f%% (drop %+.2f); fp32/quantized agree on %.2f%% of test images",
                 100 * top1["fp32"]["val"], 100 * top1["int8"]["val"], drop["val"],
                 100 * top1["fp32"]["test"], 100 * top1["int8"]["test"], drop["test"], 100 * agreement)
    log.info("size: %.0f kB -> %.0f kB (%.3fx); batch-1 latency p50, one thread, interleaved: "
             "fp32 %.3f ms, quantized %.3f ms (%.2fx faster)", sizes["fp32"] / 1e3, sizes["int8"] / 1e3,
             sizes["int8"] / sizes["fp32"], latency["fp32"], latency["int8"], speedup)
    if speedup < 1:
        log.warning("the quantized model is SLOWER than fp32 on this CPU: %.3f ms vs %.3f ms (%.2fx). "
                    "Int8 support here: %s. Consider scheme, activation_type or shipping fp32.",
                    latency["int8"], latency["fp32"], speedup, ", ".join(sorted(features)) or "none")
    if drop["val"] > config.max_top1_drop and not is_embedding_model(recipe):
        log.warning("quantization lost %.2f val top-1 points, more than quantize.max_top1_drop = %g; "
                    "try calibration_method, per_channel or scheme: qat", drop["val"], config.max_top1_drop)
    log.info("quantized artifact written to %s (precision %s)", args.output, PRECISION[config.scheme])
    weights = [row.sqnr_db for row in report.tensors if row.kind == "weight"]
    activations = [row.sqnr_db for row in report.tensors if row.kind == "activation"]
    quality = ({"int8_val_embedding_fidelity": fidelity["val"],
                "int8_test_embedding_fidelity": fidelity["test"]} if is_embedding_model(recipe) else
               {"fp32_val_top1": top1["fp32"]["val"], "int8_val_top1": top1["int8"]["val"],
                "fp32_test_top1": top1["fp32"]["test"], "int8_test_top1": top1["int8"]["test"],
                "val_top1_drop_points": round(drop["val"], 2), "test_agreement": agreement})
    metrics = {
        "enabled": 1, **quality,
        "fp32_size_bytes": sizes["fp32"], "int8_size_bytes": sizes["int8"],
        "size_ratio": sizes["int8"] / sizes["fp32"], "fp32_latency_p50_ms": latency["fp32"],
        "int8_latency_p50_ms": latency["int8"], "speedup": speedup, "int8_faster": speedup > 1,
        "cpu_vnni": vnni, "reduce_range": target.reduce_range, "quantize_seconds": round(seconds, 1),
        "calibration_images": len(calibration),
    }
    if weights:
        metrics["worst_weight_sqnr_db"] = min(weights)
    if activations:
        metrics["worst_activation_sqnr_db"] = min(activations)
    write_metrics(args.metrics, metrics)


if __name__ == "__main__":
    run_stage("quantize", main, add_arguments)
