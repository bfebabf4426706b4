"""The spread over training seeds of Overall, for the Table 1 / 2 rows whose model is trained with several
seeds (`tables.seeds` > 1).

A row's score cells stay those of its first seed (reward_model.seed), with their bootstrap intervals over
prompts; the seed columns add the mean, sample standard deviation (n - 1), minimum and maximum of Overall
over every seed of the row's model, each seed once. They say how much a retrained model moves on the same
prompts and the same SAE, which the intervals over prompts do not. Reported rows and single-seed rows leave
them blank, and a table none of whose rows has further seeds has no seed columns at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

SEEDS = "Seeds"
SEED_MEAN = "Overall seed mean"
SEED_SD = "Overall seed sd"
SEED_MIN = "Overall seed min"
SEED_MAX = "Overall seed max"
SEED_COLUMNS = (SEEDS, SEED_MEAN, SEED_SD, SEED_MIN, SEED_MAX)
# The one column Markdown and LaTeX show in place of SEED_COLUMNS (min and max stay in the CSV).
SEED_SUMMARY = "Overall over seeds (mean ± sd)"


def seed_spread(overall_per_seed: Sequence[float]) -> dict[str, float]:
    """The seed columns from Overall of each seed of one model (the first seed included, once)."""
    if len(overall_per_seed) < 2:
        raise ValueError(f"a spread over seeds needs at least 2 seeds, got {len(overall_per_seed)}")
    values = np.asarray(overall_per_seed, dtype=float)
    return {
        SEEDS: len(values),
        SEED_MEAN: float(values.mean()),
        SEED_SD: float(values.std(ddof=1)),
        SEED_MIN: float(values.min()),
        SEED_MAX: float(values.max()),
    }


def empty_seed_columns() -> dict[str, float]:
    return dict.fromkeys(SEED_COLUMNS, math.nan)


def typed_seed_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Seeds as a nullable integer column (blank, not NaN, where a row has no spread)."""
    if SEEDS in frame.columns:
        frame[SEEDS] = frame[SEEDS].astype("Int64")
    return frame


def shown_in_place_of_seed_columns(columns: Sequence[str]) -> list[str]:
    """`columns` with SEED_COLUMNS replaced by SEED_SUMMARY where the first of them stood."""
    shown = []
    for column in columns:
        if column == SEED_COLUMNS[0]:
            shown.append(SEED_SUMMARY)
        elif column not in SEED_COLUMNS:
            shown.append(column)
    return shown


def seed_summary(row: pd.Series, decimals: int, latex: bool = False) -> str:
    """The cell "mean ± sd (n seeds)" of a row with a spread over seeds; empty for any other row."""
    seeds = row.get(SEEDS)
    if seeds is None or pd.isna(seeds):
        return ""
    mean, sd = f"{row[SEED_MEAN]:.{decimals}f}", f"{row[SEED_SD]:.{decimals}f}"
    spread = rf"${mean} \pm {sd}$" if latex else f"{mean} ± {sd}"
    return f"{spread} ({seeds} seeds)"
