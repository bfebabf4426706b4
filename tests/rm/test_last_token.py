"""The top layer run for the final token only equals the full layer read at that token, forward and backward."""

import torch
from torch import nn

from sarm.backbone import load_decoder
from sarm.rm.last_token import supports_last_token
from sarm.rm.models import build_vanilla_rm

LAYER, START = 3, 1


def padded_states(width=9, lengths=(9, 4, 7), d=32):
    torch.manual_seed(1)
    hidden = torch.randn(len(lengths), width, d)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    return hidden, mask


def rewards_and_grads(model, hidden, mask, fast):
    model.zero_grad()
    if fast:
        final = model.final_states_from(hidden, mask, START)
    else:
        rows = torch.arange(hidden.shape[0])
        final = model.residual_from(hidden, mask, START)[rows, mask.sum(1) - 1]
    rewards = model.rewards_from_states(final)
    rewards.square().sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return rewards.detach(), grads


def reward_model(source):
    model = build_vanilla_rm(str(source), LAYER)
    torch.manual_seed(0)
    nn.init.normal_(model.head.weight)  # a head that reads the state, so rewards and gradients are not zero
    return model


def test_final_token_path_equals_the_full_top_layer(tiny_backbone):
    model = reward_model(tiny_backbone)
    model.requires_grad_(True)
    assert supports_last_token(model.decoder.layers[LAYER - 1])
    hidden, mask = padded_states()
    fast, fast_grads = rewards_and_grads(model, hidden, mask, fast=True)
    full, full_grads = rewards_and_grads(model, hidden, mask, fast=False)
    assert torch.allclose(fast, full, atol=1e-5) and fast.std() > 1e-3
    top = f"decoder.layers.{LAYER - 1}."
    assert any(name.startswith(top + "self_attn.q_proj") for name in fast_grads)
    assert fast_grads.keys() == full_grads.keys()
    for name, grad in full_grads.items():
        assert torch.allclose(fast_grads[name], grad, atol=1e-5), name


def test_padding_after_the_final_token_changes_nothing(tiny_backbone):
    model = reward_model(tiny_backbone)
    hidden, mask = padded_states()
    noisy = hidden.clone()
    noisy[mask == 0] = 1e3
    with torch.no_grad():
        assert torch.allclose(
            model.final_states_from(hidden, mask, START),
            model.final_states_from(noisy, mask, START),
            atol=1e-5,
        )


def test_other_layer_layouts_are_not_claimed(tiny_backbone):
    block = load_decoder(str(tiny_backbone), LAYER).layers[0]
    block.self_attn.q_norm = nn.Identity()  # Qwen3 / OLMo2-style query-key norms: not computed here
    assert not supports_last_token(block)
    assert not supports_last_token(nn.Linear(4, 4))
