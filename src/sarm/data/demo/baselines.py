"""Simple baselines on the demo RewardBench 2 set (baselines.csv / baselines.md), scored like any model.

Scorers: length only (longer is better; shorter is better), a bag-of-words logistic regression trained on
the demo training pairs (feature = BoW(chosen response) - BoW(rejected response), no intercept), and chance
(exact 1/n for best-of-n; the Ties expectation under i.i.d. uniform rewards by Monte Carlo).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression

from sarm.data.preferences import load_preference_pairs
from sarm.data.records import BenchmarkPrompt
from sarm.data.rewardbench2 import SUBSETS, completion_table, load_rewardbench2
from sarm.eval.rewardbench2 import score_rewardbench2, ties_score
from sarm.runtime import write_text_atomic

log = logging.getLogger(__name__)

CHANCE_DRAWS = 2000
CHANCE_SEED = 0


def score(prompts: list[BenchmarkPrompt], rewards: list[np.ndarray]) -> dict[str, float]:
    """RewardBench 2 scores per subset and overall, from one reward array per prompt."""
    table, _ = completion_table(prompts)
    table["reward"] = np.concatenate([np.asarray(r, dtype=float) for r in rewards])
    result = score_rewardbench2(table)
    return {**{s: result["subsets"][s] for s in SUBSETS}, "Overall": result["overall"]}


def length_rewards(prompts: list[BenchmarkPrompt], sign: float) -> list[np.ndarray]:
    return [sign * np.array([len(c) for c in p.completions], dtype=float) for p in prompts]


def bow_rewards(train_path: Path, prompts: list[BenchmarkPrompt]) -> list[np.ndarray]:
    """Response-only bag of words; a linear reward fitted with the Bradley-Terry (logistic) loss."""
    pairs = load_preference_pairs(str(train_path))
    chosen = [p.chosen[-1]["content"] for p in pairs]
    rejected = [p.rejected[-1]["content"] for p in pairs]
    vectorizer = CountVectorizer(min_df=2).fit(chosen + rejected)
    difference = vectorizer.transform(chosen) - vectorizer.transform(rejected)
    # Both orientations of every pair, so the classes are balanced and no intercept is needed.
    features = np.vstack([difference.toarray(), -difference.toarray()])
    labels = np.concatenate([np.ones(len(pairs)), np.zeros(len(pairs))])
    model = LogisticRegression(fit_intercept=False, max_iter=5000).fit(features, labels)
    weights = model.coef_[0]
    return [vectorizer.transform(p.completions).toarray() @ weights for p in prompts]


def chance(prompts: list[BenchmarkPrompt]) -> dict[str, float]:
    """Expected score under random rewards: exact for best-of-n, Monte Carlo for Ties."""
    rng = np.random.default_rng(CHANCE_SEED)
    ties = [p for p in prompts if p.subset == "Ties"]
    ties_scores = [
        ties_score([(p.id, rng.random(len(p.completions)), p.num_correct) for p in ties])
        for _ in range(CHANCE_DRAWS)
    ]
    result = {s: float(np.mean([1 / len(p.completions) for p in prompts if p.subset == s])) for s in SUBSETS}
    result["Ties"] = float(np.mean(ties_scores))
    result["Overall"] = float(np.mean([result[s] for s in SUBSETS]))
    return result


def baseline_table(demo: Path) -> pd.DataFrame:
    prompts = load_rewardbench2(str(demo / "rewardbench2.jsonl"))
    rows = {
        "length (longer is better)": score(prompts, length_rewards(prompts, +1.0)),
        "length (shorter is better)": score(prompts, length_rewards(prompts, -1.0)),
        "bag-of-words logistic regression": score(
            prompts, bow_rewards(demo / "preference_train.jsonl", prompts)
        ),
        "chance": chance(prompts),
    }
    table = pd.DataFrame.from_dict(rows, orient="index", columns=[*SUBSETS, "Overall"])
    table.index.name = "baseline"
    return table.round(4)


def markdown(table: pd.DataFrame) -> str:
    header = "| baseline | " + " | ".join(table.columns) + " |"
    rule = "|---|" + "---:|" * len(table.columns)
    lines = [
        f"| {name} | " + " | ".join(f"{100 * v:.1f}" for v in row) + " |" for name, row in table.iterrows()
    ]
    notes = (
        "\n\nRewardBench 2 scoring (best-of-4 with 1/#ties at the max; Ties formula), x100, on the demo "
        "`rewardbench2.jsonl`. Length = characters of the response. Bag of words: response text only, "
        "trained on `preference_train.jsonl`. Chance: 1/#completions; Ties by Monte Carlo "
        f"({CHANCE_DRAWS} draws of uniform rewards, seed {CHANCE_SEED}).\n"
        "Regenerate: `python -m sarm.data.demo --out resources/demo` (after the demo data; "
        "`--baselines-only` for these alone).\n"
    )
    return "# Demo RewardBench 2 baselines\n\n" + "\n".join([header, rule, *lines]) + notes


def write_baselines(demo: Path) -> pd.DataFrame:
    """Measure the baselines on the demo files in `demo` and write baselines.csv / baselines.md there."""
    table = baseline_table(demo)
    write_text_atomic(table.to_csv(lineterminator="\n"), demo / "baselines.csv")
    write_text_atomic(markdown(table), demo / "baselines.md")
    log.info("baselines:\n%s", table.to_string())
    return table
