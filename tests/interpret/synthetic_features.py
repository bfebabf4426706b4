"""Synthetic feature contexts with a known answer: feature 0 fires on contexts holding a planted word, the
other features fire on random contexts. Every context holds the frequent word "answer" and words drawn with
Zipf frequencies, so a statistic that ignores the background picks "answer" or a frequent word."""

import random

import pandas as pd

PLANTED_FEATURE, PLANTED_WORD = 0, "zebra"
VOCABULARY = [
    f"{stem}{suffix}" for stem in ("lor", "mip", "sak", "tun", "vel") for suffix in "abcdefghijklmnopqrst"
]


def random_context(rng: random.Random, extra: str | None = None) -> str:
    chosen = rng.choices(VOCABULARY, weights=[1 / (i + 1) for i in range(len(VOCABULARY))], k=8)
    if extra is not None:
        chosen.insert(rng.randrange(len(chosen) + 1), extra)
    return "The answer is " + " ".join(chosen) + "."


def synthetic_tables(
    random_features: int = 20, per_feature: int = 60, background_size: int = 2000, planted_share: float = 0.8
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(contexts, background) in the format of `contexts.py`.

    Feature 0's contexts hold the planted word in `planted_share` of them (not all, so that "answer", in
    every context, is more frequent among them); the background never holds it. Features 1.. fire on
    random contexts, and on a random 5% of the background.
    """
    rng = random.Random(0)
    rows = []
    for rank in range(per_feature):
        planted = PLANTED_WORD if rng.random() < planted_share else None
        rows.append((PLANTED_FEATURE, rank, 10.0 - rank / per_feature, random_context(rng, planted), "s"))
    for feature in range(1, random_features + 1):
        for rank in range(per_feature):
            rows.append((feature, rank, 5.0 - rank / per_feature, random_context(rng), "s"))
    contexts = pd.DataFrame(rows, columns=["feature", "rank", "activation", "context", "source_id"])
    background = pd.DataFrame(
        {
            "context": [random_context(rng) for _ in range(background_size)],
            "source_id": ["b"] * background_size,
            "active_features": [
                [f for f in range(1, random_features + 1) if rng.random() < 0.05]
                for _ in range(background_size)
            ],
        }
    )
    return contexts, background
