"""Chat-formatted conversations -> token ids -> one backbone pass -> the states reward models train from.

The reward is read at the final token, so in frozen-backbone mode one pass of the truncated decoder over
every conversation, stored here, is all the backbone work a head needs. A model that trains only its top N
layers (`reward_model.train_layers: N`) needs every token's state at layer l-N instead; the same pass
stores those (`sarm.rm.token_states` reads them). RM-Bench is cached for steering alone, so only the pairs
of the steering domains are cached (`dataset_conversations`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Hashable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from sarm.backbone import hidden_states
from sarm.data.chat import DEFAULT_DATE_STRING, DEFAULT_MAX_LENGTH, tokenize_conversations
from sarm.data.records import Message
from sarm.data.rewardbench2 import completion_table
from sarm.data.rmbench import steering_pairs
from sarm.data.specs import load_dataset_spec
from sarm.packing import pack_shared_prefixes, packed_batches, packed_inputs
from sarm.rm.chunked_parts import ChunkedParts
from sarm.rm.pairs import pair_conversations
from sarm.rm.token_states import DEFAULT_STORAGE_DTYPE, STORAGE_DTYPES
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
    token_layers: Sequence[int] = (),
    keys: Sequence[Hashable] | None = None,
) -> Iterator[tuple[list[int], dict[int, torch.Tensor], dict[int, list[torch.Tensor]]]]:
    """Yield (indices into token_ids, {layer: (b, d) final-token states}, {token layer: b (length, d) states
    of every token}) batch by batch, float32 on the CPU, longest batches first.

    Sequences with equal `keys` (`prompt_keys` of their conversations) run their common prefix once
    (`sarm.packing`); without keys every sequence runs alone."""
    depth = decoder.config.num_hidden_layers
    bad = [layer for layer in [*layers, *token_layers] if not 1 <= layer <= depth]
    if bad:
        raise ValueError(f"layers {bad} are outside 1..{depth} of this (truncated) decoder")
    device = module_device(decoder)
    attention = decoder.config._attn_implementation
    packs = pack_shared_prefixes(token_ids, range(len(token_ids)) if keys is None else keys, batch_tokens)
    was_training = decoder.training
    decoder.eval()
    try:
        for batch in packed_batches(packs, batch_tokens):
            chosen = [packs[i] for i in batch]
            inputs = {
                name: tensor.to(device)
                for name, tensor in packed_inputs(
                    chosen, pad_id, attention, next(decoder.parameters()).dtype
                ).items()
            }
            states = hidden_states(decoder, **inputs, layers=sorted({*layers, *token_layers}))
            rows = [(row, slot) for row, pack in enumerate(chosen) for slot in range(len(pack.members))]
            members = [chosen[row].members[slot] for row, slot in rows]
            index = [chosen[row].member_index(slot) for row, slot in rows]
            last_row = torch.tensor([row for row, _ in rows], device=device)
            last_column = torch.tensor([i[-1] for i in index], device=device)
            finals = {layer: states[layer][last_row, last_column].float().cpu() for layer in layers}
            tokens = {
                layer: [
                    states[layer][row, torch.tensor(i, device=device)].float().cpu()
                    for (row, _), i in zip(rows, index, strict=True)
                ]
                for layer in token_layers
            }
            yield members, finals, tokens
    finally:
        decoder.train(was_training)


def prompt_keys(conversations: Sequence[list[Message]]) -> list[str]:
    """What a conversation shares with others that differ from it only in their last message."""
    return [json.dumps(messages[:-1], sort_keys=True) for messages in conversations]


def prompt_order(keys: Sequence[str]) -> list[int]:
    """Indices with equal keys made adjacent, groups in order of first appearance, input order within."""
    first = {key: i for i, key in reversed(list(enumerate(keys)))}
    return sorted(range(len(keys)), key=lambda i: (first[keys[i]], i))


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
    token_layers: Sequence[int] = (),
    token_dtype: str = DEFAULT_STORAGE_DTYPE,
) -> Path:
    """One pass over the conversations; store in a safetensors file each one's final-token state per layer
    of `layers` as `layer{L}` (N, d), and every token's state per layer of `token_layers` as `tokens{S}`
    (sum of lengths, d; stored as `token_dtype`) with `offsets` (N + 1): conversation i is rows
    offsets[i]:offsets[i+1].

    Work is saved chunk by chunk next to the output (`<out>.parts/`), so a killed run resumes where it stopped.
    """
    if token_dtype not in STORAGE_DTYPES:
        raise ValueError(
            f"config key `reward_model.token_states_dtype` must be one of {sorted(STORAGE_DTYPES)}, got {token_dtype!r}"
        )
    out_path = Path(out_path)
    token_layers = sorted(token_layers)
    # Chunks run in prompt order, so a prompt's conversations share one pass (a preference pair's chosen
    # and rejected sides are N apart in `conversations`); the merged file is back in input order.
    keys = prompt_keys(conversations)
    order = prompt_order(keys)
    fingerprinted = [list(layers), max_length, chunk_size, date_string, "prompt order"]
    if token_layers:
        fingerprinted += [token_layers, token_dtype]
    parts = ChunkedParts(
        out_path, fingerprint(fingerprinted, *conversations), len(conversations), chunk_size, "states"
    )
    for start, chunk_file in parts.missing():
        chunk_order = order[start : start + chunk_size]
        chunk = [conversations[i] for i in chunk_order]
        token_ids = tokenize_conversations(tokenizer, chunk, max_length, date_string)
        finals: dict[int, torch.Tensor] = {}
        every: dict[int, list[torch.Tensor | None]] = {layer: [None] * len(chunk) for layer in token_layers}
        for batch, batch_finals, batch_tokens_states in iter_final_token_states(
            decoder,
            token_ids,
            layers,
            batch_tokens,
            tokenizer.pad_token_id,
            token_layers,
            keys=[keys[i] for i in chunk_order],
        ):
            for layer, s in batch_finals.items():
                if layer not in finals:
                    finals[layer] = torch.empty((len(chunk), s.shape[1]), dtype=torch.float32)
                finals[layer][batch] = s
            for layer, rows in batch_tokens_states.items():
                for index, row in zip(batch, rows, strict=True):
                    every[layer][index] = row
            parts.progress.update(len(batch))
        saved = {f"layer{layer}": t for layer, t in finals.items()}
        for layer, rows in every.items():
            saved[f"tokens{layer}"] = torch.cat(rows).to(STORAGE_DTYPES[token_dtype])
        if token_layers:
            saved["lengths"] = torch.tensor([len(ids) for ids in token_ids])
        atomic_write(chunk_file, partial(save_file, saved))

    position = torch.empty(len(order), dtype=torch.long)  # conversation i is row position[i] of the parts
    position[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))
    merged = {
        f"layer{layer}": torch.cat(parts.read(f"layer{layer}"))[position] if parts.files else torch.empty(0)
        for layer in layers
    }
    if token_layers:
        lengths = torch.cat(parts.read("lengths")).long() if parts.files else torch.zeros(0, dtype=torch.long)
        starts = torch.cumsum(lengths, 0) - lengths
        rows = torch.cat(
            [torch.arange(starts[p], starts[p] + lengths[p]) for p in position.tolist()] or [lengths]
        )
        merged["offsets"] = torch.zeros(len(lengths) + 1, dtype=torch.long)
        merged["offsets"][1:] = torch.cumsum(lengths[position], 0)
        for layer in token_layers:
            merged[f"tokens{layer}"] = (
                torch.cat(parts.read(f"tokens{layer}"))[rows]
                if parts.files
                else torch.zeros(0, decoder.config.hidden_size)
            )
    metadata = {"layers": json.dumps(list(layers)), "count": str(len(conversations))}
    if token_layers:
        metadata |= {"token_layers": json.dumps(token_layers), "token_dtype": token_dtype}
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
