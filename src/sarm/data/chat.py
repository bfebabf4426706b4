"""Chat messages -> the exact text and token ids a backbone sees, through the tokenizer's own chat template."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sarm.data.records import Message

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

DEFAULT_MAX_LENGTH = 4096
# Llama-3 chat templates write "Today Date: <date_string>" into the system prompt and, when the caller passes
# no date, fill it with strftime_now(...): the tokens would then change from day to day, between training
# and evaluation. Every conversation is formatted with this fixed date instead (config key
# `reward_model.date_string`; "26 Jul 2024" is the Llama-3.1 template's own fallback). Templates without a
# date ignore it.
DEFAULT_DATE_STRING = "26 Jul 2024"


class ChatTemplateError(ValueError):
    """The tokenizer cannot format a conversation; the message says which tokenizer and why."""


def format_conversation(
    tokenizer: PreTrainedTokenizerBase, messages: list[Message], date_string: str = DEFAULT_DATE_STRING
) -> str:
    """The conversation as text, formatted by the tokenizer's chat template (no generation prompt), with
    `date_string` as the template's date (never today's)."""
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ChatTemplateError(
            f"tokenizer {name!r} has no chat template; use an instruction-tuned backbone or set "
            "tokenizer.chat_template before scoring conversations"
        )
    for position, message in enumerate(messages):
        if not isinstance(message, dict) or not all(
            isinstance(message.get(k), str) for k in ("role", "content")
        ):
            raise ChatTemplateError(f"message {position} needs string `role` and `content`, got {message!r}")
    return tokenizer.apply_chat_template(messages, tokenize=False, date_string=date_string)


def tokenize_conversations(
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[list[Message]],
    max_length: int = DEFAULT_MAX_LENGTH,
    date_string: str = DEFAULT_DATE_STRING,
) -> list[list[int]]:
    """Token ids per conversation, left-truncated to `max_length` so the final (reward) token is kept."""
    for i, messages in enumerate(conversations):
        if not messages:
            raise ValueError(f"conversation {i} has no messages")
    # ChatML templates (SmolLM2, Qwen) end each turn with "<|im_end|>\n": without the strip, every reward
    # would be read at the same newline token instead of the end-of-turn token (Llama-3's <|eot_id|>).
    texts = [format_conversation(tokenizer, messages, date_string).rstrip() for messages in conversations]
    # The template already wrote BOS and the turn markers; adding special tokens again would double BOS.
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [ids[-max_length:] for ids in encoded]


def last_turn_starts(
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[list[Message]],
    max_length: int = DEFAULT_MAX_LENGTH,
    date_string: str = DEFAULT_DATE_STRING,
) -> list[int]:
    """Index, in `tokenize_conversations`' ids, of the first token of each conversation's last message
    (after its header, e.g. Llama-3's `<|start_header_id|>assistant<|end_header_id|>\n\n`), so that
    ids[start:] is the last assistant turn up to its end-of-turn token (the authors' `assistant_masks`)."""
    full = tokenize_conversations(tokenizer, conversations, max_length, date_string)
    starts = []
    for ids, messages in zip(full, conversations, strict=True):
        prefix = tokenizer.apply_chat_template(
            messages[:-1], tokenize=False, add_generation_prompt=True, date_string=date_string
        )
        before = len(tokenizer(prefix, add_special_tokens=False)["input_ids"])
        total = len(
            tokenizer(
                format_conversation(tokenizer, messages, date_string).rstrip(), add_special_tokens=False
            )["input_ids"]
        )
        starts.append(min(max(0, before - (total - len(ids))), len(ids) - 1))
    return starts
