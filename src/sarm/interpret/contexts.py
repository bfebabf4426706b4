"""Contexts that activate each SARM feature: run the model over RM-Bench and keep, per feature, the top-N
sentence-end positions (streaming, bounded memory), plus a random background sample of positions.

A recorded position is a token inside a message whose decoded text ends a sentence (. ! ? or newline),
the last token of each message, and the final token of the sequence (where the reward is read). Its
context is the text of the sentence that ends there.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch
from tqdm.auto import tqdm

from sarm.data.chat import DEFAULT_DATE_STRING, format_conversation
from sarm.data.records import Message, RMBenchItem
from sarm.packing import pack_shared_prefixes, packed_batches, packed_inputs
from sarm.runtime import write_parquet_atomic

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

SENTENCE_END_CHARS = (".", "!", "?", "\n")
CONTEXT_COLUMNS = ["feature", "rank", "activation", "context", "source_id"]
BACKGROUND_COLUMNS = ["context", "source_id", "active_features"]

# (input_ids, packed attention mask, position_ids) -> (B, T, M)
TokenLatents = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ContextConfig:
    top_n: int = 50  # per feature; the explainer sees the first `top_contexts`, detection the rest
    batch_tokens: int = 8192  # padded tokens per forward batch
    max_length: int = 4096  # longer conversations are cut from the left, as when scoring
    max_context_tokens: int = 64  # a context longer than this keeps its last tokens
    background_size: int = 2000  # random positions kept as non-activating examples for detection
    seed: int = 0
    date_string: str = DEFAULT_DATE_STRING  # the chat template's date, as when training and scoring

    @classmethod
    def from_config(cls, interpret: dict, reward_model: dict) -> ContextConfig:
        """From the validated `interpret` and `reward_model` config sections."""
        return cls(
            top_n=interpret["top_contexts"] + interpret["detection_contexts"],
            batch_tokens=reward_model["batch_tokens"],
            max_length=reward_model["max_length"],
            date_string=reward_model.get("date_string", DEFAULT_DATE_STRING),
        )


@dataclass(frozen=True)
class Position:
    index: int
    context: str
    source_id: str


@dataclass(frozen=True)
class EncodedConversation:
    input_ids: list[int]
    positions: list[Position]
    item: str | None = None  # conversations of one item share its prompt


@dataclass(frozen=True)
class FeatureContexts:
    top: pd.DataFrame  # CONTEXT_COLUMNS, sorted by feature then rank
    background: pd.DataFrame  # BACKGROUND_COLUMNS


class SentenceEnds:
    """Which token ids end a sentence, decoded once per id."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.tokenizer, self._known = tokenizer, {}

    def __call__(self, token_id: int) -> bool:
        if token_id not in self._known:
            self._known[token_id] = (
                self.tokenizer.decode([token_id]).rstrip(" \t").endswith(SENTENCE_END_CHARS)
            )
        return self._known[token_id]


def _content_spans(text: str, messages: list[Message]) -> list[tuple[int, int] | None]:
    """Character span of each message's content in the rendered chat text (None if the template changed it).

    Searched from the end: a template may prepend text (a default system prompt) that could contain a short
    message, but nothing except closing markers follows the last message.
    """
    spans, end = [], len(text)
    for message in reversed(messages):
        content = message["content"].strip()
        start = text.rfind(content, 0, end) if content else -1
        if start < 0:
            spans.append(None)
            continue
        spans.append((start, start + len(content)))
        end = start
    return spans[::-1]


