"""Preference pairs as a reward model trains on them: tokenized conversations, cached final-token states, or
cached per-token states below the trained layers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from sarm.data.chat import DEFAULT_DATE_STRING, DEFAULT_MAX_LENGTH, last_turn_starts, tokenize_conversations
from sarm.data.records import Message, PreferencePair
from sarm.rm.token_states import TokenStates

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass
class TokenizedPairs:
    """Chat-formatted, tokenized preference pairs (full path: the backbone runs in every step)."""

    chosen: list[list[int]]
    rejected: list[list[int]]
    pad_id: int
    # Where each conversation's last assistant turn starts (for a reconstruction loss over that turn)
    chosen_starts: list[int] | None = None
    rejected_starts: list[int] | None = None

    def __len__(self) -> int:
        return len(self.chosen)

    def subset(self, indices) -> TokenizedPairs:
        def pick(values):
            return None if values is None else [values[i] for i in indices]

        return TokenizedPairs(
            pick(self.chosen),
            pick(self.rejected),
            self.pad_id,
            pick(self.chosen_starts),
            pick(self.rejected_starts),
        )


@dataclass
class CachedPairs:
    """Final-token residual states of each pair's chosen and rejected conversation (frozen-backbone path)."""

    chosen: torch.Tensor  # (N, d)
    rejected: torch.Tensor  # (N, d)

    def __post_init__(self):
        if self.chosen.shape != self.rejected.shape or self.chosen.ndim != 2:
            raise ValueError(
                f"cached chosen/rejected states must both be (N, d), got {tuple(self.chosen.shape)} and {tuple(self.rejected.shape)}"
            )

    def __len__(self) -> int:
        return len(self.chosen)

    @classmethod
    def from_states(cls, states: torch.Tensor) -> CachedPairs:
        """Split states computed for `pair_conversations(pairs)`: the first half chosen, the second rejected."""
        if len(states) % 2:
            raise ValueError(f"{len(states)} states cannot be chosen/rejected halves of preference pairs")
        half = len(states) // 2
        return cls(chosen=states[:half], rejected=states[half:])


@dataclass
class TokenStatePairs:
    """Pairs as indices into per-token states cached at layer s (`train_layers: N`, s = l - N)."""

    states: TokenStates
    chosen: list[int]
    rejected: list[int]

    def __len__(self) -> int:
        return len(self.chosen)

    @property
    def layer(self) -> int:
        return self.states.layer

    @classmethod
    def from_states(cls, states: TokenStates) -> TokenStatePairs:
        """Split states of `pair_conversations(pairs)`: the first half chosen, the second rejected."""
        if len(states) % 2:
            raise ValueError(
                f"{len(states)} conversations cannot be chosen/rejected halves of preference pairs"
            )
        half = len(states) // 2
        return cls(states, list(range(half)), list(range(half, 2 * half)))

    def subset(self, indices) -> TokenStatePairs:
        return TokenStatePairs(
            self.states, [self.chosen[i] for i in indices], [self.rejected[i] for i in indices]
        )


Pairs = TokenizedPairs | CachedPairs | TokenStatePairs


def pair_conversations(pairs: Sequence[PreferencePair]) -> list[list[Message]]:
    """Every chosen conversation, then every rejected one (the layout CachedPairs.from_states reads)."""
    return [p.chosen for p in pairs] + [p.rejected for p in pairs]


def tokenize_pairs(
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[PreferencePair],
    max_length: int = DEFAULT_MAX_LENGTH,
    date_string: str = DEFAULT_DATE_STRING,
    last_turns: bool = False,
) -> TokenizedPairs:
    """`last_turns` also records where each last assistant turn starts (`recon_tokens: assistant_turn`)."""
    chosen, rejected = [p.chosen for p in pairs], [p.rejected for p in pairs]
    starts = {}
    if last_turns:
        starts = {
            "chosen_starts": last_turn_starts(tokenizer, chosen, max_length, date_string),
            "rejected_starts": last_turn_starts(tokenizer, rejected, max_length, date_string),
        }
    return TokenizedPairs(
        chosen=tokenize_conversations(tokenizer, chosen, max_length, date_string),
        rejected=tokenize_conversations(tokenizer, rejected, max_length, date_string),
        pad_id=tokenizer.pad_token_id,
        **starts,
    )
