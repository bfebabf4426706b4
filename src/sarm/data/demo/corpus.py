"""The SAE corpus: WordNet definitions and examples of common words as short documents, then fortunes."""

from __future__ import annotations

import re

from sarm.data.demo.items import capitalize
from sarm.data.demo.resources import Resources
from sarm.data.demo.sources import Synset

CORPUS_SENTENCES_PER_DOC = 8


def sentence(text: str) -> str:
    text = capitalize(text.strip())
    return text if text[-1:] in ".!?" else text + "."


def corpus_sentence(s: Synset) -> str:
    word = s.word
    if s.pos == "noun" and word[0].isupper():
        return f"{word} is {s.gloss}."
    if s.pos == "noun" and re.match(r"(a|an|the|any|one|someone|something)\b", s.gloss):
        return f"{'An' if word[0].lower() in 'aeiou' else 'A'} {word} is {s.gloss}."
    if s.pos == "noun":
        return f'The word "{word}" refers to {s.gloss}.'
    if s.pos == "verb":
        return f"To {word} is to {s.gloss}."
    return f'The {"adjective" if s.pos == "adj" else "adverb"} "{word}" means {s.gloss}.'


def corpus_documents(res: Resources, excluded_words: set[str], cookies: list[str]) -> list[str]:
    """WordNet definitions and usage examples of words seen in running text as short documents; then fortunes.

    "Seen in running text" = a lemma with a tagged sense in the SemCor counts (keeps ~41k common synsets).
    Synsets of the test-set prompt words are left out so the SAE corpus never states their definitions.
    """
    docs, current = [], []
    for s in res.synsets:
        common = any(res.tagged.get(lemma, 0) >= 1 for lemma in s.lemmas)
        if not common or excluded_words.intersection(s.lemmas) or len(s.gloss.split()) < 3:
            continue
        current.append(corpus_sentence(s))
        current.extend(sentence(e) for e in s.examples if len(e.split()) >= 6)
        if len(current) >= CORPUS_SENTENCES_PER_DOC:
            docs.append(" ".join(current))
            current = []
    if current:
        docs.append(" ".join(current))
    return docs + cookies
