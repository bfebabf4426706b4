"""Every token's residual state at one layer s, cached once per dataset (`reward_model.train_layers: N`).

A reward model that trains only its top N layers (s = l - N .. l-1) gets the same gradients from these
states as from the token ids: layers below s are frozen, so their output never changes. Each epoch then
runs N layers instead of l. The file holds `states` (sum of the conversations' lengths, d), the
conversations one after another, and `offsets` (n + 1): conversation i is states[offsets[i]:offsets[i+1]].
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from sarm.backbone import hidden_states
from sarm.batching import pad_right, token_budget_batches
from sarm.data.chat import DEFAULT_DATE_STRING, DEFAULT_MAX_LENGTH, tokenize_conversations
from sarm.data.records import Message
from sarm.rm.chunked_parts import ChunkedParts
from sarm.runtime import atomic_write, fingerprint, module_device

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DEFAULT_STORAGE_DTYPE = "float32"  # the workflow schema's reward_model.token_states_dtype has the same


@dataclass
class TokenStates:
    """Per-token states of n conversations at `layer` (layers applied), concatenated."""

    states: torch.Tensor  # (sum of lengths, d)
    offsets: torch.Tensor  # (n + 1,) int64
    layer: int

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def sequence(self, index: int) -> torch.Tensor:
        return self.states[self.offsets[index] : self.offsets[index + 1]]

    def lengths(self) -> list[int]:
        return (self.offsets[1:] - self.offsets[:-1]).tolist()

    def padded(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, d) float32 states, right-padded with zeros, and the (B, T) attention mask."""
        sequences = [self.sequence(i) for i in indices]
        width = max(len(s) for s in sequences)
        hidden = torch.zeros(len(sequences), width, self.states.shape[1])
        mask = torch.zeros(len(sequences), width, dtype=torch.long)
        for row, sequence in enumerate(sequences):
            hidden[row, : len(sequence)] = sequence.float()
            mask[row, : len(sequence)] = 1
        return hidden, mask


def cache_token_states(
    decoder: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[list[Message]],
    batch_tokens: int,
    out_path: str | Path,
    max_length: int = DEFAULT_MAX_LENGTH,
    date_string: str = DEFAULT_DATE_STRING,
    storage_dtype: str = DEFAULT_STORAGE_DTYPE,
    chunk_size: int = 512,
) -> Path:
    """Write every token's state after all layers of `decoder` (cut at layer s) for each conversation.

    Work is saved chunk by chunk in `<out>.parts/` under a fingerprint of the inputs, so a killed run
    resumes with the chunks it finished; parts of a different input are discarded.
    """
    if storage_dtype not in STORAGE_DTYPES:
        raise ValueError(
            f"config key `reward_model.token_states_dtype` must be one of {sorted(STORAGE_DTYPES)}, got {storage_dtype!r}"
        )
    layer = decoder.config.num_hidden_layers
    out_path = Path(out_path)
    inputs = fingerprint([layer, max_length, date_string, storage_dtype, chunk_size], *conversations)
    parts = ChunkedParts(out_path, inputs, len(conversations), chunk_size, "token states")
    for start, chunk_file in parts.missing():
        token_ids = tokenize_conversations(
            tokenizer, conversations[start : start + chunk_size], max_length, date_string
        )
        states, lengths = _chunk_states(
            decoder, token_ids, batch_tokens, tokenizer.pad_token_id, parts.progress
        )
        chunk = {"states": states.to(STORAGE_DTYPES[storage_dtype]), "lengths": torch.tensor(lengths)}
        atomic_write(chunk_file, partial(save_file, chunk))

    states = parts.read("states")
    lengths = torch.cat(parts.read("lengths")) if parts.files else torch.zeros(0)
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.long)
    offsets[1:] = torch.cumsum(lengths.long(), 0)
    merged = {
        "states": torch.cat(states) if states else torch.zeros(0, decoder.config.hidden_size),
        "offsets": offsets,
    }
    metadata = {"layer": str(layer), "count": str(len(conversations)), "dtype": storage_dtype}
    atomic_write(out_path, partial(save_file, merged, metadata=metadata))
    parts.remove()
    log.info("%s: %d conversations, %d tokens at layer %d", out_path, len(conversations), offsets[-1], layer)
    return out_path


@torch.inference_mode()
def _chunk_states(
    decoder: nn.Module, token_ids: list[list[int]], batch_tokens: int, pad_id: int, progress
) -> tuple[torch.Tensor, list[int]]:
    """(sum of lengths, d) float32 CPU states of `token_ids` in order, and each one's length."""
    depth, device = decoder.config.num_hidden_layers, module_device(decoder)
    lengths = [len(t) for t in token_ids]
    rows: list[torch.Tensor | None] = [None] * len(token_ids)
    was_training = decoder.training
    decoder.eval()
    try:
        for batch in token_budget_batches(lengths, batch_tokens):
            input_ids, attention_mask = pad_right([token_ids[i] for i in batch], pad_id)
            hidden = hidden_states(decoder, input_ids.to(device), attention_mask.to(device), [depth])[depth]
            for row, index in enumerate(batch):
                rows[index] = hidden[row, : lengths[index]].float().cpu()
            progress.update(len(batch))
    finally:
        decoder.train(was_training)
    return torch.cat(rows), lengths


def load_token_states(path: str | Path, layer: int) -> TokenStates:
    """The states of a file written by `cache_token_states`, checked to be those of `layer`."""
    path = Path(path)
    with safe_open(str(path), framework="pt") as f:
        stored = int((f.metadata() or {}).get("layer", -1))
        if stored != layer or not {"states", "offsets"} <= set(f.keys()):
            raise ValueError(
                f"{path} does not hold per-token states of layer {layer} (its layer: {stored}); "
                "was it written by cache_token_states for this `reward_model.train_layers`?"
            )
        return TokenStates(f.get_tensor("states"), f.get_tensor("offsets"), layer)
