"""Vocabulary trimming: keep only the word-embedding rows of the tokens the user's texts use.

The word-embedding table is half of a small encoder (all-MiniLM-L6-v2: 11.7 M of 22.7 M
parameters, 30,522 rows) and one corpus uses a fraction of its rows (4,000 review snippets:
10,176). The kept set comes from the training split alone; any other token reads the row of the
tokenizer's unknown token, so a text with words the corpus never had is embedded as if the
tokenizer did not know them. That is the cost, and it is measured on the val split (the share of
its tokens outside the kept set) on every run: trim only where the deployment's vocabulary is
closed, or the corpus large (docs/results/2026-11-30-encoder.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slimline.data.splits import Inputs
from slimline.errors import SlimlineError

IDS, MASK = "input_ids", "attention_mask"


@dataclass(frozen=True)
class Vocabulary:
    kept: list[int]      # sorted token ids whose rows stay
    unknown: int         # the id every other token maps to


def corpus_vocabulary(inputs: Inputs, special_ids: list[int], unknown: int | None) -> Vocabulary:
    """The token ids of the texts' real tokens (padding excluded), the special tokens and
    the unknown token."""
    if unknown is None:
        raise SlimlineError("distill.trim_vocabulary: the tokenizer has no unknown token for the "
                            "words outside the kept vocabulary to map to")
    if IDS not in inputs or MASK not in inputs:
        raise SlimlineError(f"distill.trim_vocabulary: needs text inputs ({IDS}, {MASK})")
    used = np.unique(_real_tokens(inputs))
    return Vocabulary(sorted({int(i) for i in used} | set(special_ids) | {unknown}), unknown)


def unseen_share(inputs: Inputs, vocabulary: Vocabulary) -> float:
    """The share of the texts' real tokens outside the kept vocabulary."""
    tokens = _real_tokens(inputs)
    return float(np.mean(~np.isin(tokens, vocabulary.kept))) if len(tokens) else 0.0


def _real_tokens(inputs: Inputs) -> np.ndarray:
    """Every token id of the texts, padding left out."""
    return inputs[IDS][inputs[MASK] == 1]
