"""A text data set from the user's JSONL or CSV file, tokenized with the model's own tokenizer.

Rows have a text column and optionally a label column (names in params). Tokenization is
declared in params (max_length; every sequence is padded / truncated to it), so the splits are
fixed-shape int64 arrays `input_ids` and `attention_mask` that the later stages and ONNX
Runtime read exactly as the model was trained on. The file is streamed: read a row at a
time and tokenized TOKENIZE_CHUNK rows at a time, so a corpus of 200,000 texts is held only as
its token arrays. A pairs file (text_a, text_b, label 1 = similar, 0 = dissimilar) is
tokenized the same way for embedding models.
"""
from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slimline.errors import SlimlineError

FORMATS = (".jsonl", ".csv")


@dataclass(frozen=True)
class TextTable:
    texts: list[str]
    labels: list | None          # raw labels (int or str), or None without a label column


def _iter_rows(path: Path) -> Iterator[tuple[int, dict, list[str]]]:
    """(row number, row, the file's column names) for each row, read a line at a time: a corpus
    of 200,000 texts is never held whole. One clear line for a missing, unknown or malformed
    file. A CSV file's columns are its header; a JSONL file's, its first row's keys."""
    if not path.is_file():
        raise SlimlineError(f"{path}: text data file not found")
    if path.suffix.lower() not in FORMATS:
        raise SlimlineError(
            f"{path}: text data must be {' or '.join(FORMATS)} (got '{path.suffix}')"
        )
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            if path.suffix.lower() == ".csv":
                reader = csv.DictReader(handle)
                for number, row in enumerate(reader, 1):
                    yield number, row, list(reader.fieldnames or [])
                return
            columns, number = None, 0
            for line_number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise SlimlineError(f"{path}: line {line_number} is not JSON "
                                        f"({exc.msg})") from None
                if not isinstance(row, dict):
                    raise SlimlineError(f"{path}: line {line_number} is not a JSON object")
                columns = list(row) if columns is None else columns
                number += 1
                yield number, row, columns
    except UnicodeDecodeError as exc:
        raise SlimlineError(f"{path}: not UTF-8 text ({exc.reason})") from None


def _value(row: dict, number: int, columns: list[str], name: str, path: Path, key: str):
    if name not in columns:
        raise SlimlineError(f"{path}: no column '{name}' ({key}); columns are: "
                            f"{', '.join(columns) or 'none'}")
    if row.get(name) in (None, ""):
        raise SlimlineError(f"{path}: row {number} has no value in column '{name}' ({key})")
    return row[name]


def _read_columns(path: Path, names: dict[str, str], chunk: int | None = None
                  ) -> Iterator[dict[str, list]]:
    """The named columns ({column: its params key}) of every row, `chunk` rows at a time (all in
    one with None)."""
    values: dict[str, list] = {name: [] for name in names}
    count = 0
    for number, row, columns in _iter_rows(path):
        for name, key in names.items():
            values[name].append(_value(row, number, columns, name, path, key))
        count += 1
        if count == chunk:
            yield values
            values, count = {name: [] for name in names}, 0
    if count:   # an empty file yields nothing
        yield values


def _text_columns(text_column: str, label_column: str | None) -> dict[str, str]:
    return {text_column: "data.text.text_column",
            **({label_column: "data.text.label_column"} if label_column else {})}


def read_text_table(path: str | Path, text_column: str, label_column: str | None) -> TextTable:
    path = Path(path)
    table = next(_read_columns(path, _text_columns(text_column, label_column)), None)
    if table is None:
        raise SlimlineError(f"{path}: text data file has no rows")
    return TextTable([str(text) for text in table[text_column]],
                     table[label_column] if label_column else None)


def read_pairs(
    path: str | Path, columns: tuple[str, str, str]
) -> tuple[list[str], list[str], np.ndarray]:
    """(texts a, texts b, labels 0/1) of a labelled pairs file."""
    path = Path(path)
    table = next(_read_columns(path, dict.fromkeys(columns, "data.text.pairs")), None)
    if table is None:
        raise SlimlineError(f"{path}: pairs file has no rows")
    first, second, label = (table[name] for name in columns)
    try:
        labels = np.array([int(value) for value in label], dtype=np.int64)
    except (TypeError, ValueError):
        raise SlimlineError(f"{path}: column '{columns[2]}' must hold 1 (similar) or 0 "
                            "(dissimilar)") from None
    if not np.isin(labels, (0, 1)).all():
        raise SlimlineError(
            f"{path}: column '{columns[2]}' must hold 1 (similar) or 0 (dissimilar), "
            f"found {sorted(set(labels.tolist()) - {0, 1})[:5]}"
        )
    return [str(text) for text in first], [str(text) for text in second], labels


