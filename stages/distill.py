"""distill: the student learns from the teacher (KD); the same student without the teacher is
trained alongside on the same seed, so the metrics say what distillation bought, in points.
The student is built by slimline/artifact/student.py (its vocabulary trimmed to the training texts'
tokens with distill.trim_vocabulary), trained by slimline/techniques/distill.py. With
distill.student_budget an encoder's depth and layers are chosen by measured speed and fidelity
(slimline/techniques/student_choice.py); the wiring lives here because the candidates are built
and exported as artifacts are, which the techniques layer may not import."""
from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np

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


def student_by_budget(args, params, teacher, teacher_recipe, splits, score, log):
    """distill.student_budget: (the chosen distilled Student, its metrics); see
    slimline/techniques/student_choice.py."""
    from slimline.artifact.onnx_export import export_onnx
    from slimline.artifact.recipe import ONNX
    from slimline.techniques.distill_encoder import (
        distill_encoder,
        layer_map,
        teacher_targets,
        training_corpus,
    )
    from slimline.techniques.student_choice import (
        Candidate,
        describe_task_drop,
        eliminate_layers,
        int8_speedups,
        pick,
        val_task_drop,
    )
    from slimline.training.loop import predict

    config, budget = params.distill, params.distill.student_budget
    if teacher_recipe.architecture != TRANSFORMER or not task_of(teacher_recipe).is_embedding:
        raise SlimlineError("distill.student_budget is for transformer encoders (an embedding "
                            "model from model.source huggingface)")
    if config.student_layers is not None:
        raise SlimlineError("distill.student_layers and distill.student_budget both set: the "
                            "budget chooses the layers; set student_layers to null")
    base = build_student(args.input, teacher_recipe, config, seed=params.seed)
    chosen = eliminate_layers(base.model, budget.depths, lambda model: score(model, splits["val"]))
    if not chosen:
        raise SlimlineError(f"distill.student_budget.depths = {budget.depths}: the input model "
                            "has no fewer layers to keep")
    students = {depth: build_student(args.input, teacher_recipe,
                                     config.model_copy(update={"student_layers": layers}),
                                     seed=params.seed)
                for depth, (layers, _) in sorted(chosen.items())}
    candidates = {depth: Candidate(depth, layers, initial)
                  for depth, (layers, initial) in chosen.items()}
    for depth, candidate in sorted(candidates.items()):
        log.info("candidate: %d layers %s (backward elimination), val cosine %.4f before "
                 "distillation", depth, candidate.layers, candidate.initial_fidelity)
    val = splits["val"]
    longest = int(val.inputs["attention_mask"].sum(1).argmax())
    example = {name: array[longest:longest + 1] for name, array in val.inputs.items()}
    example["attention_mask"] = np.ones_like(example["attention_mask"])   # 1 x max_length real

    def export(model, path):
        export_onnx(model, to_tensors(example), path, axes=base.recipe.axes,
                    output_name=base.recipe.output_name)

    speedups = int8_speedups({depth: student.model for depth, student in students.items()},
                             args.teacher / ONNX, example, export, log=log.info)
    for depth, speedup in speedups.items():
        candidates[depth].speedup = speedup
    fast = sorted((depth for depth in candidates if speedups[depth] >= budget.min_speedup),
                  key=lambda depth: -speedups[depth])
    teacher_depth = teacher.model.config.num_hidden_layers
    targets = teacher_targets(
        teacher, training_corpus(splits["train"], config, params.seed, log.info), config,
        [layer_map(students[depth].kept_layers, depth, teacher_depth) for depth in fast],
        log.info) if fast else None
    teacher_val = predict(teacher, val.inputs)
    try:
        for depth in fast:
            student = students[depth]
            log.info("distilling the %d-layer candidate %s", depth, candidates[depth].layers)
            distill_encoder(student.model, teacher, splits["train"], config, seed=params.seed,
                            kept_layers=student.kept_layers, targets=targets, log=log.info)
            candidates[depth].fidelity = score(student.model, val)
            drop = val_task_drop(teacher_val, predict(student.model, val.inputs), val.labels)
            if drop is not None:
                candidates[depth].task_drop, candidates[depth].task_drop_estimate = drop
            log.info("candidate %d layers after distillation: val cosine %.4f (budget %g)%s",
                     depth, candidates[depth].fidelity, budget.min_fidelity,
                     "" if drop is None else f", {describe_task_drop(candidates[depth])} "
                     f"(probe and k-NN, budget {budget.max_task_drop})")
            if (candidates[depth].meets(budget.min_fidelity, budget.max_task_drop)
                    and not budget.train_all):
                break
    finally:
        if targets is not None:
            targets.remove()
    best, why = pick(list(candidates.values()), budget.min_speedup, budget.min_fidelity,
                     budget.max_task_drop)
    met = best.meets(budget.min_fidelity, budget.max_task_drop)
    (log.info if met else log.warning)("%s", why)
    log.info("candidates (speed-up: dynamic int8 vs fp32 teacher, batch 1; cosine and task "
             "drop on val):\n%s", candidate_table(candidates.values()))
    metrics = {"student_depth": best.depth,
               "student_met_budget": met,
               "student_budget.min_speedup": budget.min_speedup,
               "student_budget.min_fidelity": budget.min_fidelity}
    if best.task_drop is not None and budget.max_task_drop is not None:
        # Set only where the labelled tasks judged the student (the report says which budget).
        metrics["student_budget.max_task_drop"] = budget.max_task_drop
    for candidate in candidates.values():
        for key, value in candidate.row().items():
            if key != "layers" and value is not None:
                metrics[f"candidate_{candidate.depth}_layers.{key}"] = value
    return students[best.depth], metrics


