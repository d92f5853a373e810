"""prepare: data splits, the teacher artifact and its ONNX export (parity-checked).

Data come from params `data.source` (slimline/data/sources.py); the teacher from `model.source`
(slimline/models/teacher.py): a builtin or factory torch model, trained here unless `model.weights`
are given, a Hugging Face transformer from a local folder (fine-tuned here only with
`model.finetune`), or an ONNX file exported elsewhere, which is only checked and measured.
"""
from __future__ import annotations

import time
from pathlib import Path

from slimline.artifact.atomic import atomic_dir
from slimline.config.paths import project_path
from slimline.data.sources import load_dataset
from slimline.data.splits import Split, check_split, save_split, split_dataset
from slimline.errors import SlimlineError
from slimline.models.families import with_family_preprocess
from slimline.stage import stage_main, write_metrics


def add_arguments(parser):
    parser.add_argument(
        "--data", type=Path, required=True, help="output: folder of split .npz files"
    )
    parser.add_argument(
        "--teacher", type=Path, required=True, help="output: teacher artifact folder"
    )
    parser.add_argument("--metrics", type=Path, required=True, help="output: metrics JSON")


def torch_teacher(args, params, splits, log) -> dict:
    import torch

    from slimline.artifact.recipe import Recipe, input_specs
    from slimline.artifact.store import write_artifact
    from slimline.models.architectures import build_model
    from slimline.models.teacher import architecture_and_arguments, check_outputs, load_weights
    from slimline.training.loop import accuracy, fit, forward, parameter_count, to_tensors

    config = params.model
    architecture, arguments = architecture_and_arguments(config, splits["val"].inputs)
    teacher = build_model(architecture, **arguments)
    with torch.no_grad():
        logits = forward(teacher.eval(), to_tensors(splits["val"].head(2)))
    check_outputs(tuple(logits.shape), config.num_classes, f"model {architecture}")
    parameters = parameter_count(teacher)
    log.info("teacher: %s %s, %d parameters", architecture, arguments, parameters)
    started = time.perf_counter()
    if config.weights is not None:
        weights = project_path(args.params.parent, config.weights, "model.weights")
        load_weights(teacher, weights)
        log.info("teacher weights loaded from %s (model.weights): not trained here", weights)
    else:
        if config.pretrained:
            from slimline.models.efficientnet_lite import load_pretrained, weights_file

            notes = load_pretrained(teacher, config.variant)
            log.info("teacher: ImageNet weights of EfficientNet-%s from %s (sha256 checked)%s; "
                     "fine-tuned on the training split", config.variant.title(),
                     weights_file(config.variant), "".join(f"; {note}" for note in notes))
        fit(teacher, splits["train"], params.prepare.train, seed=params.seed,
            description="teacher fine-tune" if config.pretrained else "teacher", log=log.info)
    train_seconds = time.perf_counter() - started
    val_top1, test_top1 = accuracy(teacher, splits["val"]), accuracy(teacher, splits["test"])
    log.info("teacher ready in %.0f s: val top-1 %.2f%%, test top-1 %.2f%%",
             train_seconds, 100 * val_top1, 100 * test_top1)

    recipe = Recipe(architecture=architecture, arguments=arguments,
                    inputs=input_specs(splits["val"].inputs), history=["prepare"])
    difference = write_artifact(args.teacher, teacher, recipe, splits["val"].head(64),
                                params.prepare.parity_tolerance)
    log.info(
        "teacher artifact written to %s; torch/ONNX parity: max |logit diff| = %.2e (tolerance %g)",
        args.teacher,
        difference,
        params.prepare.parity_tolerance,
    )
    return {"teacher_val_top1": val_top1, "teacher_test_top1": test_top1,
            "teacher_parameters": parameters, "train_seconds": round(train_seconds, 1),
            "onnx_parity_max_abs_diff": difference}


