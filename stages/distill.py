"""distill: the student learns from the teacher (KD); the same student without the teacher is
trained alongside on the same seed, so the metrics say what distillation bought, in points."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from slimline.artifact import Recipe, load_model, read_recipe, write_artifact
from slimline.data import load_split
from slimline.distill import distill_and_compare
from slimline.embedding import fidelity_score, is_embedding_model
from slimline.errors import SlimlineError
from slimline.models import build_model
from slimline.models.huggingface import encoder_layers, keep_encoder_layers
from slimline.passthrough import pass_through, skipped_onnx_only
from slimline.stage import run_stage, write_metrics
from slimline.train import accuracy, forward, seed_everything, to_tensors


def add_arguments(parser):
    parser.add_argument("--input", type=Path, required=True, help="input model artifact folder (the student)")
    parser.add_argument("--teacher", type=Path, required=True, help="teacher model artifact folder")
    parser.add_argument("--data", type=Path, required=True, help="folder of split .npz files")
    parser.add_argument("--output", type=Path, required=True, help="output model artifact folder")
    parser.add_argument("--metrics", type=Path, required=True, help="output: metrics JSON")


def _student(args, params, teacher_recipe: Recipe, log):
    config = params.distill
    if teacher_recipe.architecture == "huggingface" and config.student_widths is not None:
        raise SlimlineError(f"{args.params}: distill.student_widths is for the builtin convnets; a "
                            "transformer's narrower student is its pruned input model, and "
                            "distill.student_layers makes it shallower")
    if config.student_layers is not None and teacher_recipe.architecture != "huggingface":
        raise SlimlineError(f"{args.params}: distill.student_layers is for transformers "
                            "(model.source huggingface)")
    if config.student_widths is None:
        student, recipe = load_model(args.input)
        log.info("student: the input model %s (%s)", args.input, " -> ".join(recipe.history))
        if config.student_layers is None:
            return student, recipe.derive("distill")
        before = len(encoder_layers(student)[1])
        edit = keep_encoder_layers(student, list(config.student_layers))
        log.info("student: keeps layers %s of the input model's %d (distill.student_layers), "
                 "initialised from them", edit["indices"], before)
        return student, recipe.derive("distill", edits=recipe.edits + [edit])
    read_recipe(args.input)  # still a declared dep: fail early and clearly if it is broken
    arguments = {**teacher_recipe.arguments, "widths": list(config.student_widths)}
    seed_everything(params.seed)
    student = build_model(teacher_recipe.architecture, **arguments)
    log.info("student: a fresh %s %s (distill.student_widths); the input model %s is not used",
             teacher_recipe.architecture, arguments, args.input)
    recipe = Recipe(architecture=teacher_recipe.architecture, arguments=arguments,
                    inputs=teacher_recipe.inputs, history=[*teacher_recipe.history, "distill"])
    return student, recipe


def _parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def main(args, params, log):
    config = params.distill
    if not config.enabled:
        pass_through("distill", args, log)
        return
    if skipped_onnx_only("distill", args, log):
        return
    num_classes = params.model.num_classes
    splits = {name: load_split(args.data / f"{name}.npz", num_classes) for name in ("train", "val", "test")}
    teacher, teacher_recipe = load_model(args.teacher)
    student, recipe = _student(args, params, teacher_recipe, log)
    example = to_tensors(splits["val"].head(2))
    with torch.no_grad():
        teacher_shape = tuple(forward(teacher, example).shape)
        student_shape = tuple(forward(student.eval(), example).shape)
    if teacher_shape != student_shape:
        raise SlimlineError(f"{args.input}: student outputs {student_shape[1:]} logits per image, "
                            f"teacher {args.teacher} outputs {teacher_shape[1:]}; they must match")

    embedding = is_embedding_model(teacher_recipe)
    # An embedding model is scored by the cosine of its embeddings to the teacher's (teacher: 1).
    score = fidelity_score(teacher) if embedding else accuracy
    what = "embedding fidelity" if embedding else "top-1"
    teacher_val, student_before = score(teacher, splits["val"]), score(student, splits["val"])
    log.info("teacher %d parameters, val %s %.4f; student %d parameters (%.2fx smaller), "
             "val %s before distillation %.4f", _parameters(teacher), what, teacher_val,
             _parameters(student), _parameters(teacher) / _parameters(student), what, student_before)
    if embedding and config.compare_without_teacher:
        log.info("no control run without the teacher: an embedding model has no labels to train on")
    log.info("KD: T = %g, alpha = %g, feature_weight = %g, %d epochs, peak lr %g, batch %d, seed %d",
             config.temperature, config.alpha, config.feature_weight, config.train.epochs,
             config.train.learning_rate, config.train.batch_size, params.seed)
    started = time.perf_counter()
    result = distill_and_compare(student, teacher, splits, config, seed=params.seed, log=log.info,
                                 embedding=embedding)
    seconds = time.perf_counter() - started
    log.info("distilled student: val %s %.4f, test %s %.4f (%.0f s with any control run)",
             what, result.distilled_val, what, result.distilled_test, seconds)
    metrics = {"enabled": 1, "teacher_val_top1": teacher_val, "student_val_top1_before": student_before,
               "distilled_val_top1": result.distilled_val, "distilled_test_top1": result.distilled_test,
               "student_parameters": _parameters(result.distilled),
               "teacher_parameters": _parameters(teacher), "train_seconds": round(seconds, 1)}
    if result.control_val is not None:
        log.info("same student without the teacher (same seed and schedule): val top-1 %.2f%%, "
                 "test top-1 %.2f%%; distillation bought %+.2f points on val, %+.2f on test",
                 100 * result.control_val, 100 * result.control_test,
                 result.gain_val_points, result.gain_test_points)
        if result.gain_val_points < 0:
            log.warning("distillation did NOT pay on val (%+.2f points): consider alpha, temperature, "
                        "epochs (distill section of params.yaml)", result.gain_val_points)
        metrics.update({"without_teacher_val_top1": result.control_val,
                        "without_teacher_test_top1": result.control_test,
                        "kd_gain_val_points": round(result.gain_val_points, 2),
                        "kd_gain_test_points": round(result.gain_test_points, 2)})

    difference = write_artifact(args.output, result.distilled, recipe, splits["val"].head(64),
                                config.parity_tolerance)
    log.info("distilled artifact written to %s; torch/ONNX parity: max |logit diff| = %.2e",
             args.output, difference)
    metrics["onnx_parity_max_abs_diff"] = difference
    write_metrics(args.metrics, metrics)


if __name__ == "__main__":
    run_stage("distill", main, add_arguments)
