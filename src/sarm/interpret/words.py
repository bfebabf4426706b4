"""Words of a context, as the contrastive explainer counts them and the lexical judge matches them.

A word is a run of letters or digits, lowercased, with apostrophes dropped inside it ("Don't" -> "dont");
other punctuation separates words. A chat-template marker such as `<|im_end|>` is kept whole, as one word,
so that a feature firing at the end of a turn is described by that marker rather than by "im" and "end".
A marker is any special token written as `<|name|>`, as in the chat templates of the presets' backbones:
ChatML's (SmolLM2: `<|im_start|>`, `<|im_end|>`) and Llama-3's (`<|begin_of_text|>`, `<|start_header_id|>`,
`<|end_header_id|>`, `<|eot_id|>`). `without_template_text` removes them, with the role name a template
writes directly after a marker (`<|im_start|>assistant`), for an explainer that should name content only.
"""

from __future__ import annotations

import re

_APOSTROPHES = re.compile(r"(?<=\w)['’](?=\w)")
_MARKER = r"<\|[^|<>\s]+\|>"
_WORD = re.compile(rf"{_MARKER}|[^\W_]+")
# Templates put the role right after a marker and content only after a newline, so a word glued to a
# marker's end is template text; a role word elsewhere ("As an AI assistant") is content and stays.
_TEMPLATE_TEXT = re.compile(rf"{_MARKER}[^\W_]*")

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


def without_template_text(text: str) -> str:
    """`text` without chat-template markers and the role names written right after them."""
    return _TEMPLATE_TEXT.sub(" ", text)


def content_words(text: str) -> set[str]:
    """The distinct words of `text` that are not stop words."""
    return {word for word in words(text) if word not in STOP_WORDS}
