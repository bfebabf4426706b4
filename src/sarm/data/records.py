"""Plain records shared by the loaders and the models; every text is already a string or chat messages."""

from __future__ import annotations

from dataclasses import dataclass

Message = dict[str, str]  # {"role": "user" | "assistant" | "system", "content": str}


@dataclass(frozen=True)
class PreferencePair:
    """One training comparison: the same conversation ending in a chosen and a rejected assistant turn."""

    chosen: list[Message]
    rejected: list[Message]
    source: str = ""


@dataclass(frozen=True)
class BenchmarkPrompt:
    """One RewardBench 2 row: the first `num_correct` completions are the correct ones."""

    id: str
    subset: str
    prompt: str
    completions: list[str]
    num_correct: int

    def conversation(self, index: int) -> list[Message]:
        return [
            {"role": "user", "content": self.prompt},
            {"role": "assistant", "content": self.completions[index]},
        ]


@dataclass(frozen=True)
class RMBenchItem:
    """One RM-Bench row: three chosen and three rejected variants of an answer, in a domain."""

    id: str
    domain: str
    prompt: str
    chosen: list[str]
    rejected: list[str]
    subset: str = ""  # the row's source in the authors' per-domain files (e.g. alpacaeval), kept as metadata
