"""How many texts one training step takes on a GPU, and the learning rate that goes with it.

On a CPU a step takes train.batch_size texts, as it always has. On a CUDA GPU a batch of 32
short texts leaves the device mostly idle (the encoder profile's distillation ran about 20 ms a
step on an H200, issue 31), so text batches are sized by tokens instead: length-sorted texts cut
so that each batch holds up to training.gpu_tokens_per_batch tokens padded to its own longest
text, and never fewer than train.batch_size texts. A larger batch takes fewer steps, so the peak
learning rate grows with it: by the square root of the batch ratio for AdamW (the scaling rule
for adaptive optimizers, Malladi et al. 2022), linearly for SGD (Goyal et al. 2017).
"""
from __future__ import annotations

import torch


def token_batches(lengths: torch.Tensor, max_tokens: int, min_texts: int) -> list[torch.Tensor]:
    """Indices grouped by length (sorted, stable), each group as many consecutive texts as fit
    `max_tokens` (texts x the group's longest), but at least `min_texts` (the last group may
    hold fewer: it holds what is left)."""
    order = torch.argsort(lengths, stable=True)
    ordered = lengths[order].tolist()
    batches, start = [], 0
    while start < len(order):
        end = min(start + min_texts, len(order))
        while end < len(order) and (end + 1 - start) * max(ordered[end], 1) <= max_tokens:
            end += 1
        batches.append(order[start:end])
        start = end
    return batches


def scaled_learning_rate(learning_rate: float, optimizer: str, base_batch: float,
                         batch: float) -> float:
    """The peak learning rate for batches of `batch` texts on average, from the one set for
    `base_batch` (see the module docstring)."""
    ratio = batch / base_batch
    return learning_rate * (ratio ** 0.5 if optimizer == "adamw" else ratio)
