"""A text data set from the user's JSONL or CSV file, tokenized with the model's own tokenizer.

Rows have a text column and optionally a label column (names in params). Tokenization is
declared in params (max_length; every sequence is padded / truncated to it), so the splits are
fixed-shape int64 arrays `input_ids` and `attention_mask` that the later stages and ONNX
Runtime read exactly as the model was trained on. A pairs file (text_a, text_b, label 1 =
similar, 0 = dissimilar) is tokenized the same way for embedding models.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slimline.errors import SlimlineError

FORMATS = (".jsonl", ".csv")


@dataclass(frozen=True)
class TextTable:
    texts: list[str]
    labels: list | None          # raw labels (int or str), or None without a label column


def _read_rows(path: Path) -> tuple[list[dict], list[str]]:
    """(rows, column names); one clear line for a missing, unknown or malformed file."""
    if not path.is_file():
        raise SlimlineError(f"{path}: text data file not found")
    if path.suffix.lower() not in FORMATS:
        raise SlimlineError(
            f"{path}: text data must be {' or '.join(FORMATS)} (got '{path.suffix}')"
        )
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SlimlineError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(content.splitlines())
        rows = list(reader)
        return rows, list(reader.fieldnames or [])
    rows = []
    for number, line in enumerate(content.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SlimlineError(f"{path}: line {number} is not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise SlimlineError(f"{path}: line {number} is not a JSON object")
        rows.append(row)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return rows, columns


def _column(rows: list[dict], columns: list[str], name: str, path: Path, key: str) -> list:
    if name not in columns:
        raise SlimlineError(f"{path}: no column '{name}' ({key}); columns are: "
                            f"{', '.join(columns) or 'none'}")
    missing = next((index for index, row in enumerate(rows) if row.get(name) in (None, "")), None)
    if missing is not None:
        raise SlimlineError(f"{path}: row {missing + 1} has no value in column '{name}' ({key})")
    return [row[name] for row in rows]


def read_text_table(path: str | Path, text_column: str, label_column: str | None) -> TextTable:
    path = Path(path)
    rows, columns = _read_rows(path)
    if not rows:
        raise SlimlineError(f"{path}: text data file has no rows")
    texts = [
        str(text) for text in _column(rows, columns, text_column, path, "data.text.text_column")
    ]
    labels = (None if label_column is None else
              _column(rows, columns, label_column, path, "data.text.label_column"))
    return TextTable(texts, labels)


def read_pairs(
    path: str | Path, columns: tuple[str, str, str]
) -> tuple[list[str], list[str], np.ndarray]:
    """(texts a, texts b, labels 0/1) of a labelled pairs file."""
    path = Path(path)
    rows, found = _read_rows(path)
    if not rows:
        raise SlimlineError(f"{path}: pairs file has no rows")
    first, second, label = (_column(rows, found, name, path, "data.text.pairs") for name in columns)
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
    tokenizer saved in `model_dir`; the file is checked first (it is cheaper than the tokenizer)."""
    from slimline.models.huggingface import label2id, load_tokenizer

    table = read_text_table(path, config.text_column, config.label_column)
    tokenizer = load_tokenizer(model_dir)
    inputs = tokenize(tokenizer, table.texts, config.max_length)
    truncated = truncated_count(tokenizer, table.texts, config.max_length)
    if table.labels is None:
        return TextDataset(inputs, np.zeros(len(table.texts), np.int64), None, truncated)
    labels, classes = encode_labels(table.labels, label2id(model_dir), path)
    return TextDataset(inputs, labels, classes, truncated)


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
