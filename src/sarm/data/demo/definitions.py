"""Family `definitions` (Factuality): a word's own gloss vs glosses of other words."""

from __future__ import annotations

from sarm.data.demo.items import Item, capitalize
from sarm.data.demo.lengths import rank_schedule
from sarm.data.demo.resources import Resources
from sarm.data.demo.sources import Synset


def definition_answer(template: str, word: str, gloss: str) -> str:
    return template.format(word=word, Word=capitalize(word), gloss=gloss)


def definitions(res: Resources, words: list[Synset], n_rejected: int, split: str) -> list[Item]:
    """Factuality: the right WordNet gloss of a word vs glosses of other words, in the same sentence frame."""
    rng, t = res.rng, res.t
    items = []
    for word, shorter in zip(words, rank_schedule(rng, len(words), n_rejected + 1), strict=True):
        prompt = rng.choice(t["definition_prompts"]).format(word=word.word)
        frame = rng.choice(t["definition_answers"])
        wrong = res.wrong_glosses(word, shorter, n_rejected - shorter, split)
        items.append(
            Item(
                "definitions",
                prompt,
                [definition_answer(frame, word.word, word.gloss)],
                [definition_answer(frame, word.word, g) for g in wrong],
                key=word.word,
            )
        )
    return items
