"""Family `safety`: refusal vs compliance for harmful requests, help vs needless refusal for harmless ones."""

from __future__ import annotations

import itertools
import random
import re

from sarm.data.demo.definitions import definition_answer
from sarm.data.demo.items import Item
from sarm.data.demo.lengths import pick_by_length, rank_schedule, with_room
from sarm.data.demo.resources import Resources
from sarm.data.demo.sources import Synset


def addressed(request: str) -> str:
    """The user's request as the assistant would repeat it: "my car" -> "your car"."""
    swaps = {"my": "your", "mine": "yours", "me": "you", "I": "you", "myself": "yourself"}
    return re.sub(r"\b(my|mine|me|I|myself)\b", lambda m: swaps[m.group()], request)


def refusals(rng: random.Random, t: dict, split: str, limit: int = 120) -> list[str]:
    """Refusals of 1 to 3 sentences from one pool (right for harmful requests, needless for harmless ones)."""
    parts = [
        t["refusal_openers"][split],
        [*t["refusal_reasons"][split], ""],
        t["refusal_alternatives"][split],
    ]
    texts = sorted({" ".join(p for p in combo if p) for combo in itertools.product(*parts)})
    return rng.sample(texts, min(limit, len(texts)))


def compliances(rng: random.Random, t: dict, request: str, split: str) -> list[str]:
    texts = []
    steps = t["compliance_steps"][split]
    for opener in t["compliance_openers"][split]:
        for size in (1, 2, 3):
            for _ in range(6):
                texts.append(" ".join([opener.format(request=addressed(request)), *rng.sample(steps, size)]))
    return sorted(set(texts))


def helpful(rng: random.Random, t: dict, answer: str, split: str) -> str:
    opener = rng.choice(t["helpful_openers"][split])
    return f"{opener} {answer}" if opener else answer


def harmful(
    res: Resources, requests: list[str], framings: list[str], n_rejected: int, per_prompt: int, split: str
) -> list[Item]:
    """Safety (should refuse): a refusal vs compliance with a harmful request."""
    rng, t = res.rng, res.t
    prompts = [(r, f.format(request=r)) for r in requests for f in framings]
    ranks = rank_schedule(rng, len(prompts) * per_prompt, n_rejected + 1)
    items = []
    for index, (request, prompt) in enumerate(p for p in prompts for _ in range(per_prompt)):
        shorter, candidates = ranks[index], compliances(rng, t, request, split)
        refusal = with_room(rng, refusals(rng, t, split), candidates, shorter, n_rejected - shorter)
        rejected = pick_by_length(rng, refusal, candidates, shorter, n_rejected - shorter)
        items.append(Item("safety", prompt, [refusal], rejected, key=request, meta={"should": "refuse"}))
    return items


def benign(res: Resources, pairs: list[tuple[str, str, str]], n_rejected: int, split: str) -> list[Item]:
    """Safety (should comply): a helpful answer vs needless refusals of a harmless request."""
    rng = res.rng
    ranks = rank_schedule(rng, len(pairs), n_rejected + 1)
    items = []
    for (key, prompt, answer), shorter in zip(pairs, ranks, strict=True):
        answer = helpful(rng, res.t, answer, split)
        rejected = pick_by_length(rng, answer, refusals(rng, res.t, split), shorter, n_rejected - shorter)
        items.append(Item("safety", prompt, [answer], rejected, key=key, meta={"should": "comply"}))
    return items


def benign_definitions(res: Resources, words: list[Synset]) -> list[tuple[str, str, str]]:
    rng, t = res.rng, res.t
    return [
        (
            w.word,
            rng.choice(t["definition_prompts"]).format(word=w.word),
            definition_answer(rng.choice(t["definition_answers"]), w.word, w.gloss),
        )
        for w in words
    ]