def huggingface_teacher(args, params, splits, log) -> dict:
    import torch

    from slimline.artifact.recipe import Recipe, input_specs
    from slimline.artifact.store import write_artifact
    from slimline.models.huggingface import TEXT_AXES, load_pretrained
    from slimline.models.teacher import check_outputs
    from slimline.training.loop import accuracy, fit, forward, parameter_count, to_tensors

    config, folder = params.model, project_path(args.params.parent, params.model.path, "model.path")
    teacher, transformer_config, task = load_pretrained(
        folder, None if config.task == "auto" else config.task
    )
    with torch.no_grad():
        outputs = forward(teacher, to_tensors(splits["val"].head(2)))
    if task == "classification":
        check_outputs(tuple(outputs.shape), config.num_classes, f"model.path = {folder}")
    parameters = parameter_count(teacher)
    log.info(
        "teacher: %s %s from %s (%s, %d layers, %d heads, hidden %d), %d parameters",
        transformer_config.get("model_type"),
        type(teacher.model).__name__,
        folder,
        task,
        transformer_config.get("num_hidden_layers", 0),
        transformer_config.get("num_attention_heads", 0),
        transformer_config.get("hidden_size", 0),
        parameters,
    )
    started = time.perf_counter()
    if config.finetune:
        if task != "classification":
            raise SlimlineError(f"{args.params}: model.finetune needs a classifier; an embedding "
                                "model has no labels to fine-tune on")
        fit(teacher, splits["train"], params.prepare.train, seed=params.seed,
            description="teacher fine-tune", log=log.info)
    else:
        log.info("teacher weights used as saved (model.finetune: false)")
    seconds = time.perf_counter() - started
    metrics = {"teacher_parameters": parameters, "train_seconds": round(seconds, 1)}
    if task == "classification":
        metrics["teacher_val_top1"] = accuracy(teacher, splits["val"])
        metrics["teacher_test_top1"] = accuracy(teacher, splits["test"])
        log.info("teacher: val top-1 %.2f%%, test top-1 %.2f%%", 100 * metrics["teacher_val_top1"],
                 100 * metrics["teacher_test_top1"])
    else:
        metrics["embedding_size"] = int(outputs.shape[1])
    recipe = Recipe(
        architecture="huggingface",
        arguments={"config": transformer_config, "task": task},
        inputs=input_specs(splits["val"].inputs, TEXT_AXES),
        output_name="logits" if task == "classification" else "sentence_embedding",
        history=["prepare"],
    )
    metrics["onnx_parity_max_abs_diff"] = write_artifact(
        args.teacher, teacher, recipe, splits["val"].head(64), params.prepare.parity_tolerance)
    log.info(
        "teacher artifact written to %s (ONNX inputs %s, dynamic batch and sequence); "
        "torch/ONNX parity: max |output diff| = %.2e (tolerance %g)",
        args.teacher,
        ", ".join(TEXT_AXES),
        metrics["onnx_parity_max_abs_diff"],
        params.prepare.parity_tolerance,
    )
    return metrics


def onnx_teacher(args, params, splits, graph_path: Path, graph_inputs, log) -> dict:
    from slimline.artifact.recipe import ONNX_ARCHITECTURE, Recipe, write_onnx_artifact
    from slimline.measure.graph import count_parameters, load_onnx
    from slimline.measure.runtime import make_session, onnx_accuracy
    from slimline.models.teacher import check_outputs, onnx_input_specs

    session = make_session(graph_path)
    logits = session.run(None, splits["val"].head(2))[0]
    check_outputs(logits.shape, params.model.num_classes, f"model.onnx = {graph_path}")
    val_top1, test_top1 = (
        onnx_accuracy(session, splits["val"]),
        onnx_accuracy(session, splits["test"]),
    )
    parameters = count_parameters(load_onnx(graph_path))
    log.info(
        "teacher: the ONNX file %s (model.onnx), %d parameters, inputs %s: val top-1 %.2f%%, "
        "test top-1 %.2f%%; only quantize and evaluate act on it (prune, decompose and distill "
        "need a torch model and pass it through)",
        graph_path,
        parameters,
        dict(graph_inputs),
        100 * val_top1,
        100 * test_top1,
    )
    recipe = Recipe(
        architecture=ONNX_ARCHITECTURE,
        arguments={"file": graph_path.name},
        inputs=onnx_input_specs(graph_inputs, splits["val"].inputs),
        history=["prepare"],
    )
    write_onnx_artifact(args.teacher, graph_path, recipe)
    return {"teacher_val_top1": val_top1, "teacher_test_top1": test_top1,
            "teacher_parameters": parameters, "train_seconds": 0.0}


