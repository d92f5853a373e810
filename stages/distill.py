"""distill: the student learns from the teacher (KD); the same student without the teacher is
trained alongside on the same seed, so the metrics say what distillation bought, in points.
The student is built by slimline/artifact/student.py (its vocabulary trimmed to the training texts'
tokens with distill.trim_vocabulary), trained by slimline/techniques/distill.py."""
from __future__ import annotations

import copy
import time
from pathlib import Path

from slimline.artifact.store import load_model, write_artifact
from slimline.artifact.student import TRANSFORMER, build_student, trim_student_vocabulary
from slimline.data.splits import load_splits
from slimline.data.text import read_special_tokens
from slimline.errors import SlimlineError
from slimline.models.huggingface import trim_vocabulary
from slimline.stage import artifact_arguments, passes_through, stage_main, write_metrics
from slimline.task import task_of
from slimline.techniques.distill import check_same_outputs, distill_and_compare
from slimline.techniques.vocabulary import corpus_vocabulary, unseen_share
from slimline.training.device import configure_from
from slimline.training.loop import parameter_count, to_tensors


def add_arguments(parser):
    artifact_arguments(parser)
    parser.add_argument("--teacher", type=Path, required=True, help="teacher model artifact folder")


def trim_to_training_texts(student, teacher, splits, data, score, log) -> dict:
    """distill.trim_vocabulary: cut the student's word-embedding table to the training texts'
    tokens; log and return what it kept and what it costs on val (the teacher trimmed alone)."""
    if student.recipe.architecture != TRANSFORMER:
        raise SlimlineError("distill.trim_vocabulary is for transformers "
                            "(model.source huggingface)")
    vocabulary = corpus_vocabulary(splits["train"].inputs, *read_special_tokens(data))
    rows_before = student.model.model.get_input_embeddings().num_embeddings
    trim_student_vocabulary(student, vocabulary.kept, vocabulary.unknown)
    unseen = unseen_share(splits["val"].inputs, vocabulary)
    teacher_trimmed = copy.deepcopy(teacher)
    trim_vocabulary(teacher_trimmed, vocabulary.kept, vocabulary.unknown)
    alone = score(teacher_trimmed, splits["val"])
    log.info("vocabulary trimmed to the %d token ids the training texts use (of %d rows): %.2f%% "
             "of the val texts' tokens are outside it and read the unknown token's row; the "
             "teacher trimmed alone scores %.4f on val", len(vocabulary.kept), rows_before,
             100 * unseen, alone)
    return {"vocabulary_rows": len(vocabulary.kept), "vocabulary_rows_before": rows_before,
            "val_unseen_token_share": round(unseen, 4), "teacher_trimmed_val_top1": alone}


def main(args, params, log):
    config = params.distill
    if passes_through("distill", config.enabled, args, log):
        return
    splits = load_splits(args.data, ("train", "val", "test"), params.model.num_classes)
    configure_from(params.training, log.info)
    teacher, teacher_recipe = load_model(args.teacher)
    student = build_student(args.input, teacher_recipe, config, seed=params.seed)
    log.info("student: %s", student.description)
    # An embedding model is scored by the cosine of its embeddings to the teacher's (teacher: 1).
    task = task_of(teacher_recipe)
    score = task.score(teacher)
    trimmed = (trim_to_training_texts(student, teacher, splits, args.data, score, log)
               if config.trim_vocabulary else {})
    check_same_outputs(teacher, student.model, to_tensors(splits["val"].head(2)))
    teacher_val, student_before = score(teacher, splits["val"]), score(student.model, splits["val"])
    teacher_size, student_size = parameter_count(teacher), parameter_count(student.model)
    log.info("teacher %d parameters, val %s %.4f; student %d parameters (%.2fx smaller), "
             "val %s before distillation %.4f", teacher_size, task.metric, teacher_val,
             student_size, teacher_size / student_size, task.metric, student_before)
    if task.is_embedding and config.compare_without_teacher:
        log.info("no control run without the teacher: an embedding model has no labels to train on")
    log.info(
        "%s: T = %g, alpha = %g, feature_weight = %g, %d epochs, peak lr %g, batch %d, seed %d",
        "encoder distillation (T and alpha unused)" if task.is_embedding else "KD",
        config.temperature,
        config.alpha,
        config.feature_weight,
        config.train.epochs,
        config.train.learning_rate,
        config.train.batch_size,
        params.seed,
    )
    started = time.perf_counter()
    result = distill_and_compare(student.model, teacher, splits, config, seed=params.seed,
                                 log=log.info, task=task, kept_layers=student.kept_layers)
    seconds = time.perf_counter() - started
    log.info("distilled student: val %s %.4f, test %s %.4f (%.0f s with any control run)",
             task.metric, result.distilled_val, task.metric, result.distilled_test, seconds)
    metrics = {
        "enabled": 1,
        "teacher_val_top1": teacher_val,
        "student_val_top1_before": student_before,
        "distilled_val_top1": result.distilled_val,
        "distilled_test_top1": result.distilled_test,
        "student_parameters": parameter_count(result.distilled),
        "teacher_parameters": teacher_size,
        "train_seconds": round(seconds, 1),
        **trimmed,
    }
    if result.control_val is not None:
        log.info("same student without the teacher (same seed and schedule): val top-1 %.2f%%, "
                 "test top-1 %.2f%%; distillation bought %+.2f points on val, %+.2f on test",
                 100 * result.control_val, 100 * result.control_test,
                 result.gain_val_points, result.gain_test_points)
        if result.gain_val_points < 0:
            log.warning(
                "distillation did NOT pay on val (%+.2f points): consider alpha, temperature, "
                "epochs (distill section of params.yaml)",
                result.gain_val_points,
            )
        metrics.update({"without_teacher_val_top1": result.control_val,
                        "without_teacher_test_top1": result.control_test,
                        "kd_gain_val_points": round(result.gain_val_points, 2),
                        "kd_gain_test_points": round(result.gain_test_points, 2)})

    difference = write_artifact(
        args.output,
        result.distilled,
        student.recipe,
        splits["val"].head(64),
        config.parity_tolerance,
    )
    log.info("distilled artifact written to %s; torch/ONNX parity: max |logit diff| = %.2e",
             args.output, difference)
    metrics["onnx_parity_max_abs_diff"] = difference
    write_metrics(args.metrics, metrics)


if __name__ == "__main__":
    stage_main("distill", main, add_arguments)
