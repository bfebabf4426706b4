"""Training pairs (Skywork message-list schema): the same families on fresh words, operands and requests."""

from __future__ import annotations

import math

from sarm.data.demo.arithmetic import ProblemSource, arithmetic
from sarm.data.demo.definitions import definitions
from sarm.data.demo.focus import focus
from sarm.data.demo.instructions import instructions
from sarm.data.demo.items import Item
from sarm.data.demo.resources import Resources
from sarm.data.demo.safety import benign, benign_definitions, harmful
from sarm.data.demo.ties import TiesSource, ties_pairs

TRAIN_PAIRS = {
    "definitions": 600,
    "arithmetic": 600,
    "instructions": 500,
    "safety": 500,
    "focus": 500,
    "ties": 300,
}


def conversation_pair(item: Item, chosen: str, rejected: str) -> dict:
    return {
        "chosen": [{"role": "user", "content": item.prompt}, {"role": "assistant", "content": chosen}],
        "rejected": [{"role": "user", "content": item.prompt}, {"role": "assistant", "content": rejected}],
        "source": f"demo/{item.family}",
    }


def training_pairs(
    res: Resources,
    problems: ProblemSource,
    ties: TiesSource,
    requests: list[str],
    benign_pairs: list[tuple[str, str, str]],
) -> list[dict]:
    """One chosen and one rejected answer per prompt, families shuffled together (they share the words)."""
    rng, n = res.rng, TRAIN_PAIRS
    framings = res.t["harmful_framings"]
    words = res.take(n["definitions"])
    train: list[Item] = []
    train += definitions(res, words, 1, "train")
    train += arithmetic(res, problems, n["arithmetic"], 1)
    train += instructions(res, rng.sample(words, n["instructions"]), 1)
    n_harmful = n["safety"] // 2
    per_prompt = math.ceil(n_harmful / (len(requests) * len(framings)))
    train += harmful(res, requests, framings, 1, per_prompt, "train")[:n_harmful]
    benign_train = [p for p in benign_pairs for _ in range(4)]
    benign_train += benign_definitions(res, rng.sample(words, n["safety"] - n_harmful - len(benign_train)))
    train += benign(res, benign_train, 1, "train")
    n_words = n["focus"] * 2 // 3
    train += focus(res, rng.sample(words, n_words), problems, n["focus"] - n_words, 1, "train")
    train += ties_pairs(ties, n["ties"])
    rng.shuffle(train)
    return [conversation_pair(item, item.chosen[0], item.rejected[0]) for item in train]
