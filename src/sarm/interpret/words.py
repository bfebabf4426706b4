"""Words of a context, as the contrastive explainer counts them and the lexical judge matches them.

A word is a run of letters or digits, lowercased, with apostrophes dropped inside it ("Don't" -> "dont");
other punctuation separates words. A chat-template marker such as `<|im_end|>` is kept whole, as one word,
so that a feature firing at the end of a turn is described by that marker rather than by "im" and "end".
"""

from __future__ import annotations

import re

_APOSTROPHES = re.compile(r"(?<=\w)['’](?=\w)")
_WORD = re.compile(r"<\|[^|<>\s]+\|>|[^\W_]+")

# Function words that carry no topic. Negations (not, no, never, cannot) are kept out of this list: a
# feature that fires on refusals is described by them.
STOP_WORDS = frozenset(
    """
    a an the and or but if then than so as of at by for from in into on onto to with without about over under
    between through during before after above below up down out off again further once here there when where
    why how all any both each few more most other some such only own same too very s t d ll m re ve
    i me my mine myself we us our ours ourselves you your yours yourself yourselves he him his himself she
    her hers herself it its itself they them their theirs themselves what which who whom whose this that
    these those am is are was were be been being have has had having do does did doing will would shall
    should can could may might must just also
    """.split()
)


def words(text: str) -> list[str]:
    """The words of `text` in order (see the module docstring), stop words included."""
    return _WORD.findall(_APOSTROPHES.sub("", text.lower()))


def content_words(text: str) -> set[str]:
    """The distinct words of `text` that are not stop words."""
    return {word for word in words(text) if word not in STOP_WORDS}