def encode_conversation(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[Message],
    source_ids: list[str | None],
    config: ContextConfig,
    sentence_ends: SentenceEnds,
) -> EncodedConversation:
    """Tokenise a chat and list its sentence-end positions; `source_ids[m]` None skips message m."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            "feature contexts need a fast tokenizer (character offsets); this one is a slow tokenizer"
        )
    text = format_conversation(tokenizer, messages, config.date_string).rstrip()  # as in final_states
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    cut = max(0, len(encoded["input_ids"]) - config.max_length)
    ids, offsets = encoded["input_ids"][cut:], encoded["offset_mapping"][cut:]
    positions: list[Position] = []
    last_sentence_start = None
    for span, source_id in zip(_content_spans(text, messages), source_ids, strict=True):
        if span is None:
            continue
        inside = [i for i, (a, b) in enumerate(offsets) if b > a and a >= span[0] and b <= span[1]]
        start = inside[0] if inside else 0
        for i in inside:
            if not (sentence_ends(ids[i]) or i == inside[-1]):
                continue
            first = max(start, i - config.max_context_tokens + 1)
            context = text[offsets[first][0] : offsets[i][1]].strip()
            start = i + 1
            if context:
                last_sentence_start = first
                if source_id is not None:
                    positions.append(Position(i, context, source_id))
    if last_sentence_start is not None and source_ids[-1] is not None:
        # The reward token: its context is the last sentence plus the template tokens that close the turn.
        final = len(ids) - 1
        first = max(last_sentence_start, final - config.max_context_tokens + 1)
        positions.append(Position(final, text[offsets[first][0] : offsets[final][1]].strip(), source_ids[-1]))
    return EncodedConversation(ids, positions)


def rmbench_conversations(
    tokenizer: PreTrainedTokenizerBase, items: Iterable[RMBenchItem], config: ContextConfig
) -> list[EncodedConversation]:
    """Every chosen and rejected variant of every item; the shared prompt is recorded once per item."""
    sentence_ends, encoded = SentenceEnds(tokenizer), []
    for item in items:
        variants = [("chosen", j, text) for j, text in enumerate(item.chosen)]
        variants += [("rejected", j, text) for j, text in enumerate(item.rejected)]
        for number, (side, j, response) in enumerate(variants):
            messages = [{"role": "user", "content": item.prompt}, {"role": "assistant", "content": response}]
            # The prompt's hidden states are the same in all six variants (causal model): record them once.
            prompt_id = f"{item.id}/prompt" if number == 0 else None
            conversation = encode_conversation(
                tokenizer, messages, [prompt_id, f"{item.id}/{side}{j}"], config, sentence_ends
            )
            encoded.append(replace(conversation, item=str(item.id)))
    return encoded


def _text_key(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little", signed=True)


def _best_per_key(values: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """`values` with -inf wherever the same row holds the same key at a higher value (ties: first wins)."""
    by_value = values.argsort(dim=1, descending=True, stable=True)
    keys_by_value = keys.gather(1, by_value)
    by_key = keys_by_value.argsort(dim=1, stable=True)  # equal keys stay in descending-value order
    sorted_keys = keys_by_value.gather(1, by_key)
    repeated = torch.zeros_like(sorted_keys, dtype=torch.bool)
    repeated[:, 1:] = sorted_keys[:, 1:] == sorted_keys[:, :-1]
    drop = torch.zeros_like(repeated).scatter_(1, by_key, repeated)
    return values.masked_fill(torch.zeros_like(drop).scatter_(1, by_value, drop), float("-inf"))


class TopContexts:
    """Streaming top-N positions per feature: values and ids live in (M, N) tensors, texts in a pruned dict.

    A context text that occurs several times (the same sentence in many answers) counts once per feature,
    at its highest activation, so the N slots hold N different texts.
    """

    def __init__(self, top_n: int):
        self.top_n = top_n
        self.values = self.ids = self.keys = None
        self.texts: dict[int, tuple[str, str]] = {}
        self._next_id = 0
        self._prune_at = 4096

    def add(self, activations: torch.Tensor, positions: list[Position]) -> None:
        """`activations` (P, M): the latent vector at each of the P positions."""
        count, num_features = activations.shape
        if self.values is None:
            self.values = torch.full((num_features, self.top_n), float("-inf"))
            self.ids = torch.full((num_features, self.top_n), -1, dtype=torch.long)
            self.keys = torch.full((num_features, self.top_n), -1, dtype=torch.long)
        new_ids = torch.arange(self._next_id, self._next_id + count)
        self._next_id += count
        new_keys = torch.tensor([_text_key(p.context) for p in positions], dtype=torch.long)
        candidates = activations.T.float().masked_fill(activations.T <= 0, float("-inf"))
        keys = torch.cat([self.keys, new_keys.expand(num_features, count)], dim=1)
        values = _best_per_key(torch.cat([self.values, candidates], dim=1), keys)
        ids = torch.cat([self.ids, new_ids.expand(num_features, count)], dim=1)
        self.values, order = values.topk(self.top_n, dim=1)
        empty = self.values == float("-inf")
        self.ids = ids.gather(1, order).masked_fill(empty, -1)
        self.keys = keys.gather(1, order).masked_fill(empty, -1)
        for new_id, position in zip(new_ids.tolist(), positions, strict=True):
            self.texts[new_id] = (position.context, position.source_id)
        if len(self.texts) > self._prune_at:
            kept = set(self.ids.unique().tolist())
            self.texts = {i: t for i, t in self.texts.items() if i in kept}
            self._prune_at = max(4096, 2 * len(self.texts))

    def table(self) -> pd.DataFrame:
        if self.values is None:
            return pd.DataFrame(columns=CONTEXT_COLUMNS)
        features, ranks = torch.nonzero(self.ids >= 0, as_tuple=True)
        ids = self.ids[features, ranks].tolist()
        return pd.DataFrame(
            {
                "feature": features.numpy().astype("int64"),
                "rank": ranks.numpy().astype("int64"),
                "activation": self.values[features, ranks].numpy().astype("float32"),
                "context": [self.texts[i][0] for i in ids],
                "source_id": [self.texts[i][1] for i in ids],
            }
        )


class BackgroundSample:
    """A uniform reservoir sample of positions with the features active at each (activation > 0)."""

    def __init__(self, size: int, seed: int):
        self.size, self.rng, self.seen = size, random.Random(seed), 0
        self.rows: list[dict] = []

    def add(self, activations: torch.Tensor, positions: list[Position]) -> None:
        for row, position in zip(activations, positions, strict=True):
            slot = len(self.rows) if len(self.rows) < self.size else self.rng.randrange(self.seen + 1)
            self.seen += 1
            if slot >= self.size:
                continue
            entry = {
                "context": position.context,
                "source_id": position.source_id,
                "active_features": torch.nonzero(row > 0).flatten().tolist(),
            }
            if slot == len(self.rows):
                self.rows.append(entry)
            else:
                self.rows[slot] = entry

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=BACKGROUND_COLUMNS)


def collect_feature_contexts(
    token_latents: TokenLatents,
    tokenizer: PreTrainedTokenizerBase,
    items: Iterable[RMBenchItem],
    config: ContextConfig = ContextConfig(),
    device: torch.device | str = "cpu",
    attention: str = "sdpa",
) -> FeatureContexts:
    """Run `token_latents` (e.g. `SARM.token_latents`) over RM-Bench and keep the top contexts per feature.

    An item's six answers share its prompt: they run packed (`sarm.packing`), so `token_latents` gets
    (input_ids, a (B, 1, T, T) attention mask of the `attention` implementation, position_ids)."""
    conversations = rmbench_conversations(tokenizer, items, config)
    if not conversations:
        raise ValueError("no RM-Bench items to collect feature contexts from")
    top, background = TopContexts(config.top_n), BackgroundSample(config.background_size, config.seed)
    packs = pack_shared_prefixes(
        [c.input_ids for c in conversations], [c.item for c in conversations], config.batch_tokens
    )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for batch in tqdm(packed_batches(packs, config.batch_tokens), desc="feature contexts", unit="batch"):
        chosen = [packs[i] for i in batch]
        rows, columns, positions = [], [], []
        for row, pack in enumerate(chosen):
            for slot, member in enumerate(pack.members):
                index = pack.member_index(slot)
                for p in conversations[member].positions:
                    rows.append(row)
                    columns.append(index[p.index])
                    positions.append(p)
        if not positions:
            continue
        inputs = packed_inputs(chosen, pad_id, attention)
        with torch.inference_mode():
            latents = token_latents(
                *(inputs[k].to(device) for k in ("input_ids", "attention_mask", "position_ids"))
            )
        if latents.dim() != 3 or latents.shape[:2] != inputs["input_ids"].shape:
            raise ValueError(
                f"token_latents must return (batch, tokens, features); got shape {tuple(latents.shape)}"
            )
        rows, columns = torch.tensor(rows, dtype=torch.long), torch.tensor(columns, dtype=torch.long)
        activations = latents[rows.to(latents.device), columns.to(latents.device)].float().cpu()
        top.add(activations, positions)
        background.add(activations, positions)
    result = FeatureContexts(top.table(), background.table())
    log.info(
        "kept %d contexts for %d features; %d background positions",
        len(result.top),
        result.top["feature"].nunique(),
        len(result.background),
    )
    return result


def write_feature_contexts(
    result: FeatureContexts, contexts_path: str | Path, background_path: str | Path
) -> None:
    """The top contexts and the background sample as two parquet files, each written atomically."""
    write_parquet_atomic(result.top, contexts_path)
    write_parquet_atomic(result.background, background_path)


def read_feature_contexts(
    contexts_path: str | Path, background_path: str | Path | None = None
) -> FeatureContexts:
    """Read back what `write_feature_contexts` wrote, checking the columns."""
    top = pd.read_parquet(contexts_path)
    _require_columns(top, CONTEXT_COLUMNS, contexts_path)
    background = pd.DataFrame(columns=BACKGROUND_COLUMNS)
    if background_path is not None:
        background = pd.read_parquet(background_path)
        _require_columns(background, BACKGROUND_COLUMNS, background_path)
    return FeatureContexts(top, background)


def _require_columns(table: pd.DataFrame, columns: list[str], path) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected {columns}")


def background_halves(background: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(explainer half, detection half) of the background sample, split by a hash of the context text.

    An explainer that reads background contexts (the contrastive one) reads only the first half and
    detection draws its silent contexts only from the second, so no explainer is judged on a text it saw;
    equal texts land in the same half.
    """
    in_first = background["context"].astype(str).map(lambda text: _text_key(text) % 2 == 0).astype(bool)
    return background[in_first], background[~in_first]


def silent_contexts(background: pd.DataFrame, feature: int, exclude: Iterable[str] = ()) -> list[str]:
    """Background texts on which `feature` is silent (not among the active features), minus `exclude`."""
    excluded = set(exclude)
    return [
        text
        for text, active in zip(background["context"].astype(str), background["active_features"], strict=True)
        if feature not in set(active) and text not in excluded
    ]
