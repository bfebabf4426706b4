"""95% percentile bootstrap intervals of RewardBench 2 scores over prompts, per reward model or paired.

Prompts are resampled with replacement within each subset (Ties: its questions N, each with its 'ref:N'
and 'tied:N' prompts, since the Ties formula pairs them). Every subset score is recomputed on the
resample by the scoring code itself (`SubsetTerms.score`), and Overall is the mean of the resampled
subset scores, as for the point estimate. The resamples depend only on the seed, the subset's name and
its number of units, so every reward model evaluated on the same data sees the same resampled prompts:
differences between two models are paired.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sarm.data.rewardbench2 import SUBSETS
from sarm.eval.rewardbench2 import ScoreTerm, ScoringError, SubsetTerms, prompts_by_subset, subset_terms

LEVEL = 0.95
OVERALL = "Overall"


@dataclass(frozen=True)
class BootstrapConfig:
    resamples: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.resamples, bool) or not isinstance(self.resamples, int) or self.resamples < 1:
            raise ValueError(f"tables.bootstrap.resamples must be a positive integer, got {self.resamples!r}")


@dataclass(frozen=True)
class Estimate:
    """A score (or a difference of scores) as a fraction, with the bounds of its bootstrap interval."""

    value: float
    low: float
    high: float


def canonical_subset(name: str) -> str:
    """The table's spelling of a subset name (matched case-insensitively); other names stay as they are."""
    return {subset.lower(): subset for subset in SUBSETS}.get(name.lower(), name)


def read_subset_terms(rewards_path: str | Path) -> dict[str, SubsetTerms]:
    """Per subset, the score terms of a per-completion reward table (rewards.parquet / .csv of evaluation)."""
    rewards_path = Path(rewards_path)
    if not rewards_path.is_file():
        raise FileNotFoundError(
            f"per-completion rewards {rewards_path} do not exist (written by rule evaluate_rewardbench2)"
        )
    table = pd.read_parquet(rewards_path) if rewards_path.suffix == ".parquet" else pd.read_csv(rewards_path)
    try:
        by_subset = prompts_by_subset(table)
    except ScoringError as err:
        raise ScoringError(f"{rewards_path}: {err}") from None
    if not by_subset:
        raise ScoringError(f"{rewards_path}: the reward table is empty")
    terms = {
        canonical_subset(name): _in_unit_order(subset_terms(name, prompts))
        for name, prompts in by_subset.items()
    }
    # A fixed subset order, so Overall sums the same floats in the same order whatever the file's order.
    return dict(sorted(terms.items(), key=lambda item: (_subset_position(item[0]), item[0])))


def _subset_position(name: str) -> int:
    return SUBSETS.index(name) if name in SUBSETS else len(SUBSETS)


def _in_unit_order(terms: SubsetTerms) -> SubsetTerms:
    # Resamples index units by position: sorting makes the positions independent of the file's row order.
    order = sorted(range(len(terms.units)), key=lambda index: terms.units[index])
    return SubsetTerms(
        tuple(terms.units[index] for index in order),
        tuple(ScoreTerm(term.weight, term.values[order], term.counted[order]) for term in terms.terms),
    )


def resampled_counts(subset: str, units: int, config: BootstrapConfig) -> np.ndarray:
    """(resamples, units): how often each unit of `subset` is drawn in each resample."""
    rng = np.random.default_rng([config.seed, zlib.crc32(subset.lower().encode())])
    return rng.multinomial(units, np.full(units, 1.0 / units), size=config.resamples)


def resampled_scores(
    rows: Sequence[Mapping[str, SubsetTerms]], config: BootstrapConfig, names: Sequence[str]
) -> list[dict[str, np.ndarray]]:
    """Per row: each subset's and Overall's scores on every resample, all rows on the same resampled units.

    `names` name the rows (their files) in errors; the rows must hold the same subsets and units.
    """
    first, first_name = rows[0], names[0]
    for row, name in zip(rows[1:], names[1:], strict=True):
        if set(row) != set(first):
            raise ValueError(
                f"{name} has subsets {sorted(row)} but {first_name} has {sorted(first)}: a paired bootstrap "
                "needs both reward models evaluated on the same RewardBench 2 data"
            )
        for subset, terms in row.items():
            if terms.units != first[subset].units:
                raise ValueError(
                    f"{name} and {first_name} scored different prompts of subset {subset}: a paired "
                    "bootstrap needs both reward models evaluated on the same RewardBench 2 data"
                )
    samples: list[dict[str, np.ndarray]] = [{} for _ in rows]
    for subset, terms in first.items():
        counts = resampled_counts(subset, len(terms.units), config)
        for row, out in zip(rows, samples, strict=True):
            out[subset] = np.asarray(row[subset].score(counts))
    for out in samples:
        out[OVERALL] = np.mean([out[subset] for subset in first], axis=0)
    return samples


def point_scores(row: Mapping[str, SubsetTerms]) -> dict[str, float]:
    """Each subset's score and Overall (their mean), on all units once."""
    scores = {subset: float(terms.score()) for subset, terms in row.items()}
    scores[OVERALL] = float(np.mean(list(scores.values())))
    return scores


def percentile_interval(samples: np.ndarray) -> tuple[float, float]:
    tail = (1 - LEVEL) / 2
    low, high = np.quantile(samples, [tail, 1 - tail])
    return float(low), float(high)


def score_estimates(rewards_path: str | Path, config: BootstrapConfig) -> dict[str, Estimate]:
    """Overall and each subset of one reward model, with its 95% interval over prompts."""
    row = read_subset_terms(rewards_path)
    (samples,) = resampled_scores([row], config, [str(rewards_path)])
    return {
        name: Estimate(value, *percentile_interval(samples[name]))
        for name, value in point_scores(row).items()
    }


@dataclass(frozen=True)
class PairedEstimate:
    """Scores of A and B (fractions) and A - B with the interval of the differences on shared resamples."""

    a: float
    b: float
    difference: Estimate


def paired_differences(
    rewards_a: str | Path, rewards_b: str | Path, config: BootstrapConfig
) -> dict[str, PairedEstimate]:
    """A - B for Overall and each subset, with the 95% interval of the paired differences."""
    rows = [read_subset_terms(rewards_a), read_subset_terms(rewards_b)]
    samples_a, samples_b = resampled_scores(rows, config, [str(rewards_a), str(rewards_b)])
    points_a, points_b = point_scores(rows[0]), point_scores(rows[1])
    return {
        name: PairedEstimate(
            points_a[name],
            points_b[name],
            Estimate(
                points_a[name] - points_b[name], *percentile_interval(samples_a[name] - samples_b[name])
            ),
        )
        for name in points_a
    }
