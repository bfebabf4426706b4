"""Family `focus`: the answer to the question asked vs good answers to other questions."""

from __future__ import annotations

from sarm.data.demo.arithmetic import KINDS, ProblemSource
from sarm.data.demo.definitions import definition_answer
from sarm.data.demo.items import Item
from sarm.data.demo.lengths import pick_by_length, rank_schedule
from sarm.data.demo.resources import Resources
from sarm.data.demo.sources import Synset


def focus(
    res: Resources, words: list[Synset], problems: ProblemSource, n_math: int, n_rejected: int, split: str
) -> list[Item]:
    """Focus: an answer to the question asked vs good answers to other questions (other word, other sum)."""
    rng, t = res.rng, res.t
    ranks = rank_schedule(rng, len(words) + n_math, n_rejected + 1)
    others = res.distractors[split]
    items = []
    for word, shorter in zip(words, ranks, strict=False):
        frame = rng.choice(t["definition_answers"])
        answer = definition_answer(frame, word.word, word.gloss)
        off_topic = [definition_answer(frame, s.word, s.gloss) for s in rng.sample(others, 200)]
        rejected = pick_by_length(rng, answer, off_topic, shorter, n_rejected - shorter)
        prompt = rng.choice(t["definition_prompts"]).format(word=word.word)
        items.append(Item("focus", prompt, [answer], rejected, key=word.word))
    for shorter in ranks[len(words) :]:
        problem = problems.draw(rng.choice(KINDS))
        answer = problems.answer(problem)
        off_topic = [problems.answer(problems.draw(problem.kind, reserve=False)) for _ in range(12)]
        rejected = pick_by_length(rng, answer, off_topic, shorter, n_rejected - shorter)
        items.append(
            Item(
                "focus",
                problems.prompt(problem),
                [answer],
                rejected,
                key=f"{problem.kind}:{problem.a}:{problem.b}",
            )
        )
    return items
