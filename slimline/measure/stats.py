"""Statistics a reviewer can trust: paired accuracy intervals and latency spread.

Accuracy differences are paired (the same test items for both models), so only the items that
flipped carry information. Conditional on the number of flips n = b + c, the flips towards the
model (b) are Binomial(n, p); the exact (Clopper-Pearson) interval on p maps to an exact interval
on the accuracy difference (b - c) / N, and the exact McNemar test is the binomial test of p = 1/2.
A paired difference of a score that is not a mean over items (a rank correlation) gets a paired
bootstrap interval instead.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest


@dataclass(frozen=True)
class PairedDifference:
    difference: float        # accuracy(model) - accuracy(reference), as a fraction
    low: float               # confidence interval on the difference
    high: float
    gained: int              # items the reference got wrong and the model right
    lost: int                # items the reference got right and the model wrong
    items: int
    p_value: float           # exact McNemar test of "no difference"


def paired_difference(reference_correct: np.ndarray, model_correct: np.ndarray,
                      confidence: float = 0.95) -> PairedDifference:
    reference_correct = np.asarray(reference_correct, bool)
    model_correct = np.asarray(model_correct, bool)
    items = len(reference_correct)
    gained = int(np.sum(model_correct & ~reference_correct))
    lost = int(np.sum(reference_correct & ~model_correct))
    flips = gained + lost
    if flips == 0:
        return PairedDifference(0.0, 0.0, 0.0, 0, 0, items, 1.0)
    test = binomtest(gained, flips, 0.5)
    interval = test.proportion_ci(confidence_level=confidence, method="exact")
    # difference = (gained - lost) / items = flips * (2p - 1) / items
    to_difference = lambda p: flips * (2 * p - 1) / items  # noqa: E731
    return PairedDifference((gained - lost) / items, to_difference(interval.low),
                            to_difference(interval.high), gained, lost, items, float(test.pvalue))


@dataclass(frozen=True)
class BootstrapDifference:
    difference: float        # score(model) - score(reference) on every item
    low: float               # percentile interval over resampled item sets
    high: float
    resamples: int


def paired_bootstrap(difference_of, items: int, confidence: float = 0.95, resamples: int = 1000,
                     seed: int = 0) -> BootstrapDifference:
    """The interval of a paired difference that is not a mean of per-item outcomes (a rank
    correlation): `difference_of(indices)` scores both models on the same resampled items, so
    what both get wrong alike cancels, as in the flip count of paired_difference."""
    rng = np.random.default_rng(seed)
    samples = np.array([difference_of(rng.integers(0, items, items)) for _ in range(resamples)])
    tail = 100 * (1 - confidence) / 2
    return BootstrapDifference(float(difference_of(np.arange(items))),
                               float(np.percentile(samples, tail)),
                               float(np.percentile(samples, 100 - tail)), resamples)


def smallest_detectable_difference(items: int, confidence: float = 0.95) -> float:
    """The smallest accuracy change (fraction) the split can call real: k one-way flips with an
    exact McNemar p-value below 1 - confidence."""
    alpha = 1 - confidence
    flips = next(k for k in range(1, items + 1) if 2 * 0.5 ** k < alpha)
    return flips / items


@dataclass(frozen=True)
class RatioSpread:
    median: float
    low: float               # smallest and largest per-round ratio
    high: float
    relative_spread: float   # (high - low) / median


def speedup_spread(
    reference_rounds: list[np.ndarray], model_rounds: list[np.ndarray]
) -> RatioSpread:
    """Speed-up of a model over the reference, one ratio of medians per interleaved round."""
    ratios = np.array([np.median(ref) / np.median(model)
                       for ref, model in zip(reference_rounds, model_rounds)])
    median = float(np.median(ratios))
    return RatioSpread(median, float(ratios.min()), float(ratios.max()),
                       float((ratios.max() - ratios.min()) / median))


def too_noisy(spread: RatioSpread, max_relative_spread: float) -> bool:
    """True when the per-round speed-ups disagree by more than the allowed fraction."""
    return spread.relative_spread > max_relative_spread