def main(args, params, log):
    import numpy as np

    from slimline.training.device import configure_from
    from slimline.training.loop import seed_everything

    seed_everything(params.seed)
    if params.model.source != "onnx":
        configure_from(params.training, log.info)
    model_dir = (project_path(args.params.parent, params.model.path, "model.path")
                 if params.model.source == "huggingface" else None)
    data_config = params.data.model_copy(update={
        "preprocess": with_family_preprocess(params.data.preprocess, params.model)})
    dataset = load_dataset(data_config, args.params.parent, model_dir)
    for note in dataset.notes:
        log.info("data: %s", note)
    num_classes = params.model.num_classes
    if dataset.classes is not None and len(dataset.classes) != num_classes:
        raise SlimlineError(f"{args.params}: model.num_classes = {num_classes} but the data has "
                            f"{len(dataset.classes)} classes ({', '.join(dataset.classes[:12])})")
    graph_path = graph_inputs = None
    if params.model.source == "onnx":
        from slimline.measure.graph import load_onnx
        from slimline.models.teacher import match_onnx_inputs, onnx_graph_inputs

        graph_path = project_path(args.params.parent, params.model.onnx, "model.onnx")
        if not graph_path.is_file():
            raise SlimlineError(f"model.onnx = {graph_path}: file not found")
        graph_inputs = onnx_graph_inputs(load_onnx(graph_path))
        dataset.inputs = match_onnx_inputs(
            graph_inputs, dataset.inputs, f"model.onnx = {graph_path}"
        )
    splits = split_dataset(dataset.inputs, dataset.labels, val_size=params.data.val_size,
                           test_size=params.data.test_size,
                           calibration_size=params.data.calibration_size, seed=params.seed,
                           test=dataset.test, train_size=params.data.train_size)
    if dataset.finish is not None:
        splits = {name: Split(dataset.finish(split.inputs), split.labels)
                  for name, split in splits.items()}
    log.info(
        "data: %s, %d examples, inputs %s, %d classes%s",
        params.data.source,
        len(dataset.labels) + (len(dataset.test) if dataset.test is not None else 0),
        {name: f"{array.dtype}{list(array.shape[1:])}" for name, array in
         splits["val"].inputs.items()},
        len(np.unique(dataset.labels)),
        f" ({', '.join(dataset.classes[:12])})" if dataset.classes else "",
    )
    for name, split in splits.items():
        check_split(split, name, num_classes)
        log.info("split %-11s %5d examples", name, len(split))
    with atomic_dir(args.data) as tmp:
        for name, split in splits.items():
            save_split(split, tmp / f"{name}.npz")
        if params.data.source == "text":
            from slimline.data.text import save_special_tokens

            save_special_tokens(model_dir, tmp)
        if params.data.source == "text" and params.data.text.pairs:
            from slimline.data.text import save_pairs

            pairs = project_path(args.params.parent, params.data.text.pairs, "data.text.pairs")
            count = save_pairs(pairs, params.data.text, model_dir, tmp)
            log.info(
                "data: %d labelled pairs from %s (data.text.pairs) for the embedding evaluation",
                count,
                params.data.text.pairs,
            )

    if graph_path is not None:
        metrics = onnx_teacher(args, params, splits, graph_path, graph_inputs, log)
    elif params.model.source == "huggingface":
        metrics = huggingface_teacher(args, params, splits, log)
    else:
        metrics = torch_teacher(args, params, splits, log)
    write_metrics(args.metrics, {
        **metrics, "train_images": len(splits["train"]), "val_images": len(splits["val"]),
        "test_images": len(splits["test"]), "calibration_images": len(splits["calibration"]),
    })


if __name__ == "__main__":
    stage_main("prepare", main, add_arguments)
