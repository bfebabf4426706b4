"""One prompt of a preference family with its right and wrong answers."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Item:
    """One prompt of a family with its right answers and wrong answers (training pairs use one of each)."""

    family: str
    prompt: str
    chosen: list[str]
    rejected: list[str]
    key: str  # what makes the prompt distinct (word, operands, request), for the disjointness check
    meta: dict = field(default_factory=dict)


def capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]
