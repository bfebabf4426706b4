"""Chat-formatted conversations -> token ids -> the residual state of each one's final token, at chosen layers.

The reward is read at the final token, so in frozen-backbone mode one pass of the truncated decoder over
every conversation, stored here, is all the backbone work a head needs. RM-Bench is cached for steering
alone, so only the pairs of the steering domains are cached (`dataset_conversations`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from sarm.backbone import hidden_states, last_token_index
from sarm.batching import pad_right, token_budget_batches
from sarm.data.chat import DEFAULT_DATE_STRING, DEFAULT_MAX_LENGTH, tokenize_conversations
from sarm.data.records import Message
from sarm.data.rewardbench2 import completion_table
from sarm.data.rmbench import steering_pairs
from sarm.data.specs import load_dataset_spec
from sarm.rm.chunked_parts import ChunkedParts
from sarm.rm.pairs import pair_conversations
from sarm.runtime import atomic_write, fingerprint, module_device

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


@torch.inference_mode()
def iter_final_token_states(
    decoder: nn.Module,
    token_ids: Sequence[Sequence[int]],
    layers: Sequence[int],
    batch_tokens: int,
    pad_id: int,
) -> Iterator[tuple[list[int], dict[int, torch.Tensor]]]:
    """Yield (indices into token_ids, {layer: (b, d) float32 CPU}) batch by batch, longest batches first."""
    depth = decoder.config.num_hidden_layers
    bad = [layer for layer in layers if not 1 <= layer <= depth]
    if bad:
        raise ValueError(f"layers {bad} are outside 1..{depth} of this (truncated) decoder")
    device = module_device(decoder)
    was_training = decoder.training
    decoder.eval()
    try:
        for batch in token_budget_batches([len(t) for t in token_ids], batch_tokens):
            input_ids, attention_mask = pad_right([token_ids[i] for i in batch], pad_id)
            input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
            states = hidden_states(decoder, input_ids, attention_mask, list(layers))
            rows = torch.arange(len(batch), device=device)
            last = last_token_index(attention_mask)
            yield batch, {layer: s[rows, last].float().cpu() for layer, s in states.items()}
    finally:
        decoder.train(was_training)


def dataset_conversations(
    dataset: str, spec: dict, skipped_rows=None, steering_domains: Sequence[str] | None = None
) -> list[list[Message]]:
    """preferences: every chosen then every rejected conversation; rewardbench2: every completion; rmbench:
    only what steering reads, the pairs of `steering_domains` (`steering_pairs`: variant j against variant
    j), every chosen then every rejected conversation.

    `skipped_rows`: where to list the rows dropped under `bad_rows: skip` (see load_dataset_spec)."""
    if dataset == "preferences":
        return pair_conversations(load_dataset_spec(dataset, spec, skipped_rows))
    if dataset == "rewardbench2":
        return completion_table(load_dataset_spec(dataset, spec, skipped_rows))[1]
    if dataset == "rmbench":
        if steering_domains is None:
            raise ValueError(
                "the rmbench cache holds the pairs of the steering domains: pass steering_domains"
            )
        items = load_dataset_spec(dataset, spec, skipped_rows)
        return pair_conversations(steering_pairs(items, steering_domains))
    raise ValueError(f"no conversations defined for dataset {dataset!r}")


def final_token_states(
    decoder: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[list[Message]],
    layers: Sequence[int],
    batch_tokens: int,
    out_path: str | Path,
    max_length: int = DEFAULT_MAX_LENGTH,
    chunk_size: int = 1024,
    date_string: str = DEFAULT_DATE_STRING,
) -> Path:
    """Store each conversation's final-token residual state per layer as `layer{L}` (N, d) in a safetensors file.

    Work is saved chunk by chunk next to the output (`<out>.parts/`), so a killed run resumes where it stopped.
    """
    out_path = Path(out_path)
    inputs = fingerprint([list(layers), max_length, chunk_size, date_string], *conversations)
    parts = ChunkedParts(out_path, inputs, len(conversations), chunk_size, "final-token states")
    for start, chunk_file in parts.missing():
        chunk = conversations[start : start + chunk_size]
        token_ids = tokenize_conversations(tokenizer, chunk, max_length, date_string)
        collected: dict[int, torch.Tensor] = {}
        for batch, states in iter_final_token_states(
            decoder, token_ids, layers, batch_tokens, tokenizer.pad_token_id
        ):
            for layer, s in states.items():
                if layer not in collected:
                    collected[layer] = torch.empty((len(chunk), s.shape[1]), dtype=torch.float32)
                collected[layer][batch] = s
            parts.progress.update(len(batch))
        atomic_write(chunk_file, partial(save_file, {f"layer{layer}": t for layer, t in collected.items()}))

    merged = {
        f"layer{layer}": torch.cat(parts.read(f"layer{layer}")) if parts.files else torch.empty(0)
        for layer in layers
    }
    metadata = {"layers": json.dumps(list(layers)), "count": str(len(conversations))}
    atomic_write(out_path, partial(save_file, merged, metadata=metadata))
    parts.remove()
    return out_path


def load_final_token_states(path: str | Path, layer: int) -> torch.Tensor:
    """The (N, d) final-token states of one layer from a file written by `final_token_states`."""
    path = Path(path)
    with safe_open(str(path), framework="pt") as f:
        if f"layer{layer}" not in f.keys():
            stored = (f.metadata() or {}).get("layers", "?")
            raise KeyError(f"{path} has no states for layer {layer} (stored layers: {stored})")
        return f.get_tensor(f"layer{layer}")