def encode_labels(
    labels: list, label2id: dict[str, int] | None, path: str | Path
) -> tuple[np.ndarray, list[str]]:
    """Class indices and class names. Integer labels are indices already; names map through the
    model's own label2id when it knows them all, else sorted alphabetically."""
    if all(isinstance(label, int) and not isinstance(label, bool) for label in labels) or all(
            isinstance(label, str) and label.lstrip("-").isdigit() for label in labels):
        indices = np.array([int(label) for label in labels], dtype=np.int64)
        return indices, [str(index) for index in range(int(indices.max()) + 1)]
    names = sorted({str(label) for label in labels})
    if label2id and set(names) <= set(label2id):
        ordered = sorted(label2id, key=label2id.get)
        return np.array([label2id[str(label)] for label in labels], dtype=np.int64), ordered
    if label2id and not all(key.startswith("LABEL_") for key in label2id):
        unknown = sorted(set(names) - set(label2id))[:5]
        raise SlimlineError(f"{path}: labels {unknown} are not among the model's labels "
                            f"({', '.join(sorted(label2id, key=label2id.get))})")
    index = {name: position for position, name in enumerate(names)}
    return np.array([index[str(label)] for label in labels], dtype=np.int64), names


TOKENIZE_CHUNK = 4096   # texts per tokenizer call: its Python lists of ids stay this small


def tokenize(tokenizer, texts: list[str], max_length: int) -> dict[str, np.ndarray]:
    """Named int64 arrays, every row padded / truncated to `max_length` tokens, filled a chunk
    of texts at a time (200,000 texts as one call held 12.8 M token ids as Python ints)."""
    arrays = {name: np.zeros((len(texts), max_length), np.int64)
              for name in ("input_ids", "attention_mask")}
    for start in range(0, len(texts), TOKENIZE_CHUNK):
        encoded = tokenizer(texts[start:start + TOKENIZE_CHUNK], max_length=max_length,
                            padding="max_length", truncation=True, return_attention_mask=True,
                            return_token_type_ids=False)
        for name, array in arrays.items():
            array[start:start + TOKENIZE_CHUNK] = np.asarray(encoded[name], dtype=np.int64)
    return arrays


def truncated_count(tokenizer, texts: list[str], max_length: int) -> int:
    """How many texts lose tokens to max_length (the log says so: a silent cut hides signal)."""
    return sum(len(ids) > max_length
               for start in range(0, len(texts), TOKENIZE_CHUNK)
               for ids in tokenizer(texts[start:start + TOKENIZE_CHUNK], truncation=False,
                                    return_attention_mask=False,
                                    return_token_type_ids=False)["input_ids"])


@dataclass
class TextDataset:
    inputs: dict[str, np.ndarray]     # input_ids, attention_mask: int64 (N, max_length)
    labels: np.ndarray                # class indices; zeros when the file has no labels
    classes: list[str] | None         # label i is classes[i]; None without labels
    truncated: int                    # texts longer than max_length (cut)


def load_text_dataset(path: str | Path, config, model_dir: Path) -> TextDataset:
    """The user's text file as model inputs (config: params data.text), tokenized with the
    tokenizer saved in `model_dir`, streamed: TOKENIZE_CHUNK rows are read and tokenized at a
    time, so only the token arrays of the whole corpus are held (and its labels, if any)."""
    from slimline.models.huggingface import label2id, load_tokenizer

    path = Path(path)
    tokenizer = load_tokenizer(model_dir)
    columns = _text_columns(config.text_column, config.label_column)
    parts, labels, truncated = [], [], 0
    for chunk in _read_columns(path, columns, TOKENIZE_CHUNK):
        texts = [str(text) for text in chunk[config.text_column]]
        parts.append(tokenize(tokenizer, texts, config.max_length))
        truncated += truncated_count(tokenizer, texts, config.max_length)
        labels += chunk.get(config.label_column, [])
    if not parts:
        raise SlimlineError(f"{path}: text data file has no rows")
    inputs = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    if config.label_column is None:
        return TextDataset(inputs, np.zeros(len(inputs["input_ids"]), np.int64), None, truncated)
    indices, classes = encode_labels(labels, label2id(model_dir), path)
    return TextDataset(inputs, indices, classes, truncated)


def save_pairs(path: str | Path, config, model_dir: Path, folder: Path) -> int:
    """Tokenize the labelled pairs file into two splits (sides a and b, labels 1/0); the count."""
    from slimline.data.splits import PAIR_FILES, Split, save_split
    from slimline.models.huggingface import load_tokenizer

    first, second, labels = read_pairs(path, tuple(config.pairs_columns))
    tokenizer = load_tokenizer(model_dir)
    for texts, name in ((first, PAIR_FILES[0]), (second, PAIR_FILES[1])):
        save_split(Split(tokenize(tokenizer, texts, config.max_length), labels), folder / name)
    return len(labels)


SPECIAL_TOKENS = "special_tokens.json"   # beside the splits: the tokenizer's special token ids


def save_special_tokens(model_dir: Path, folder: Path) -> None:
    """The tokenizer's special token ids and its unknown token's id, beside the splits, so a
    later stage knows them without the user's model folder (distill.trim_vocabulary)."""
    from slimline.models.huggingface import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    (folder / SPECIAL_TOKENS).write_text(json.dumps(
        {"special_ids": sorted(int(i) for i in tokenizer.all_special_ids),
         "unknown": tokenizer.unk_token_id}))


def read_special_tokens(folder: Path) -> tuple[list[int], int | None]:
    """(special token ids, unknown token id or None) as prepare saved them."""
    path = Path(folder) / SPECIAL_TOKENS
    try:
        data = json.loads(path.read_text())
        return [int(i) for i in data["special_ids"]], data["unknown"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SlimlineError(f"{path}: no readable special token ids ({exc}); "
                            "prepare writes them for text data") from None
