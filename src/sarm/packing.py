"""Shared-prompt packing: conversations that differ only in their last message run their common token prefix
once. A pack is [prefix][rest of member 1][rest of member 2]...; each member attends to the prefix and to its
own tokens, at the positions it would have alone, so its states are those of its own forward pass (up to
float rounding). Preference pairs share their prompt, RewardBench 2 has 4+ completions per prompt and
RM-Bench 6, so a backbone pass over them reads far fewer tokens."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch

from sarm.batching import token_budget_batches


@dataclass(frozen=True)
class Pack:
    members: list[int]  # indices of the packed sequences
    prefix: int  # tokens shared by all members, stored once at the start
    starts: list[int]  # where each member's own tokens begin in the pack
    ids: list[int]
    positions: list[int]  # rotary position of each packed token: its index in its own sequence
    segments: list[int]  # 0 for the prefix, k for member k - 1

    def member_index(self, slot: int) -> list[int]:
        """Indices into the pack of the tokens of `members[slot]`, in its own order."""
        end = self.starts[slot + 1] if slot + 1 < len(self.starts) else len(self.ids)
        return [*range(self.prefix), *range(self.starts[slot], end)]


def common_prefix(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix all sequences share, leaving each at least one token of its own."""
    shortest = min(len(s) for s in sequences)
    length = 0
    while length < shortest - 1 and all(s[length] == sequences[0][length] for s in sequences):
        length += 1
    return length


def pack_shared_prefixes(
    token_ids: Sequence[Sequence[int]], keys: Sequence[Hashable], max_tokens: int
) -> list[Pack]:
    """Packs of the sequences with equal `keys` (e.g. the conversation before its last message), at most
    `max_tokens` long unless one member alone is longer. A sequence with a key of its own is a pack of one."""
    if len(keys) != len(token_ids):
        raise ValueError(f"{len(keys)} keys for {len(token_ids)} sequences")
    groups: dict[Hashable, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    packs = []
    for members in groups.values():
        prefix = common_prefix([token_ids[i] for i in members])
        current: list[int] = []
        size = prefix
        for index in members:
            own = len(token_ids[index]) - prefix
            if current and size + own > max_tokens:
                packs.append(_pack(token_ids, current, prefix))
                current, size = [], prefix
            current.append(index)
            size += own
        packs.append(_pack(token_ids, current, prefix))
    return packs


def _pack(token_ids: Sequence[Sequence[int]], members: list[int], prefix: int) -> Pack:
    if len(members) == 1:
        prefix = 0  # a pack of one is just the sequence
    ids, positions, segments = list(token_ids[members[0]][:prefix]), list(range(prefix)), [0] * prefix
    starts = []
    for slot, index in enumerate(members):
        rest = token_ids[index][prefix:]
        starts.append(len(ids))
        ids += rest
        positions += range(prefix, prefix + len(rest))
        segments += [slot + 1] * len(rest)
    return Pack(members, prefix, starts, ids, positions, segments)


def packed_batches(packs: Sequence[Pack], batch_tokens: int) -> list[list[int]]:
    """Indices into `packs`, longest first, at most `batch_tokens` padded tokens per batch."""
    return token_budget_batches([len(p.ids) for p in packs], batch_tokens)


def packed_inputs(
    packs: Sequence[Pack], pad_id: int, attention: str = "sdpa", dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """`input_ids`, `position_ids` and the (B, 1, T, T) `attention_mask` of right-padded packs, for a
    Hugging Face decoder with `attention` "sdpa" (boolean mask) or "eager" (additive mask in `dtype`)."""
    if attention not in ("sdpa", "eager"):
        raise ValueError(
            f"shared-prompt packing needs a decoder with sdpa or eager attention, not {attention!r}"
        )
    width = max(len(p.ids) for p in packs)
    input_ids = torch.full((len(packs), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(packs), width), dtype=torch.long)
    segments = torch.full((len(packs), width), -1, dtype=torch.long)
    for row, pack in enumerate(packs):
        input_ids[row, : len(pack.ids)] = torch.tensor(pack.ids)
        position_ids[row, : len(pack.ids)] = torch.tensor(pack.positions)
        segments[row, : len(pack.ids)] = torch.tensor(pack.segments)
    query, key = segments[:, :, None], segments[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    allowed = causal & (key >= 0) & ((key == 0) | (key == query))
    allowed |= torch.eye(width, dtype=torch.bool)  # padding rows attend to themselves: no all-masked row
    mask = allowed[:, None]
    if attention == "eager":
        mask = torch.zeros(mask.shape, dtype=dtype).masked_fill(~mask, torch.finfo(dtype).min)
    return {"input_ids": input_ids, "position_ids": position_ids, "attention_mask": mask}
