"""The last decoder layer of a reward model, run for each row's final token only.

A reward is read at the final token, so the last layer needs the keys and values of every token but the
query, output projection and MLP of one. For a model that trains its top N layers from cached states
(`reward_model.train_layers: N`), that removes most of the top layer's work in every step and at
evaluation, with the result of the full layer at that token (tests/rm/test_last_token.py compares them).
Llama-style layers only (`input_layernorm`, `self_attn.{q,k,v,o}_proj`, `post_attention_layernorm`,
`mlp`; no query/key norms); `supports_last_token` says whether a layer is one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sarm.backbone import last_token_index

_PARTS = ("input_layernorm", "post_attention_layernorm", "mlp", "self_attn")
_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")


def supports_last_token(block: nn.Module) -> bool:
    """True for a Llama-style decoder layer, the layout `last_token_block` computes."""
    attention = getattr(block, "self_attn", None)
    return (
        all(hasattr(block, part) for part in _PARTS)
        and all(hasattr(attention, name) for name in _PROJECTIONS)
        and hasattr(attention, "head_dim")
        and hasattr(attention, "scaling")
        and not hasattr(attention, "q_norm")
    )


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def last_token_block(
    block: nn.Module,
    hidden: torch.Tensor,
    attention_mask: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    """(B, d) output of `block` at each row's last real token, from its (B, T, d) right-padded input.

    `position_embeddings`: the decoder's rotary (cos, sin) of positions 0..T-1, each (1, T, head_dim).
    """
    attention = block.self_attn
    batch, width, _ = hidden.shape
    rows = torch.arange(batch, device=hidden.device)
    last = last_token_index(attention_mask)
    cos, sin = position_embeddings

    normed = block.input_layernorm(hidden)
    keys = attention.k_proj(normed).view(batch, width, -1, attention.head_dim).transpose(1, 2)
    values = attention.v_proj(normed).view(batch, width, -1, attention.head_dim).transpose(1, 2)
    query = attention.q_proj(normed[rows, last]).view(batch, -1, 1, attention.head_dim)
    keys = keys * cos.unsqueeze(1) + _rotate_half(keys) * sin.unsqueeze(1)
    cos_last, sin_last = cos[0, last].unsqueeze(1).unsqueeze(1), sin[0, last].unsqueeze(1).unsqueeze(1)
    query = query * cos_last + _rotate_half(query) * sin_last

    groups = query.shape[1] // keys.shape[1]
    keys, values = keys.repeat_interleave(groups, dim=1), values.repeat_interleave(groups, dim=1)
    # Right padding: the final token attends to every real token of its row, and to nothing else.
    visible = attention_mask.bool()[:, None, None, :]
    attended = F.scaled_dot_product_attention(
        query, keys.to(query.dtype), values.to(query.dtype), attn_mask=visible, scale=attention.scaling
    )
    residual = hidden[rows, last] + attention.o_proj(attended.reshape(batch, -1))
    return residual + block.mlp(block.post_attention_layernorm(residual))
