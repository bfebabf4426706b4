"""Pairwise preference accuracy of a reward model, with a percentile bootstrap interval over the pairs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairwiseAccuracy:
    accuracy: float  # fraction of pairs with r_chosen > r_rejected (a tie counts as wrong)
    low: float  # bounds of the bootstrap interval
    high: float
    pairs: int
    level: float = 0.95
    resamples: int = 1000

    def as_dict(self) -> dict:
        return {
            "accuracy": self.accuracy,
            "ci_low": self.low,
            "ci_high": self.high,
            "ci_level": self.level,
            "bootstrap_resamples": self.resamples,
            "pairs": self.pairs,
        }


def pairwise_accuracy(
    chosen: np.ndarray, rejected: np.ndarray, *, resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> PairwiseAccuracy:
    """Accuracy of r_chosen > r_rejected and its `level` percentile bootstrap interval (pairs resampled).

    A NaN reward on either side counts as a wrong pair, as in the RewardBench 2 scoring.
    """
    chosen, rejected = np.asarray(chosen, dtype=float), np.asarray(rejected, dtype=float)
    if chosen.shape != rejected.shape or chosen.ndim != 1:
        raise ValueError(f"need two equal-length reward vectors, got {chosen.shape} and {rejected.shape}")
    if len(chosen) == 0:
        raise ValueError("no pairs to score")
    if not 0 < level < 1:
        raise ValueError(f"the interval level must be in (0, 1), got {level}")
    correct = (chosen > rejected).astype(float)  # NaN compares False
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 256):  # bounded memory for large files
        count = min(256, resamples - start)
        draws = rng.integers(0, len(correct), size=(count, len(correct)))
        means[start : start + count] = correct[draws].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail]) if resamples else (np.nan, np.nan)
    return PairwiseAccuracy(float(correct.mean()), float(low), float(high), len(correct), level, resamples)
