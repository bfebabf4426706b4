"""The comparisons table: for configured pairs of reproduced rows, A - B with a paired bootstrap interval."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sarm.report.bootstrap import BootstrapConfig, paired_differences
from sarm.report.tables import HIGH, LOW, SCORE_COLUMNS, check_same_evaluation, read_rewardbench2

DIFFERENCE = "Difference"
COMPARISON_COLUMNS = (
    "Comparison",
    "A",
    "B",
    "Score",
    "A score",
    "B score",
    DIFFERENCE,
    f"{DIFFERENCE}{LOW}",
    f"{DIFFERENCE}{HIGH}",
    "Excludes 0",
)


@dataclass(frozen=True)
class ComparedPair:
    """Two reproduced rows: their labels, rewardbench2.json (`scores_*`) and rewards.parquet (`rewards_*`)."""

    name: str
    label_a: str
    scores_a: Path
    rewards_a: Path
    label_b: str
    scores_b: Path
    rewards_b: Path


def comparisons_table(
    pairs: Sequence[ComparedPair], bootstrap: BootstrapConfig | None = None
) -> pd.DataFrame:
    """One row per pair and score (Overall, then each subset), x100; the interval is of the differences
    A - B on the same resampled prompts for both models."""
    bootstrap = bootstrap or BootstrapConfig()
    records = []
    for pair in pairs:
        estimates = paired_differences(pair.rewards_a, pair.rewards_b, bootstrap)
        for side, label, scores_path, rewards_path in (
            ("a", pair.label_a, pair.scores_a, pair.rewards_a),
            ("b", pair.label_b, pair.scores_b, pair.rewards_b),
        ):
            points = {name: getattr(estimate, side) for name, estimate in estimates.items()}
            check_same_evaluation(label, read_rewardbench2(scores_path), scores_path, points, rewards_path)
        for score in SCORE_COLUMNS:
            if score not in estimates:
                continue  # a subset the evaluation data does not have
            estimate = estimates[score]
            difference = estimate.difference
            records.append(
                {
                    "Comparison": pair.name,
                    "A": pair.label_a,
                    "B": pair.label_b,
                    "Score": score,
                    "A score": 100.0 * estimate.a,
                    "B score": 100.0 * estimate.b,
                    DIFFERENCE: 100.0 * difference.value,
                    f"{DIFFERENCE}{LOW}": 100.0 * difference.low,
                    f"{DIFFERENCE}{HIGH}": 100.0 * difference.high,
                    "Excludes 0": "yes" if difference.low > 0 or difference.high < 0 else "no",
                }
            )
    return pd.DataFrame(records, columns=list(COMPARISON_COLUMNS))
