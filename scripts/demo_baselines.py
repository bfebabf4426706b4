#!/usr/bin/env python
"""Measure simple baselines on the bundled demo RewardBench 2 set and write baselines.csv / baselines.md.

    python scripts/demo_baselines.py --demo resources/demo

Scorers: length only (longer is better; shorter is better), a bag-of-words logistic regression trained on
the demo training pairs (feature = BoW(chosen response) - BoW(rejected response), no intercept), and chance
(exact 1/n for best-of-n; the Ties expectation under i.i.d. uniform rewards by Monte Carlo). All are scored
with the project's RewardBench 2 scoring (`sarm.eval.rewardbench2.score_rewardbench2`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression

from sarm.data.preferences import load_preference_pairs
from sarm.data.records import BenchmarkPrompt
from sarm.data.rewardbench2 import SUBSETS, load_rewardbench2
from sarm.eval.rewardbench2 import score_rewardbench2, ties_score

log = logging.getLogger("demo_baselines")

CHANCE_DRAWS = 2000
CHANCE_SEED = 0


def completion_table(prompts: list[BenchmarkPrompt], rewards: list[np.ndarray]) -> pd.DataFrame:
    """The per-completion reward table that score_rewardbench2 reads."""
    rows = [
        {
            "id": p.id,
            "subset": p.subset,
            "completion_index": i,
            "is_correct": i < p.num_correct,
            "reward": float(r),
        }
        for p, prompt_rewards in zip(prompts, rewards, strict=True)
        for i, r in enumerate(prompt_rewards)
    ]
    return pd.DataFrame(rows)


def score(prompts: list[BenchmarkPrompt], rewards: list[np.ndarray]) -> dict[str, float]:
    result = score_rewardbench2(completion_table(prompts, rewards))
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
        "Regenerate: `python scripts/demo_baselines.py --demo resources/demo` (also run by make_demo_data.py).\n"
    )
    return "# Demo RewardBench 2 baselines\n\n" + "\n".join([header, rule, *lines]) + notes


def _write(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)


def write_baselines(demo: Path) -> pd.DataFrame:
    table = baseline_table(demo)
    _write(demo / "baselines.csv", table.to_csv(lineterminator="\n"))
    _write(demo / "baselines.md", markdown(table))
    log.info("baselines:\n%s", table.to_string())
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--demo", type=Path, default=Path(__file__).resolve().parents[1] / "resources" / "demo"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    write_baselines(args.demo)
    return 0


if __name__ == "__main__":
    sys.exit(main())
