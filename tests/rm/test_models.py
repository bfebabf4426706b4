import json
import shutil
from dataclasses import astuple

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoModel

from sarm.backbone import load_tokenizer
from sarm.batching import pad_right
from sarm.data.chat import tokenize_conversations
from sarm.rm.head_edits import HeadEditError, read_head_edits
from sarm.rm.models import (
    SARM,
    RewardModelError,
    VanillaRM,
    build_sarm,
    build_vanilla_rm,
    load_reward_model,
    random_sae_like,
    save_reward_model,
)
from sarm.sae.model import SAEConfig, TopKSAE

LAYER = 2


def conversations():
    return [
        [{"role": "user", "content": "what is one plus one"}, {"role": "assistant", "content": "two"}],
        [
            {"role": "user", "content": "define water"},
            {"role": "assistant", "content": "sorry I cannot help"},
        ],
        [
            {"role": "user", "content": "say yes"},
            {"role": "assistant", "content": "yes yes yes the answer is true"},
        ],
    ]


@pytest.fixture(scope="module")
def batch(tiny_backbone):
    tokenizer = load_tokenizer(str(tiny_backbone))
    return pad_right(tokenize_conversations(tokenizer, conversations()), tokenizer.pad_token_id)


@pytest.fixture
def sarm(tiny_backbone):
    torch.manual_seed(0)
    return build_sarm(str(tiny_backbone), LAYER, TopKSAE(32, SAEConfig(64, 4), seed=0)).eval()


def test_sarm_keeps_only_the_first_l_layers_and_no_final_norm(sarm):
    assert len(sarm.decoder.layers) == LAYER
    assert isinstance(sarm.decoder.norm, torch.nn.Identity)
    assert not [n for n, _ in sarm.named_parameters() if ".layers.2." in n or ".layers.3." in n]


def test_sarm_reads_layer_l_of_the_full_backbone(sarm, tiny_backbone, batch):
    input_ids, attention_mask = batch
    full = AutoModel.from_pretrained(str(tiny_backbone)).eval()
    with torch.no_grad():
        expected = full(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True
        ).hidden_states[LAYER]
        assert torch.allclose(sarm.residual(input_ids, attention_mask), expected, atol=1e-5)


def test_deeper_layer_weights_are_never_needed(tiny_backbone, tmp_path, batch):
    copy = tmp_path / "shallow"
    shutil.copytree(tiny_backbone, copy)
    weights = load_file(copy / "model.safetensors")
    kept = {k: v for k, v in weights.items() if not k.startswith(("model.layers.2.", "model.layers.3."))}
    assert len(kept) < len(weights)
    save_file(kept, str(copy / "model.safetensors"), metadata={"format": "pt"})
    torch.manual_seed(0)
    a = build_sarm(str(tiny_backbone), LAYER, TopKSAE(32, SAEConfig(64, 4), seed=0)).eval()
    torch.manual_seed(0)
    b = build_sarm(str(copy), LAYER, TopKSAE(32, SAEConfig(64, 4), seed=0)).eval()
    with torch.no_grad():
        assert torch.equal(a(*batch), b(*batch))


def test_sae_is_frozen_and_head_has_no_bias(sarm):
    assert not any(p.requires_grad for p in sarm.sae.parameters())
    assert sarm.head.bias is None and sarm.head.weight.shape == (1, 64)


def test_reward_is_sum_of_feature_contributions(sarm, batch):
    with torch.no_grad():
        rewards = sarm(*batch)
        contributions = sarm.contributions(*batch)
        latents = sarm.latents(*batch)
    assert torch.allclose(contributions.sum(-1), rewards, atol=1e-6)
    assert ((latents != 0).sum(-1) <= 4).all()  # TopK with k = 4
    assert torch.equal(contributions, latents * sarm.head.weight[0])


def test_reward_is_read_at_the_last_real_token_regardless_of_padding(sarm, batch):
    input_ids, attention_mask = batch
    shortest = int(attention_mask.sum(1).argmin())
    alone = attention_mask[shortest].sum()
    with torch.no_grad():
        in_batch = sarm(input_ids, attention_mask)[shortest]
        single = sarm(
            input_ids[shortest : shortest + 1, :alone], attention_mask[shortest : shortest + 1, :alone]
        )[0]
    assert torch.allclose(in_batch, single, atol=1e-5)


def test_token_latents_are_zero_at_padding_and_match_final_token_latents(sarm, batch):
    input_ids, attention_mask = batch
    with torch.no_grad():
        per_token = sarm.token_latents(input_ids, attention_mask)
        final = sarm.latents(input_ids, attention_mask)
    assert per_token.shape == (*input_ids.shape, 64)
    assert (per_token[attention_mask == 0] == 0).all()
    last = attention_mask.sum(1) - 1
    assert torch.allclose(per_token[torch.arange(len(last)), last], final, atol=1e-6)


def test_head_switches_pre_activations_and_zero_init(tiny_backbone, batch):
    sae = TopKSAE(32, SAEConfig(64, 4), seed=0)
    model = build_sarm(str(tiny_backbone), LAYER, sae, head_input="pre_activations", head_init="zero").eval()
    with torch.no_grad():
        states = model.final_states(*batch)
        assert torch.equal(model.features(states), sae.pre_activations(states))
        assert (model(*batch) == 0).all()
    with pytest.raises(ValueError, match="head_input"):
        build_sarm(str(tiny_backbone), LAYER, sae, head_input="dense")