def candidate_table(candidates) -> str:
    lines = ["| depth | layers | cosine before | speed-up | cosine after | task drop (judged) |",
             "|---|---|---|---|---|---|"]
    for c in sorted(candidates, key=lambda c: c.depth):
        lines.append(f"| {c.depth} | {c.layers} | {c.initial_fidelity:.4f} | "
                     f"{c.speedup:.2f}x | "
                     f"{'not trained' if c.fidelity is None else f'{c.fidelity:.4f}'} | "
                     f"{'' if c.task_drop is None else f'{c.task_drop_estimate:+.2f} '}"
                     f"{'' if c.task_drop is None else f'({c.task_drop:+.2f})'} |")
    return "\n".join(lines)


def main(args, params, log):
    config = params.distill
    if passes_through("distill", config.enabled, args, log):
        return
    splits = load_splits(args.data, ("train", "val", "test"), params.model.num_classes)
    configure_from(params.training, log.info)
    teacher, teacher_recipe = load_model(args.teacher)
    if config.student_budget is not None:
        budget_main(args, params, teacher, teacher_recipe, splits, log)
        return
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


def budget_main(args, params, teacher, teacher_recipe, splits, log):
    """distill with distill.student_budget: the chosen student written as the stage's model."""
    if params.distill.trim_vocabulary:
        raise SlimlineError("distill.trim_vocabulary with distill.student_budget is not "
                            "supported: trim the vocabulary with student_layers")
    score = task_of(teacher_recipe).score(teacher)
    started = time.perf_counter()
    student, metrics = student_by_budget(args, params, teacher, teacher_recipe, splits, score, log)
    seconds = time.perf_counter() - started
    metrics.update({
        "enabled": 1,
        "teacher_val_top1": score(teacher, splits["val"]),
        "distilled_val_top1": score(student.model, splits["val"]),
        "distilled_test_top1": score(student.model, splits["test"]),
        "student_parameters": parameter_count(student.model),
        "teacher_parameters": parameter_count(teacher),
        "train_seconds": round(seconds, 1),
    })
    log.info("distilled student (%s): val embedding fidelity %.4f, test %.4f (%.0f s with the "
             "candidates)", student.description, metrics["distilled_val_top1"],
             metrics["distilled_test_top1"], seconds)
    metrics["onnx_parity_max_abs_diff"] = write_artifact(
        args.output, student.model, student.recipe, splits["val"].head(64),
        params.distill.parity_tolerance)
    write_metrics(args.metrics, metrics)


if __name__ == "__main__":
    stage_main("distill", main, add_arguments)
