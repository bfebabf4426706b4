"""Per-completion RewardBench 2 reward tables and their rewardbench2.json, as evaluation writes them."""

import json
from pathlib import Path

import numpy as np
import pandas as pd

from sarm.eval.rewardbench2 import score_rewardbench2

BEST_OF_4 = ("Factuality", "Precise IF", "Math", "Safety", "Focus")


def reward_table(prompts) -> pd.DataFrame:
    """prompts: (id, subset, rewards with the correct ones first, num_correct) per prompt."""
    rows = [
        {"id": prompt_id, "subset": subset, "completion_index": i, "is_correct": i < num_correct, "reward": r}
        for prompt_id, subset, rewards, num_correct in prompts
        for i, r in enumerate(rewards)
    ]
    return pd.DataFrame(rows)


def best_of_4(subset: str, outcomes, prefix: str = "") -> list:
    """One prompt per outcome: 1 = the correct completion has the highest reward, 0 = a wrong one has."""
    return [
        (f"{prefix}{subset}-{index}", subset, [1.0, 0.0, 0.0, 0.0] if right else [0.0, 1.0, 0.0, 0.0], 1)
        for index, right in enumerate(outcomes)
    ]


def random_prompts(rng: np.random.Generator, per_subset: int = 30, questions: int = 15) -> list:
    """Random rewards for every subset; Ties with `questions` questions, each with ref:N and tied:N."""
    prompts = [
        (f"{subset}-{index}", subset, list(rng.normal(size=4)), 1)
        for subset in BEST_OF_4
        for index in range(per_subset)
    ]
    for number in range(questions):
        prompts.append((f"ref:{number}", "Ties", list(rng.normal(size=3)), 1))
        prompts.append((f"tied:{number}", "Ties", list(rng.normal(size=5)), 3))
    return prompts


def write_evaluation(folder: Path, prompts) -> tuple[Path, Path]:
    """rewards.parquet and rewardbench2.json of `prompts` in `folder`; returns (scores, rewards) paths."""
    folder.mkdir(parents=True, exist_ok=True)
    table = reward_table(prompts)
    table.to_parquet(folder / "rewards.parquet", index=False)
    (folder / "rewardbench2.json").write_text(json.dumps(score_rewardbench2(table)))
    return folder / "rewardbench2.json", folder / "rewards.parquet"
