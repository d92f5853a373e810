"""prepare: data splits, the trained teacher artifact and its ONNX export (parity-checked)."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from slimline.artifact import Recipe, write_artifact
from slimline.atomic import atomic_dir
from slimline.data import check_split, load_mnist, save_split, split_dataset
from slimline.models import build_model
from slimline.stage import run_stage, write_metrics
from slimline.train import accuracy, fit, seed_everything


def add_arguments(parser):
    parser.add_argument("--data", type=Path, required=True, help="output: folder of split .npz files")
    parser.add_argument("--teacher", type=Path, required=True, help="output: teacher artifact folder")
    parser.add_argument("--metrics", type=Path, required=True, help="output: metrics JSON")


def main(args, params, log):
    seed_everything(params.seed)
    images, labels = load_mnist()
    splits = split_dataset(images, labels, val_size=params.data.val_size,
                           test_size=params.data.test_size,
                           calibration_size=params.data.calibration_size, seed=params.seed)
    for name, split in splits.items():
        check_split(split, name, params.model.num_classes)
        log.info("split %-11s %5d images", name, len(split))
    with atomic_dir(args.data) as tmp:
        for name, split in splits.items():
            save_split(split, tmp / f"{name}.npz")

    arguments = {"in_channels": images.shape[1], "num_classes": params.model.num_classes,
                 "widths": list(params.model.widths),
                 "blocks_per_stage": params.model.blocks_per_stage}
    teacher = build_model(params.model.architecture, **arguments)
    parameters = sum(p.numel() for p in teacher.parameters())
    log.info("teacher: %s %s, %d parameters", params.model.architecture, arguments, parameters)
    started = time.perf_counter()
    fit(teacher, splits["train"], params.prepare.train, seed=params.seed, description="teacher",
        log=log.info)
    train_seconds = time.perf_counter() - started
    val_top1, test_top1 = accuracy(teacher, splits["val"]), accuracy(teacher, splits["test"])
    log.info("teacher trained in %.0f s: val top-1 %.2f%%, test top-1 %.2f%%",
             train_seconds, 100 * val_top1, 100 * test_top1)

    recipe = Recipe(architecture=params.model.architecture, arguments=arguments,
                    input_shape=[1, *images.shape[1:]], history=["prepare"])
    difference = write_artifact(args.teacher, teacher, recipe, splits["val"].images[:64],
                                params.prepare.parity_tolerance)
    log.info("teacher artifact written to %s; torch/ONNX parity: max |logit diff| = %.2e (tolerance %g)",
             args.teacher, difference, params.prepare.parity_tolerance)
    write_metrics(args.metrics, {
        "teacher_val_top1": val_top1, "teacher_test_top1": test_top1,
        "teacher_parameters": parameters, "train_seconds": round(train_seconds, 1),
        "onnx_parity_max_abs_diff": difference, "train_images": len(splits["train"]),
        "val_images": len(splits["val"]), "test_images": len(splits["test"]),
        "calibration_images": len(splits["calibration"]),
    })


if __name__ == "__main__":
    run_stage("prepare", main, add_arguments)
