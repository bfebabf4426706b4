"""Length balancing: the chosen answer's length rank among its rejected ones is spread evenly."""

from __future__ import annotations

import bisect
import random


def rank_schedule(rng: random.Random, count: int, slots: int) -> list[int]:
    """`count` ranks spread evenly over 0..slots-1 in random order: how many rejected are shorter."""
    ranks = [i % slots for i in range(count)]
    rng.shuffle(ranks)
    return ranks


def pick_sides(
    rng: random.Random, below: list[str], equal: list[str], above: list[str], shorter: int, longer: int
) -> list[str]:
    """`shorter` from `below`, `longer` from `above`; equal-length, then the other side, fill a shortfall."""
    picked = rng.sample(below, min(shorter, len(below))) + rng.sample(above, min(longer, len(above)))
    rest = [s for s in equal + below[::-1] + above if s not in picked]
    picked += rest[: shorter + longer - len(picked)]
    if len(picked) < shorter + longer:
        raise ValueError("not enough distinct candidates to choose from")
    rng.shuffle(picked)
    return picked


def pick_by_length(
    rng: random.Random, target: str, candidates: list[str], shorter: int, longer: int, window: int = 12
) -> list[str]:
    """`shorter` candidates shorter than `target` and `longer` longer ones, among the nearest in length."""
    pool = sorted(set(candidates) - {target}, key=lambda s: (len(s), s))
    lengths = [len(s) for s in pool]
    low, high = bisect.bisect_left(lengths, len(target)), bisect.bisect_right(lengths, len(target))
    return pick_sides(
        rng, pool[max(0, low - window) : low], pool[low:high], pool[high : high + window], shorter, longer
    )


def with_room(
    rng: random.Random, options: list[str], candidates: list[str], shorter: int, longer: int
) -> str:
    """An option with at least `shorter` shorter and `longer` longer candidates, so the length rank fits."""
    lengths = sorted(len(c) for c in candidates)
    fitting = [
        o
        for o in options
        if bisect.bisect_left(lengths, len(o)) >= shorter
        and len(lengths) - bisect.bisect_right(lengths, len(o)) >= longer
    ]
    return rng.choice(fitting or options)
