"""Chat messages -> the exact text and token ids a backbone sees, through the tokenizer's own chat template."""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from sarm.data.records import Message

DEFAULT_MAX_LENGTH = 4096


class ChatTemplateError(ValueError):
    """The tokenizer cannot format a conversation; the message says which tokenizer and why."""


def format_conversation(tokenizer: PreTrainedTokenizerBase, messages: list[Message]) -> str:
    """The conversation as text, formatted by the tokenizer's chat template (no generation prompt)."""
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
    return tokenizer.apply_chat_template(messages, tokenize=False)


def tokenize_conversations(
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[list[Message]],
    max_length: int = DEFAULT_MAX_LENGTH,
) -> list[list[int]]:
    """Token ids per conversation, left-truncated to `max_length` so the final (reward) token is kept."""
    for i, messages in enumerate(conversations):
        if not messages:
            raise ValueError(f"conversation {i} has no messages")
    # ChatML templates (SmolLM2, Qwen) end each turn with "<|im_end|>\n": without the strip, every reward
    # would be read at the same newline token instead of the end-of-turn token (Llama-3's <|eot_id|>).
    texts = [format_conversation(tokenizer, messages).rstrip() for messages in conversations]
    # The template already wrote BOS and the turn markers; adding special tokens again would double BOS.
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [ids[-max_length:] for ids in encoded]
