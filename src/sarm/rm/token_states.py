"""Every token's residual state at one layer s, as the dataset's cache stores it (`train_layers: N`).

A reward model that trains only its top N layers (s = l - N .. l-1) gets the same gradients from these
states as from the token ids: layers below s are frozen, so their output never changes. Each epoch then
runs N layers instead of l. `sarm.rm.final_states.final_token_states` writes them, in the same backbone
pass as the final-token states: `tokens{s}` (sum of the conversations' lengths, d), the conversations one
after another, and `offsets` (n + 1): conversation i is rows offsets[i]:offsets[i+1].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import safe_open

from sarm.batching import token_budget_batches
from sarm.runtime import module_device

if TYPE_CHECKING:
    from sarm.rm.models import RewardModel

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


def load_token_states(path: str | Path, layer: int) -> TokenStates:
    """The per-token states of `layer` in a dataset's cache (`final_token_states` with `token_layers`)."""
    path = Path(path)
    with safe_open(str(path), framework="pt") as f:
        if f"tokens{layer}" not in f.keys() or "offsets" not in f.keys():
            stored = (f.metadata() or {}).get("token_layers", "none")
            raise ValueError(
                f"{path} holds no per-token states of layer {layer} (its per-token layers: {stored}); "
                "was it cached for this `reward_model.train_layers`?"
            )
        return TokenStates(f.get_tensor(f"tokens{layer}"), f.get_tensor("offsets"), layer)


@torch.inference_mode()
def model_final_states(
    model: RewardModel, states: TokenStates, batch_tokens: int = 16384, progress=None
) -> torch.Tensor:
    """(n, d) float32 final-token states at `model.layer` of every conversation, computed by the model's
    trained top layers from per-token states cached at its first trained layer (`train_layers: N`)."""
    if model.first_trained_layer != states.layer:
        raise ValueError(
            f"per-token states of layer {states.layer} do not feed this model, whose trained layers start "
            f"at {model.first_trained_layer}"
        )
    device = module_device(model)
    final = torch.empty(len(states), states.states.shape[1], dtype=torch.float32)
    for batch in token_budget_batches(states.lengths(), batch_tokens):
        hidden, mask = states.padded(batch)
        final[batch] = model.final_states_from(hidden.to(device), mask.to(device), states.layer).float().cpu()
        if progress is not None:
            progress.update(len(batch))
    return final
