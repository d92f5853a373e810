"""Where the examples come from: MNIST, an image folder, idx files, an .npz file or a user factory.

Each source gives named inputs and integer labels for the whole data set (slimline/data/splits.py
cuts the splits); class names when the source has them; its own test set when it has one.
Preprocessing declared in params (resize, channels, normalisation) is applied once, so the stored
splits are exactly what the model sees: here, or after the cut (`finish`) for a source whose raw
examples are far smaller than the model's inputs.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from slimline.config.params import DataParams, PreprocessParams
from slimline.config.paths import project_path
from slimline.data.splits import DEFAULT_INPUT, Inputs, Split, load_mnist
from slimline.errors import SlimlineError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass
class Dataset:
    inputs: Inputs
    labels: np.ndarray
    classes: list[str] | None = None   # label i is classes[i], when the source names them
    notes: list[str] = field(default_factory=list)  # what preparing the data did, for the log
    test: Split | None = None       # the source's own test set: the test split is drawn from it
    # Applied to each split's inputs after the cut, when the source returns raw examples.
    finish: Callable[[Inputs], Inputs] | None = None


def normalize(array: np.ndarray, preprocess: PreprocessParams, key: str) -> np.ndarray:
    """(x - mean) / std, per channel (axis 1) or with one value for all."""
    if preprocess.mean is None:
        return array
    mean, std = np.asarray(preprocess.mean, np.float32), np.asarray(preprocess.std, np.float32)
    if len(mean) > 1:
        if array.ndim < 2 or array.shape[1] != len(mean):
            raise SlimlineError(
                f"{key}: preprocess.mean has {len(mean)} values but the inputs have "
                f"shape {list(array.shape[1:])} (channels first expected)"
            )
        shape = (1, len(mean)) + (1,) * (array.ndim - 2)
        mean, std = mean.reshape(shape), std.reshape(shape)
    return ((array - mean) / std).astype(np.float32)


def _read_image(path: Path, preprocess: PreprocessParams):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert("L" if preprocess.channels == 1 else "RGB")
            if preprocess.size is not None:
                height, width = preprocess.size
                image = image.resize((width, height), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise SlimlineError(
            f"{path}: unreadable image ({str(exc).splitlines()[0][:150]})"
        ) from None
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def image_folder(root: Path, preprocess: PreprocessParams) -> Dataset:
    """One sub-folder per class (sorted names are labels 0, 1, ...), images inside."""
    if not root.is_dir():
        raise SlimlineError(f"data.path = {root}: image folder not found")
    classes = sorted(folder.name for folder in root.iterdir()
                     if folder.is_dir() and not folder.name.startswith("."))
    if len(classes) < 2:
        raise SlimlineError(f"data.path = {root}: found {len(classes)} class folder(s) "
                            f"({', '.join(classes) or 'none'}); an image folder needs one "
                            "sub-folder per class, at least two")
    images, labels, first = [], [], None
    for label, name in enumerate(classes):
        files = sorted(path for path in (root / name).iterdir()
                       if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."))
        if not files:
            raise SlimlineError(f"{root / name}: class folder has no images "
                                f"({', '.join(sorted(IMAGE_SUFFIXES))})")
        for path in files:
            array = _read_image(path, preprocess)
            if first is None:
                first = (path, array.shape)
            elif array.shape != first[1]:
                raise SlimlineError(
                    f"{path}: image is {array.shape[1]}x{array.shape[2]}, {first[0].name} is "
                    f"{first[1][1]}x{first[1][2]}; set data.preprocess.size to resize them all")
            images.append(array)
            labels.append(label)
    stacked = normalize(np.stack(images), preprocess, f"data.path = {root}")
    return Dataset({DEFAULT_INPUT: stacked}, np.asarray(labels, np.int64), classes)


def idx_folder(folder: Path, preprocess: PreprocessParams) -> Dataset:
    """MNIST-format idx files: the t10k set is the test split; the bytes are resized, repeated
    into `channels` and normalised after the cut (slimline/data/idx.py)."""
    from slimline.data.idx import read_idx_folder, to_model_inputs

    parts, classes = read_idx_folder(folder)
    (train_images, train_labels), (test_images, test_labels) = parts["train"], parts["test"]

    def finish(inputs: Inputs) -> Inputs:
        images = to_model_inputs(inputs[DEFAULT_INPUT], preprocess.size, preprocess.channels)
        return {DEFAULT_INPUT: normalize(images, preprocess, f"data.path = {folder}")}

    height, width = train_images.shape[2:]
    size = "x".join(map(str, preprocess.size)) if preprocess.size else f"{height}x{width}"
    note = (f"{len(train_labels)} training and {len(test_labels)} test images of {height}x{width} "
            f"from {folder}, as {preprocess.channels} channel(s) of {size}")
    return Dataset({DEFAULT_INPUT: train_images}, train_labels, classes, [note],
                   test=Split({DEFAULT_INPUT: test_images}, test_labels), finish=finish)


def _as_array(value, what: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise SlimlineError(f"{what}: not an array ({exc})") from None


def _model_ready(inputs: Inputs, preprocess: PreprocessParams, key: str) -> Inputs:
    """float64 -> float32 and normalisation of float inputs; integer inputs (ids) untouched."""
    ready = {}
    for name, array in inputs.items():
        if np.issubdtype(array.dtype, np.floating):
            array = normalize(array.astype(np.float32), preprocess, key)
        elif not np.issubdtype(array.dtype, np.integer) and array.dtype != np.bool_:
            raise SlimlineError(f"{key}: input '{name}' has dtype {array.dtype}; numbers expected")
        ready[name] = array
    return ready


def _labels(value, what: str) -> np.ndarray:
    labels = _as_array(value, what)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise SlimlineError(f"{what}: labels must be one integer class per example, got "
                            f"{labels.dtype} of shape {list(labels.shape)}")
    return labels.astype(np.int64)


def npz_file(path: Path, config: DataParams) -> Dataset:
    if not path.is_file():
        raise SlimlineError(f"data.path = {path}: npz file not found")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            wanted = [*config.inputs, config.labels]
            missing = [key for key in wanted if key not in arrays.files]
            if missing:
                which = "data.labels" if missing[0] == config.labels else "data.inputs"
                raise SlimlineError(f"data.path = {path}: no array '{missing[0]}' ({which}); the "
                                    f"file has: {', '.join(arrays.files) or 'nothing'}")
            inputs = {key: arrays[key] for key in config.inputs}
            labels = arrays[config.labels]
    except (OSError, ValueError) as exc:
        raise SlimlineError(f"data.path = {path}: not a readable .npz file ({exc})") from None
    return Dataset(_model_ready(inputs, config.preprocess, f"data.path = {path}"),
                   _labels(labels, f"data.path = {path}: '{config.labels}'"))


def factory(config: DataParams) -> Dataset:
    """`data.factory` returns (inputs, labels) - inputs one array or a dict name -> array -
    or a dataset: len() and [i] -> (input or dict of inputs, label)."""
    from slimline.config.user_code import call

    key = f"data.factory = {config.factory!r}"
    result = call(config.factory, "data.factory", dict(config.factory_args))
    if isinstance(result, tuple) and len(result) == 2:
        inputs, labels = result
    elif hasattr(result, "__len__") and hasattr(result, "__getitem__"):
        pairs = [result[index] for index in range(len(result))]
        if not pairs:
            raise SlimlineError(f"{key}: the dataset is empty")
        first = pairs[0][0]
        inputs = (
            {name: np.stack([_as_array(pair[0][name], key) for pair in pairs]) for name in first}
            if isinstance(first, dict)
            else np.stack([_as_array(pair[0], key) for pair in pairs])
        )
        labels = [int(pair[1]) for pair in pairs]
    else:
        raise SlimlineError(f"{key}: returned {type(result).__name__}; expected (inputs, labels) "
                            "or a dataset of (input, label) pairs")
    named = ({name: _as_array(value, key) for name, value in inputs.items()}
             if isinstance(inputs, dict) else {DEFAULT_INPUT: _as_array(inputs, key)})
    return Dataset(_model_ready(named, config.preprocess, key), _labels(labels, key))


def text_file(path: Path, config: DataParams, model_dir: Path | None) -> Dataset:
    """A JSONL / CSV file of texts, tokenized with the tokenizer saved in the model's folder."""
    from slimline.data.text import load_text_dataset
    from slimline.models.huggingface import check_model_directory

    if model_dir is None:
        raise SlimlineError("data.source text needs model.source huggingface with model.path")
    check_model_directory(model_dir)
    text = load_text_dataset(path, config.text, model_dir)
    note = (f"{text.truncated} of {len(text.labels)} texts are longer than data.text.max_length = "
            f"{config.text.max_length} tokens and were truncated")
    return Dataset(text.inputs, text.labels, text.classes, [note])


def load_dataset(config: DataParams, base: Path, model_dir: Path | None = None) -> Dataset:
    """The whole data set of `config.source`; relative paths are relative to `base` (the folder of
    params.yaml) and stay inside it (slimline/config/paths.py). Text needs the model's folder
    (`model_dir`) for its tokenizer."""
    if config.source == "mnist":
        images, labels = load_mnist()
        return Dataset({DEFAULT_INPUT: images}, labels, [str(digit) for digit in range(10)])
    if config.source == "factory":
        return factory(config)
    path = project_path(base, config.path, "data.path")
    if config.source == "image_folder":
        return image_folder(path, config.preprocess)
    if config.source == "npz":
        return npz_file(path, config)
    if config.source == "idx":
        return idx_folder(path, config.preprocess)
    return text_file(path, config, model_dir)
