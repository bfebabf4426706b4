"""sarm.packing: conversations that share a prompt run it once, and each gets the states of its own pass."""

import pytest
import torch

from sarm.backbone import hidden_states, load_decoder
from sarm.packing import common_prefix, pack_shared_prefixes, packed_inputs
from sarm.rm.final_states import iter_final_token_states

LAYERS = [1, 2]
# Two prompts with three answers each (one answer longer than the rest), and one conversation alone.
TOKEN_IDS = [
    [5, 6, 7, 8, 9, 10, 11],
    [5, 6, 7, 8, 12],
    [5, 6, 7, 8, 13, 14, 15, 16, 17, 18],
    [20, 21, 22, 23, 24],
    [20, 21, 22, 30, 31, 32],
    [20, 21, 22, 23, 40, 41, 42, 43],
    [50, 51, 52],
]
KEYS = ["p", "p", "p", "q", "q", "q", "r"]


def test_common_prefix_leaves_every_member_a_token_of_its_own():
    assert common_prefix([[1, 2, 3, 4], [1, 2, 3, 5]]) == 3
    assert common_prefix([[1, 2, 3], [1, 2, 3, 4]]) == 2
    assert common_prefix([[1, 2], [3, 4]]) == 0


def test_packs_store_the_prefix_once_and_split_at_the_token_budget():
    packs = pack_shared_prefixes(TOKEN_IDS, KEYS, max_tokens=64)
    assert [p.members for p in packs] == [[0, 1, 2], [3, 4, 5], [6]]
    first = packs[0]
    assert first.prefix == 4 and len(first.ids) == 4 + 3 + 1 + 6
    for slot, member in enumerate(first.members):
        assert [first.ids[i] for i in first.member_index(slot)] == TOKEN_IDS[member]
        assert [first.positions[i] for i in first.member_index(slot)] == list(range(len(TOKEN_IDS[member])))
    split = pack_shared_prefixes(TOKEN_IDS, KEYS, max_tokens=10)
    assert [p.members for p in split] == [[0, 1], [2], [3, 4], [5], [6]]
    assert max(len(p.ids) for p in split if len(p.members) > 1) <= 10
    assert split[1].prefix == 0 and split[1].ids == TOKEN_IDS[2]


def test_a_member_sees_the_prefix_and_itself_only():
    pack = pack_shared_prefixes(TOKEN_IDS[:3], KEYS[:3], max_tokens=64)[0]
    mask = packed_inputs([pack], pad_id=0)["attention_mask"][0, 0]
    second = pack.member_index(1)
    last = second[-1]
    assert mask[last].nonzero().flatten().tolist() == second
    with pytest.raises(ValueError, match="sdpa or eager"):
        packed_inputs([pack], pad_id=0, attention="flash_attention_2")


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_states_equal_each_conversation_run_alone(tiny_backbone, attention):
    decoder = load_decoder(str(tiny_backbone), max(LAYERS))
    decoder.config._attn_implementation = attention
    finals, tokens = {}, {}
    for batch, batch_finals, batch_tokens in iter_final_token_states(
        decoder, TOKEN_IDS, LAYERS, batch_tokens=64, pad_id=0, token_layers=[1], keys=KEYS
    ):
        for row, index in enumerate(batch):
            finals[index] = batch_finals[2][row]
            tokens[index] = batch_tokens[1][row]
    assert sorted(finals) == list(range(len(TOKEN_IDS)))
    for index, ids in enumerate(TOKEN_IDS):
        alone = hidden_states(decoder, torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), LAYERS)
        torch.testing.assert_close(finals[index], alone[2][0, -1], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(tokens[index], alone[1][0], rtol=1e-5, atol=1e-5)
