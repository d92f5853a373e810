"""MNIST-format idx files (MNIST, Fashion-MNIST, KMNIST, ...): a folder holding train-* and t10k-*
images and labels, gzipped or not.

The files hold 8-bit grey images, 784 bytes each: the whole of Fashion-MNIST is 55 MB as bytes but
gigabytes as float32 at a mobile CNN's resolution. So the source returns the bytes, and the
resize, channels and normalisation run on each split after the cut (`Dataset.finish`): only the
examples a run uses are ever expanded.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from slimline.errors import SlimlineError

_IMAGES, _LABELS = 0x0803, 0x0801       # idx magic numbers: unsigned bytes, 3 dims / 1 dim


def _find(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise SlimlineError(f"data.path = {folder}: no {stem}(.gz) (an idx folder holds train-images-"
                        "idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
                        "t10k-labels-idx1-ubyte)")


def read_idx(path: Path, magic: int) -> np.ndarray:
    """One idx file as uint8; the header's magic and sizes checked against the bytes."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as exc:
        raise SlimlineError(f"{path}: unreadable ({exc})") from None
    dims = data[3] if len(data) >= 4 else 0
    header = 4 + 4 * dims
    if len(data) < header or int.from_bytes(data[:4], "big") != magic:
        kind = "images" if magic == _IMAGES else "labels"
        raise SlimlineError(f"{path}: not an idx file of {kind} (magic {data[:4].hex() or 'none'}, "
                            f"expected {magic:08x})")
    shape = [int.from_bytes(data[4 + 4 * axis: 8 + 4 * axis], "big") for axis in range(dims)]
    if len(data) - header != int(np.prod(shape)):
        raise SlimlineError(f"{path}: the header says {shape} bytes, the file holds "
                            f"{len(data) - header} after it (truncated?)")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def read_idx_folder(folder: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """{"train": (images, labels), "test": (...)}: images uint8 (N, 1, H, W); the classes
    (idx files name none: labels 0, 1, ...)."""
    if not folder.is_dir():
        raise SlimlineError(f"data.path = {folder}: idx folder not found")
    parts = {}
    for part, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(_find(folder, f"{prefix}-images-idx3-ubyte"), _IMAGES)
        labels = read_idx(_find(folder, f"{prefix}-labels-idx1-ubyte"), _LABELS)
        if len(images) != len(labels):
            raise SlimlineError(f"data.path = {folder}: {prefix} has {len(images)} images but "
                                f"{len(labels)} labels")
        parts[part] = (images[:, None], labels.astype(np.int64))
    count = int(max(parts["train"][1].max(), parts["test"][1].max())) + 1
    return parts, [str(label) for label in range(count)]


def to_model_inputs(images: np.ndarray, size: list[int] | None, channels: int,
                    chunk: int = 2048) -> np.ndarray:
    """uint8 (N, 1, H, W) -> float32 (N, channels, *size) on [0, 1], bilinear, in chunks."""
    import torch
    from torch.nn import functional

    outputs = []
    for start in range(0, len(images), chunk):
        batch = torch.from_numpy(images[start:start + chunk].astype(np.float32) / 255.0)
        if size is not None and list(batch.shape[2:]) != list(size):
            batch = functional.interpolate(batch, size=tuple(size), mode="bilinear",
                                           align_corners=False).clamp_(0.0, 1.0)
        outputs.append(batch.expand(-1, channels, -1, -1).numpy())
    return np.concatenate(outputs) if outputs else np.zeros((0, channels, 1, 1), np.float32)
