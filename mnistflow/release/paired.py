"""Candidate against baseline on the same test images: a paired comparison with intervals.

Both models predict the same images, so what separates them is the images on which exactly
one of them is right (the discordant pairs), not the 0.1 % their accuracies differ by. The
test is McNemar's exact test: under "equally good" each discordant image is a fair coin, so
the count the baseline alone gets right is Binomial(discordant, 1/2). Chosen over a paired
bootstrap because it is exact for a handful of discordant images (where a bootstrap's
resamples are coarse), takes milliseconds, and draws no random numbers: the same predictions
give the same figures, byte for byte, on every host.

Intervals: Wilson's score interval for each accuracy (sound near 1, where the normal one
overshoots), and Newcombe's hybrid score interval for the paired difference (Newcombe 1998,
method 10), which uses both Wilson intervals and the correlation of the pairs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Figures in reports are rounded: enough digits to tell a 1-in-10,000 difference, no more,
# so that a report's bytes do not hinge on the last bits of a float.
DIGITS = 6


@dataclass(frozen=True)
class PairedComparison:
    """Counts and statistics of candidate vs baseline on the same `images` test images."""

    images: int
    candidate_correct: int
    baseline_correct: int
    baseline_only_correct: int  # discordant: the baseline right, the candidate wrong
    candidate_only_correct: int  # discordant: the candidate right, the baseline wrong
    p_value_worse: float  # one-sided: the chance of this many losses (or more) by luck alone
    p_value_two_sided: float
    confidence: float
    candidate_interval: tuple[float, float]
    baseline_interval: tuple[float, float]
    difference_interval: tuple[float, float]  # candidate minus baseline accuracy

    @property
    def candidate_accuracy(self) -> float:
        return self.candidate_correct / self.images

    @property
    def baseline_accuracy(self) -> float:
        return self.baseline_correct / self.images

    @property
    def difference(self) -> float:
        return (self.candidate_only_correct - self.baseline_only_correct) / self.images

    def as_json(self) -> dict:
        return {
            "test": "mcnemar_exact",
            "images": self.images,
            "baseline_only_correct": self.baseline_only_correct,
            "candidate_only_correct": self.candidate_only_correct,
            "difference": round(self.difference, DIGITS),
            "difference_interval": _rounded(self.difference_interval),
            "p_value_worse": significant(self.p_value_worse),
            "p_value_two_sided": significant(self.p_value_two_sided),
            "confidence": self.confidence,
            "baseline_accuracy": round(self.baseline_accuracy, DIGITS),
            "baseline_interval": _rounded(self.baseline_interval),
        }


def wilson_interval(successes: int, trials: int, confidence: float) -> tuple[float, float]:
    """Wilson's score interval for a proportion (scipy's implementation)."""
    from scipy.stats import binomtest

    interval = binomtest(successes, trials).proportion_ci(confidence, method="wilson")
    return float(interval.low), float(interval.high)


def compare(
    candidate_wrong: np.ndarray, baseline_wrong: np.ndarray, images: int, confidence: float
) -> PairedComparison:
    """The paired comparison from each model's misclassified test indices (0 .. images-1)."""
    from scipy.stats import binomtest

    candidate, baseline = set(candidate_wrong.tolist()), set(baseline_wrong.tolist())
    baseline_only = len(candidate - baseline)  # the candidate misses what the baseline gets
    candidate_only = len(baseline - candidate)
    discordant = baseline_only + candidate_only
    if discordant:
        p_worse = binomtest(baseline_only, discordant, 0.5, alternative="greater").pvalue
        p_two_sided = binomtest(baseline_only, discordant, 0.5).pvalue
    else:
        p_worse = p_two_sided = 1.0
    candidate_correct, baseline_correct = images - len(candidate), images - len(baseline)
    both_correct = images - len(candidate | baseline)
    both_wrong = len(candidate & baseline)
    candidate_interval = wilson_interval(candidate_correct, images, confidence)
    baseline_interval = wilson_interval(baseline_correct, images, confidence)
    return PairedComparison(
        images=images,
        candidate_correct=candidate_correct,
        baseline_correct=baseline_correct,
        baseline_only_correct=baseline_only,
        candidate_only_correct=candidate_only,
        p_value_worse=float(p_worse),
        p_value_two_sided=float(p_two_sided),
        confidence=confidence,
        candidate_interval=candidate_interval,
        baseline_interval=baseline_interval,
        difference_interval=newcombe_interval(
            (both_correct, baseline_only, candidate_only, both_wrong),
            candidate_interval,
            baseline_interval,
        ),
    )


def newcombe_interval(
    table: tuple[int, int, int, int],
    candidate_interval: tuple[float, float],
    baseline_interval: tuple[float, float],
) -> tuple[float, float]:
    """Newcombe's interval for candidate minus baseline accuracy on paired outcomes.

    `table` is (both right, baseline only, candidate only, both wrong); the intervals are
    each accuracy's Wilson interval at the wanted confidence."""
    both, baseline_only, candidate_only, neither = table
    images = sum(table)
    baseline = (both + baseline_only) / images
    candidate = (both + candidate_only) / images
    margins = (
        (both + baseline_only) * (candidate_only + neither) * (both + candidate_only)
        * (baseline_only + neither)
    )  # fmt: skip
    phi = (both * neither - baseline_only * candidate_only) / math.sqrt(margins) if margins else 0
    candidate_low, candidate_high = candidate_interval
    baseline_low, baseline_high = baseline_interval
    below = _half_width(candidate - candidate_low, baseline_high - baseline, phi)
    above = _half_width(candidate_high - candidate, baseline - baseline_low, phi)
    difference = candidate - baseline
    return max(-1.0, difference - below), min(1.0, difference + above)


def _half_width(candidate_margin: float, baseline_margin: float, phi: float) -> float:
    """One side of Newcombe's interval: the two Wilson margins combined, correlated by phi."""
    squared = candidate_margin**2 - 2 * phi * candidate_margin * baseline_margin
    return math.sqrt(max(0.0, squared + baseline_margin**2))


def compare_unpaired(
    candidate_correct: int,
    candidate_images: int,
    baseline_accuracy: float,
    baseline_images: int,
    confidence: float,
) -> tuple[dict, float]:
    """Where the baseline was measured on other images (or recorded no per-image outcomes):
    Fisher's exact test on the two accuracies, one-sided for a worse candidate. Weaker than
    the paired test, and said so in the report. (The record, the exact p-value.)"""
    from scipy.stats import fisher_exact

    baseline_correct = round(baseline_accuracy * baseline_images)
    table = [
        [baseline_correct, baseline_images - baseline_correct],
        [candidate_correct, candidate_images - candidate_correct],
    ]
    p_worse = float(fisher_exact(table, alternative="greater").pvalue)
    record = {
        "test": "fisher_exact_unpaired",
        "images": candidate_images,
        "baseline_images": baseline_images,
        "difference": round(candidate_correct / candidate_images - baseline_accuracy, DIGITS),
        "p_value_worse": significant(p_worse),
        "confidence": confidence,
        "baseline_accuracy": round(baseline_accuracy, DIGITS),
        "baseline_interval": _rounded(
            wilson_interval(baseline_correct, baseline_images, confidence)
        ),
    }
    return record, p_worse


def significant(p_value: float) -> float:
    """A p-value to 4 significant digits: 1e-12 stays 1e-12, where rounding to places would
    make it 0."""
    return float(f"{p_value:.4g}")


def _rounded(interval: tuple[float, float]) -> list[float]:
    return [round(interval[0], DIGITS), round(interval[1], DIGITS)]
