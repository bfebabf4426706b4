"""Activation sampling (matches a direct forward pass, resumes after a kill) and the streaming reader."""

import json
import random

import pytest
import torch
from safetensors.torch import load_file

from sarm.backbone import load_decoder, load_tokenizer
from sarm.sae.reader import MANIFEST_FILE
from sarm.sae.sampling import (
    PROGRESS_FILE,
    punctuation_token_ids,
    sample_activations,
    sample_levels,
    shard_path,
    write_activations,
)
from tests.tiny_llama import build_tiny_llama

WORDS = (
    "the a of and to in is was it for on that with as by this be are at from or an not have one two".split()
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    source = str(build_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama", num_layers=4))
    return load_decoder(source, 3), load_tokenizer(source)


@pytest.fixture(scope="module")
def sentences():
    rng = random.Random(0)
    made = []
    for _ in range(90):
        words = [rng.choice(WORDS) for _ in range(rng.randint(2, 25))]
        if rng.random() < 0.5:
            words.insert(rng.randint(1, len(words)), rng.choice([",", "!", ";"]))
        made.append(" ".join(words) + rng.choice([".", "?"]))
    return made


def stored(out_dir, layer):
    manifest = json.loads((out_dir / MANIFEST_FILE).read_text())
    return torch.cat([load_file(out_dir / s["files"][str(layer)])["activations"] for s in manifest["shards"]])


def direct_states(decoder, tokenizer, sentence, layer):
    ids = torch.tensor([tokenizer(sentence)["input_ids"]])
    with torch.no_grad():
        out = decoder(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True)
    return ids[0], out.hidden_states[layer][0]


@pytest.mark.parametrize("level", ["sequence", "token", "sequence_punct"])
def test_sampler_matches_a_direct_forward_pass_at_every_layer(tiny, sentences, tmp_path, level):
    decoder, tokenizer = tiny
    punct = set(punctuation_token_ids(tokenizer))
    manifest = sample_activations(
        decoder, tokenizer, sentences, layers=[3, 1], level=level, out_dir=tmp_path, shard_rows=64,
        storage_dtype=torch.float32, batch_tokens=200, chunk_sentences=32,
    )  # fmt: skip
    assert manifest["layers"] == [1, 3] and manifest["sentences"] == len(sentences)
    for layer in (1, 3):
        expected = []
        for sentence in sentences:
            ids, states = direct_states(decoder, tokenizer, sentence, layer)
            if level == "sequence":
                keep = [len(ids) - 1]
            elif level == "token":
                keep = list(range(len(ids)))
            else:
                keep = [i for i, t in enumerate(ids.tolist()) if t in punct or i == len(ids) - 1]
            expected.append(states[keep])
        expected = torch.cat(expected)
        assert manifest["rows"] == expected.shape[0]
        assert torch.allclose(stored(tmp_path, layer), expected, atol=1e-5)


def test_skip_first_tokens_drops_the_attention_sink_positions(tiny, sentences, tmp_path):
    decoder, tokenizer = tiny
    manifest = sample_activations(
        decoder, tokenizer, sentences, layers=[2], level="token", out_dir=tmp_path, skip_first_tokens=1,
        storage_dtype=torch.float32,
    )  # fmt: skip
    expected = torch.cat([direct_states(decoder, tokenizer, s, 2)[1][1:] for s in sentences])
    assert manifest["rows"] == manifest["tokens"] - len(sentences) == expected.shape[0]
    assert torch.allclose(stored(tmp_path, 2), expected, atol=1e-5)


def test_punctuation_level_adds_rows_for_commas(tiny, sentences, tmp_path):
    decoder, tokenizer = tiny
    assert tokenizer(",", add_special_tokens=False)["input_ids"][0] in punctuation_token_ids(tokenizer)
    common = dict(layers=[2], storage_dtype=torch.float32, chunk_sentences=32)
    plain = sample_activations(
        decoder, tokenizer, sentences, level="sequence", out_dir=tmp_path / "s", **common
    )
    punct = sample_activations(
        decoder, tokenizer, sentences, level="sequence_punct", out_dir=tmp_path / "p", **common
    )
    assert plain["rows"] == len(sentences) < punct["rows"]


def test_all_layers_come_from_one_forward_pass_per_batch(tiny, sentences, tmp_path):
    decoder, tokenizer = tiny
    calls = []
    handle = decoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        for name, layers in (("one", [2]), ("three", [1, 2, 3])):
            sample_activations(
                decoder, tokenizer, sentences, layers=layers, out_dir=tmp_path / name, batch_tokens=300
            )
            calls.append(name)
    finally:
        handle.remove()
    one, three = calls.index("one"), calls.index("three")
    assert one == three - one - 1  # same number of forward calls for 1 and 3 layers


def test_killed_sampling_resumes_at_the_next_shard_with_identical_files(tiny, sentences, tmp_path):
    decoder, tokenizer = tiny
    common = dict(layers=[1, 3], level="token", shard_rows=100, batch_tokens=256, chunk_sentences=10)
    sample_activations(decoder, tokenizer, sentences, out_dir=tmp_path / "whole", **common)

    def dying(limit):
        for index, sentence in enumerate(sentences):
            if index == limit:
                raise KeyboardInterrupt("killed")
            yield sentence

    with pytest.raises(KeyboardInterrupt):
        sample_activations(decoder, tokenizer, dying(55), out_dir=tmp_path / "resumed", **common)
    progress = json.loads((tmp_path / "resumed" / PROGRESS_FILE).read_text())
    assert 0 < progress["sentences"] < 55 and not (tmp_path / "resumed" / MANIFEST_FILE).exists()

    def forward_calls(sentence_iterable, out_dir):
        calls = []
        handle = decoder.register_forward_hook(lambda *_: calls.append(1))
        try:
            return sample_activations(decoder, tokenizer, sentence_iterable, out_dir=out_dir, **common), len(
                calls
            )
        finally:
            handle.remove()

    manifest, resumed_calls = forward_calls(iter(sentences), tmp_path / "resumed")
    whole = json.loads((tmp_path / "whole" / MANIFEST_FILE).read_text())
    assert manifest["shards"] == whole["shards"] and manifest["tokens"] == whole["tokens"]
    for shard in whole["shards"]:
        for name in shard["files"].values():
            assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    # only the sentences after the last written shard were run again
    _, rest_calls = forward_calls(sentences[progress["sentences"] :], tmp_path / "rest")
    assert resumed_calls == rest_calls


def same_files(left, right):
    """Every file of two sampling folders (manifests and shards; no progress file once complete), as bytes."""
    names = sorted(p.relative_to(left) for p in left.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(right) for p in right.rglob("*") if p.is_file())
    return all((left / name).read_bytes() == (right / name).read_bytes() for name in names)


SHARED = dict(layers=[1, 3], shard_rows=100, batch_tokens=256, chunk_sentences=10, skip_first_tokens=1)


def counting_forward_calls(decoder):
    calls = []
    return calls, decoder.register_forward_hook(lambda *_: calls.append(1))


def test_both_levels_from_one_pass_equal_separate_runs_byte_for_byte(tiny, sentences, tmp_path):
    decoder, tokenizer = tiny
    calls, handle = counting_forward_calls(decoder)
    try:
        for level in ("sequence", "token"):
            sample_activations(decoder, tokenizer, sentences, level=level, out_dir=tmp_path / level, **SHARED)
        separate = len(calls)
        out_dirs = {level: tmp_path / "joint" / level for level in ("sequence", "token")}
        manifests = sample_levels(decoder, tokenizer, sentences, out_dirs=out_dirs, **SHARED)
    finally:
        handle.remove()
    assert len(calls) - separate == separate // 2  # one pass instead of two
    assert manifests["sequence"]["rows"] == len(sentences) < manifests["token"]["rows"]
    for level in ("sequence", "token"):
        assert same_files(tmp_path / level, out_dirs[level])


def test_killed_joint_sampling_resumes_each_level_where_it_stopped(tiny, sentences, tmp_path):
    decoder, tokenizer = tiny
    for level in ("sequence", "token"):
        sample_activations(decoder, tokenizer, sentences, level=level, out_dir=tmp_path / level, **SHARED)

    def dying(limit):
        for index, sentence in enumerate(sentences):
            if index == limit:
                raise KeyboardInterrupt("killed")
            yield sentence

    out_dirs = {level: tmp_path / "joint" / level for level in ("sequence", "token")}
    with pytest.raises(KeyboardInterrupt):
        sample_levels(decoder, tokenizer, dying(55), out_dirs=out_dirs, **SHARED)
    progress = {level: out_dirs[level] / PROGRESS_FILE for level in out_dirs}
    # token shards fill every chunk, sequence shards every 10 chunks: the levels stopped at different points
    assert not progress["sequence"].exists()
    assert 0 < json.loads(progress["token"].read_text())["sentences"] <= 55
    sample_levels(decoder, tokenizer, iter(sentences), out_dirs=out_dirs, **SHARED)
    for level in ("sequence", "token"):
        assert same_files(tmp_path / level, out_dirs[level])


def test_rerun_with_other_settings_is_refused(tiny, sentences, tmp_path):
    decoder, tokenizer = tiny
    sample_activations(decoder, tokenizer, sentences[:10], layers=[2], out_dir=tmp_path)
    with pytest.raises(ValueError, match="other settings"):
        sample_activations(decoder, tokenizer, sentences[:10], layers=[2], level="token", out_dir=tmp_path)


def test_layer_deeper_than_the_truncated_decoder_is_an_error(tiny, sentences, tmp_path):
    decoder, tokenizer = tiny
    with pytest.raises(ValueError, match="load_decoder"):
        sample_activations(decoder, tokenizer, sentences, layers=[4], out_dir=tmp_path)


def test_write_activations_uses_the_sampler_layout(tmp_path):
    manifest = write_activations(tmp_path, {2: torch.randn(25, 3)}, shard_rows=10)
    assert [s["rows"] for s in manifest["shards"]] == [10, 10, 5]
    assert shard_path(tmp_path, 2, 2).is_file()