def test_random_sae_like_keeps_shape_switches_and_input_scale_but_not_weights():
    pretrained = TopKSAE(32, SAEConfig(64, 4, relu=False, standardize_input=True), seed=0)
    pretrained.input_scale.fill_(3.5)
    random = random_sae_like(pretrained, seed=7)
    assert (random.d_model, *astuple(random.cfg)) == (
        32,
        64,
        4,
        False,
        True,
    )
    assert random.input_scale.item() == 3.5
    assert not torch.equal(random.encoder.weight, pretrained.encoder.weight)
    assert torch.equal(random_sae_like(pretrained, seed=7).encoder.weight, random.encoder.weight)


def test_vanilla_rm_at_full_depth_reads_through_the_final_norm(tiny_backbone, batch):
    input_ids, attention_mask = batch
    model = build_vanilla_rm(str(tiny_backbone), 4).eval()
    full = AutoModel.from_pretrained(str(tiny_backbone)).eval()
    with torch.no_grad():
        normed = full(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        last = normed[torch.arange(len(input_ids)), attention_mask.sum(1) - 1]
        assert torch.allclose(model(input_ids, attention_mask), last @ model.head.weight[0], atol=1e-5)
    assert isinstance(build_vanilla_rm(str(tiny_backbone), LAYER).final_norm, torch.nn.Identity)


def test_frozen_backbone_save_keeps_only_head_and_sae_and_roundtrips(sarm, tmp_path, batch):
    save_reward_model(sarm, tmp_path / "rm")
    config = json.loads((tmp_path / "rm" / "reward_model.json").read_text())
    assert config["backbone_weights"] == "source" and config["layer"] == LAYER and config["kind"] == "sarm"
    with safe_open(str(tmp_path / "rm" / "reward_model.safetensors"), framework="pt") as f:
        assert list(f.keys()) == ["head.weight"]
    loaded = load_reward_model(tmp_path / "rm")
    assert isinstance(loaded, SARM) and not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(*batch), sarm(*batch))


def test_trained_backbone_weights_are_stored_and_restored(sarm, tmp_path, batch):
    with torch.no_grad():
        sarm.decoder.layers[0].mlp.down_proj.weight.mul_(1.5)
    sarm.trained_parts = {"head", "backbone"}
    save_reward_model(sarm, tmp_path / "rm")
    loaded = load_reward_model(tmp_path / "rm")
    assert json.loads((tmp_path / "rm" / "reward_model.json").read_text())["backbone_weights"] == "stored"
    with torch.no_grad():
        assert torch.equal(loaded(*batch), sarm(*batch))
    head_only = load_reward_model(tmp_path / "rm", with_backbone=False)
    assert head_only.decoder is None
    with pytest.raises(RuntimeError, match="without its backbone"):
        head_only(*batch)


def test_head_edits_scale_and_shift_weights_at_load_time(sarm, tmp_path):
    save_reward_model(sarm, tmp_path / "rm")
    spec = tmp_path / "edits.yaml"
    spec.write_text("- {feature: 3, scale: 2.0}\n- {feature: 5, shift: 0.25}\n")
    edited = load_reward_model(tmp_path / "rm", head_edits=spec)
    w, w0 = edited.head.weight[0], sarm.head.weight[0]
    assert w[3] == w0[3] * 2.0 and w[5] == w0[5] + 0.25
    others = [i for i in range(64) if i not in (3, 5)]
    assert torch.equal(w[others], w0[others])
    json_spec = tmp_path / "edits.json"
    json_spec.write_text(json.dumps({"edits": [{"feature": 3, "scale": 0.0}]}))
    assert load_reward_model(tmp_path / "rm", head_edits=json_spec).head.weight[0, 3] == 0


def test_head_edit_leaves_reward_bit_identical_where_the_feature_is_inactive(sarm, tmp_path, batch):
    with torch.no_grad():
        latents = sarm.latents(*batch)
    inactive = int((latents == 0).all(0).nonzero()[0])
    save_reward_model(sarm, tmp_path / "rm")
    edited = load_reward_model(tmp_path / "rm", head_edits=[{"feature": inactive, "scale": 10.0}])
    with torch.no_grad():
        assert torch.equal(edited(*batch), sarm(*batch))


@pytest.mark.parametrize(
    "spec, message",
    [
        ([{"feature": 1, "scale": 2, "bias": 1}], "unknown key"),
        ([{"feature": "a", "scale": 2}], "integer"),
        ([{"scale": 2}], "feature"),
        ([{"feature": 1}], "neither"),
        ({"feature": 1}, "expected a list"),
    ],
)
def test_bad_head_edits_are_named(spec, message):
    with pytest.raises(HeadEditError, match=message):
        read_head_edits(spec)


def test_head_edit_outside_the_head_is_rejected(sarm, tmp_path):
    save_reward_model(sarm, tmp_path / "rm")
    with pytest.raises(HeadEditError, match="outside 0..63"):
        load_reward_model(tmp_path / "rm", head_edits=[{"feature": 64, "scale": 2.0}])


def test_load_names_a_folder_without_a_model(tmp_path):
    with pytest.raises(RewardModelError, match="reward_model.json is missing"):
        load_reward_model(tmp_path)


def test_vanilla_rm_roundtrip(tiny_backbone, tmp_path, batch):
    model = build_vanilla_rm(str(tiny_backbone), 4).eval()
    save_reward_model(model, tmp_path / "vanilla")
    loaded = load_reward_model(tmp_path / "vanilla")
    assert isinstance(loaded, VanillaRM)
    with torch.no_grad():
        assert torch.equal(loaded(*batch), model(*batch))
