"""Family `instructions` (Precise IF): a response keeping a verifiable constraint vs ones breaking it."""

from __future__ import annotations

import random
import re

from sarm.data.demo.items import Item
from sarm.data.demo.lengths import pick_by_length, rank_schedule
from sarm.data.demo.resources import Resources
from sarm.data.demo.sources import Synset

CONSTRAINTS = ("lowercase", "uppercase", "no_commas", "end_phrase", "start_word", "double_quotes", "keyword")
INTROS = (
    "In short",
    "Put simply",
    "Basically",
    "Simply put",
    "In brief",
    "Well",
    "To put it simply",
    "In plain words",
)
WRAPPERS = (("'", "'"), ("(", ")"), ("[", "]"), ("*", "*"), ("", '"'), ('"', ""))


def satisfies(constraint: str, text: str, args: dict) -> bool:
    """Whether a response keeps the constraint (the check a verifier would run)."""
    if constraint == "lowercase":
        return text == text.lower()
    if constraint == "uppercase":
        return text == text.upper()
    if constraint == "no_commas":
        return "," not in text
    if constraint == "end_phrase":
        return text.endswith(args["phrase"])
    if constraint == "start_word":
        return text.split()[0].strip(",.") == args["opener"]
    if constraint == "double_quotes":
        return text.startswith('"') and text.endswith('"') and len(text) > 1
    if constraint == "keyword":
        return re.search(rf"\b{re.escape(args['keyword'])}\b", text) is not None
    raise ValueError(constraint)


def constrained_answers(
    rng: random.Random, t: dict, constraint: str, word: Synset
) -> tuple[str, list[str], dict]:
    """(response keeping the constraint, responses breaking it, constraint arguments) for one word."""
    base = f"The word '{word.word}' means {word.gloss}."
    gloss = word.gloss.replace(",", ";")
    if constraint == "lowercase":
        return base.lower(), [base, base.upper(), base.title()], {}
    if constraint == "uppercase":
        return base.upper(), [base, base.lower(), base.title()], {}
    if constraint == "no_commas":
        intros = rng.sample(INTROS, len(INTROS))
        keep = f"{intros[0]} the word '{word.word}' means {gloss}."
        return keep, [f"{i}, the word '{word.word}' means {gloss}." for i in intros[1:]], {}
    if constraint == "end_phrase":
        phrases = rng.sample(t["closing_phrases"], len(t["closing_phrases"]))
        return f"{base} {phrases[0]}", [f"{base} {p}" for p in phrases[1:]], {"phrase": phrases[0]}
    if constraint == "start_word":
        openers = rng.sample(t["openers"], len(t["openers"]))
        rest = base[0].lower() + base[1:]
        return f"{openers[0]}, {rest}", [f"{o}, {rest}" for o in openers[1:]], {"opener": openers[0]}
    if constraint == "double_quotes":
        return f'"{base}"', [f"{left}{base}{right}" for left, right in WRAPPERS], {}
    if constraint == "keyword":
        absent = [k for k in t["keywords"] if not re.search(rf"\b{k}\b", base)]
        keyword, *others = rng.sample(absent, 4)
        frame = rng.choice(t["keyword_sentences"])
        keep = f"{base} {frame.format(keyword=keyword)}"
        return keep, [f"{base} {frame.format(keyword=k)}" for k in others], {"keyword": keyword}
    raise ValueError(constraint)


def instructions(res: Resources, words: list[Synset], n_rejected: int) -> list[Item]:
    """Precise IF: a response that keeps a verifiable constraint vs ones that break it, same content."""
    rng, t = res.rng, res.t
    items = []
    kinds = [CONSTRAINTS[i % len(CONSTRAINTS)] for i in range(len(words))]
    rng.shuffle(kinds)
    for word, constraint, shorter in zip(
        words, kinds, rank_schedule(rng, len(words), n_rejected + 1), strict=True
    ):
        keep, broken, args = constrained_answers(rng, t, constraint, word)
        rejected = pick_by_length(rng, keep, broken, shorter, n_rejected - shorter)
        if not satisfies(constraint, keep, args) or any(satisfies(constraint, r, args) for r in rejected):
            raise AssertionError(f"constraint {constraint} mislabelled for {word.word!r}")
        task = rng.choice(t["instruction_tasks"]).format(word=word.word)
        prompt = f"{task} {t['constraints'][constraint].format(**args)}"
        meta = {"constraint": constraint, **args}
        items.append(Item("instructions", prompt, [keep], rejected, key=word.word, meta=meta))
    return items
