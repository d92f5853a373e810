"""Text variants for encoder distillation: the layout the model reads is kept ([CLS] first,
[SEP] last, right padding), only the corpus's own tokens appear, every variant is a real edit,
and the same seed gives the same variants."""
import numpy as np
import pytest

from slimline.errors import SlimlineError
from slimline.techniques.text_variants import with_variants

CLS, SEP = 101, 102


def corpus(count=40, width=16, seed=0):
    rng = np.random.default_rng(seed)
    ids, mask = np.zeros((count, width), np.int64), np.zeros((count, width), np.int64)
    for row in range(count):
        # some texts are too short for most edits, one is empty ([CLS] [SEP] alone)
        length = 2 if row == 0 else rng.integers(3, width + 1)
        ids[row, :length] = [CLS, *rng.integers(1000, 1100, length - 2), SEP]
        mask[row, :length] = 1
    return {"input_ids": ids, "attention_mask": mask}


def test_variants_keep_the_layout_and_the_corpus_tokens_and_change_every_text():
    inputs = corpus()
    out = with_variants(inputs, 3, seed=0)
    ids, mask = out["input_ids"], out["attention_mask"]
    assert ids.shape == (160, 16) and mask.shape == (160, 16)
    assert np.array_equal(ids[:40], inputs["input_ids"])        # the originals come first
    lengths = mask.sum(1)
    assert np.all(mask == (np.arange(16) < lengths[:, None]))   # right padding, no holes
    assert np.all(ids[mask == 0] == 0)
    assert np.all(ids[:, 0] == CLS) and np.all(ids[np.arange(160), lengths - 1] == SEP)
    bodies = ids[mask.astype(bool)]
    assert set(bodies.tolist()) <= set(inputs["input_ids"][inputs["attention_mask"] == 1].tolist())
    originals = {tuple(row[:n]) for row, n in
                 zip(inputs["input_ids"], inputs["attention_mask"].sum(1))}
    changed = [tuple(row[:n]) not in originals for row, n in zip(ids[40:], lengths[40:])]
    assert np.mean(changed) > 0.8        # a drop or splice can, rarely, give back the same text


def test_variants_are_deterministic_under_the_seed_and_zero_copies_is_the_corpus():
    inputs = corpus()
    first, second = with_variants(inputs, 2, seed=5), with_variants(inputs, 2, seed=5)
    assert all(np.array_equal(first[name], second[name]) for name in first)
    other = with_variants(inputs, 2, seed=6)
    assert not np.array_equal(first["input_ids"], other["input_ids"])
    assert with_variants(inputs, 0, seed=0) is inputs


def test_variants_need_token_ids_and_a_mask():
    with pytest.raises(SlimlineError, match="distill.text_variants"):
        with_variants({"input": np.zeros((4, 1, 8, 8), np.float32)}, 1, seed=0)
