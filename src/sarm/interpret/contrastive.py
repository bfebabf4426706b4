"""An explainer without a language model: the words that set a feature's top contexts apart from contexts on
which it is silent.

Statistic: the signed log-likelihood ratio G² of a 2x2 table (Dunning 1993, the likelihood-ratio form of the
chi-square test; "keyness" in corpus linguistics). For a word w, the table counts contexts, not tokens:
top contexts with / without w against silent background contexts with / without w, so a word repeated
within one context counts once. G² is large when the share of top contexts holding w departs from the
background's share; only words over-represented in the top contexts are kept. A word as frequent in the
background as among the top contexts ("answer" in every context) scores near 0 whatever its count,
which is what a frequency ranking of the top contexts alone would get wrong. Stop words (`words.STOP_WORDS`)
are not counted: the lexical detection judge ignores them too.

Chat-template markers (`<|im_end|>`) are words too, and often the most distinctive ones of a feature that
fires at the end of a turn: they say where it fires, not what it encodes. With `markers="drop"` the explainer removes
them, and the role names written right after them, from every context before counting
(`words.without_template_text`), so its explanations are content words. The lexical judge still reads the
markers in the contexts, as it does for every explainer.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from sarm.interpret.words import STOP_WORDS, without_template_text, words

NO_DISTINCTIVE_WORDS = "no_distinctive_words"
NO_SILENT_CONTEXTS = "no_silent_contexts"  # the feature fires on every background context
# The chi-square critical value for one degree of freedom at p = 0.001.
G2_AT_P001 = 10.828
MARKER_CHOICES = ("keep", "drop")  # chat-template markers in the explainer's vocabulary, or not


@dataclass(frozen=True)
class WordScore:
    word: str
    g2: float
    in_top: int  # top contexts holding the word
    in_background: int  # silent background contexts holding the word


@dataclass(frozen=True)
class FeatureExplanation:
    explanation: str | None
    score: int | None  # the LLM rubric's 1..5; None for an explainer without one
    status: str
    raw: str


def _context_words(texts: list[str]) -> Counter:
    """In how many of `texts` each non-stop word occurs."""
    counts: Counter = Counter()
    for text in texts:
        counts.update({w for w in words(text) if w not in STOP_WORDS})
    return counts


def _xlogx_over(observed: float, expected: float) -> float:
    return observed * math.log(observed / expected) if observed > 0 else 0.0


def signed_g2(in_top: int, n_top: int, in_background: int, n_background: int) -> float:
    """G² of the 2x2 table, positive when the word is more frequent in the top contexts, else negative."""
    total = n_top + n_background
    with_word = in_top + in_background
    cells = [
        (in_top, n_top * with_word / total),
        (n_top - in_top, n_top * (total - with_word) / total),
        (in_background, n_background * with_word / total),
        (n_background - in_background, n_background * (total - with_word) / total),
    ]
    g2 = 2 * sum(_xlogx_over(observed, expected) for observed, expected in cells if expected > 0)
    return g2 if in_top * n_background > in_background * n_top else -g2


def distinctive_words(top: list[str], background: list[str], min_contexts: int = 2) -> list[WordScore]:
    """Words of the top contexts in at least `min_contexts` of them, by descending signed G²."""
    if not top or not background:
        raise ValueError("distinctive words need at least one top and one background context")
    top_counts, background_counts = _context_words(top), _context_words(background)
    scores = []
    for word, count in top_counts.items():
        if count < min_contexts:
            continue
        g2 = signed_g2(count, len(top), background_counts[word], len(background))
        if g2 > 0:
            scores.append(WordScore(word, g2, count, background_counts[word]))
    return sorted(scores, key=lambda s: (-s.g2, -s.in_top, s.word))


class ContrastiveExplainer:
    """Explains a feature by its `max_terms` most distinctive words (G² at least `min_g2`); `markers`: keep
    chat-template markers among the words, or drop them (see the module docstring)."""

    name = "contrastive"
    needs_background = True

    def __init__(
        self, max_terms: int = 5, min_contexts: int = 2, min_g2: float = G2_AT_P001, markers: str = "keep"
    ):
        if max_terms < 1 or min_contexts < 1 or min_g2 < 0:
            raise ValueError(
                "the contrastive explainer needs `interpret.explainer.max_terms` >= 1, `min_contexts` >= 1 and "
                "`min_g2` >= 0; "
                f"got {max_terms}, {min_contexts}, {min_g2}"
            )
        if markers not in MARKER_CHOICES:
            raise ValueError(
                f"config key `interpret.explainer.markers` must be one of {', '.join(MARKER_CHOICES)}, "
                f"got {markers!r}"
            )
        self.max_terms, self.min_contexts, self.min_g2 = max_terms, min_contexts, min_g2
        self.markers = markers

    def _vocabulary_text(self, text: str) -> str:
        return without_template_text(text) if self.markers == "drop" else text

    def explain_feature(self, shown: list[tuple[float, str]], silent: list[str]) -> FeatureExplanation:
        """`shown`: (activation, context) of the top contexts; `silent`: background contexts where it is 0."""
        if not silent:
            return FeatureExplanation(None, None, NO_SILENT_CONTEXTS, "")
        top = [self._vocabulary_text(text) for _, text in shown]
        ranked = distinctive_words(top, [self._vocabulary_text(text) for text in silent], self.min_contexts)
        kept = [s for s in ranked if s.g2 >= self.min_g2][: self.max_terms]
        raw = "\n".join(
            f"{s.word}: G2 {s.g2:.1f}, in {s.in_top}/{len(shown)} top and "
            f"{s.in_background}/{len(silent)} silent contexts"
            for s in ranked[: max(self.max_terms, 10)]
        )
        if not kept:
            return FeatureExplanation(None, None, NO_DISTINCTIVE_WORDS, raw)
        return FeatureExplanation(", ".join(s.word for s in kept), None, "ok", raw)
