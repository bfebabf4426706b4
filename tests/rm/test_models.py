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


def _learnable_states(n: int, sae: TopKSAE, seed: int, good: int = 5, bad: int = 9):
    """Chosen states carry SAE latent `good`, rejected ones latent `bad`."""
    from sarm.rm.pairs import CachedPairs

    g = torch.Generator().manual_seed(seed)
    base = torch.randn(2, n, sae.d_model, generator=g)
    return CachedPairs(base[0] + 4 * sae.W_dec[5].detach(), base[1] + 4 * sae.W_dec[9].detach())


def test_sarm_head_starts_at_zero_so_trained_signs_follow_the_data_not_the_init_seed(tmp_path):
    """Paper recipe (lr 4e-6, 3 epochs): a weight moves by ~1e-5, far less than a normal(0.02) init, so only a
    zero start (the authors' code) lets the signs of w say which features raise the reward."""
    from sarm.rm.bradley_terry import BTTrainConfig, train_reward_model

    sae = TopKSAE(32, SAEConfig(64, 4), seed=0)
    data = _learnable_states(96, sae, seed=1)
    heads = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = build_sarm("unused", LAYER, sae, with_backbone=False)
        assert (model.head_weight() == 0).all()
        cfg = BTTrainConfig(
            train_backbone=False, global_batch=32, micro_batch=32
        )  # the paper's lr and epochs
        train_reward_model(model, data, cfg, tmp_path / f"seed{seed}")
        heads.append(model.head_weight().detach().clone())
    assert torch.equal(heads[0], heads[1])
    with torch.no_grad():
        preference = (sae.encode(data.chosen) - sae.encode(data.rejected)).mean(0)
    top = heads[0].abs().topk(6).indices
    assert (heads[0][top].sign() == preference[top].sign()).all()
    assert heads[0][5] > 0 > heads[0][9]
    # the vanilla RM keeps the normal init of a sequence-classification head
    vanilla = VanillaRM(None, backbone_source="unused", layer=LAYER, hidden_size=32, final_norm=None)
    assert vanilla.head_weight().std() > 0.005


def test_random_encoder_is_the_papers_trained_linear_layer_with_bias(tiny_backbone, tmp_path, batch):
    """Table 2: a randomly initialised nn.Linear(d, M) with bias, trained with the head, no TopK, no input
    normalisation (the authors' code); `random_topk` keeps the frozen random TopK SAE variant."""
    from sarm.rm.bradley_terry import BTTrainConfig, train_reward_model
    from sarm.rm.launch import RewardModelJob, build_model
    from sarm.rm.models import LinearEncoder

    def job(encoder, **kwargs):
        return RewardModelJob(
            backbone=str(tiny_backbone),
            layer=LAYER,
            encoder=encoder,
            out_dir=str(tmp_path / encoder),
            preferences={},
            reward_model={},
            states="cached.safetensors",
            **kwargs,
        )

    model = build_model(job("random", latents=64))
    encoder = model.sae
    assert isinstance(encoder, LinearEncoder) and encoder.linear.bias is not None
    assert (encoder.linear.in_features, encoder.linear.out_features) == (32, 64)
    x = torch.randn(5, 32) * 3 + 1
    with torch.no_grad():
        assert torch.allclose(model.features(x), x @ encoder.linear.weight.T + encoder.linear.bias)
        assert ((model.features(x) != 0).sum(-1) == 64).all()  # dense: no TopK
    weight_before = encoder.linear.weight.detach().clone()
    data = _learnable_states(16, TopKSAE(32, SAEConfig(64, 4), seed=0), seed=0)
    cfg = BTTrainConfig(lr=1e-2, epochs=2, global_batch=8, micro_batch=8, train_backbone=False)
    train_reward_model(model, data, cfg, tmp_path / "random")
    assert not torch.equal(encoder.linear.weight, weight_before)  # trained, unlike an SAE encoder
    assert model.trained_parts == {"head", "encoder"}
    loaded = load_reward_model(tmp_path / "random", with_backbone=False)
    assert isinstance(loaded.sae, LinearEncoder)
    with torch.no_grad():
        assert torch.equal(loaded.rewards_from_states(data.chosen), model.rewards_from_states(data.chosen))

    TopKSAE(32, SAEConfig(64, 4), seed=3).save(tmp_path / "sae")
    frozen = build_model(job("random_topk", sae_dir=str(tmp_path / "sae")))
    assert isinstance(frozen.sae, TopKSAE) and not frozen.trains_encoder
    assert not torch.equal(frozen.sae.encoder.weight, TopKSAE.load(tmp_path / "sae").encoder.weight)


def test_config_names_both_random_variants_and_only_random_topk_reads_an_sae():
    from sarm.config import experiment_run

    config = {
        "backbones": {"b": {"source": "x", "num_layers": 4, "hidden_size": 32}},
        "sae": {"latents": "2x", "k": 4},
        "experiments": {
            "paper": {"backbone": "b", "layer": 2, "encoder": "random"},
            "frozen": {"backbone": "b", "layer": 2, "encoder": "random_topk"},
            "punct": {"backbone": "b", "layer": 2, "level": "sequence_punct"},
        },
    }
    runs = {name: experiment_run(config, name) for name in config["experiments"]}
    assert runs["paper"].variant == "sarm_random_m64_k4" and runs["paper"].sae_level is None
    assert runs["frozen"].variant == "sarm_random_topk_m64_k4" and runs["frozen"].sae_level is None
    assert runs["punct"].sae_level == "sequence_punct"


def test_the_paper_preset_trains_on_every_pair(tiny_backbone, monkeypatch):
    """`reward_model.heldout_fraction` defaults to 0 (the paper trains on all of Skywork)."""
    import sarm.rm.launch as launch
    from sarm.rm.bradley_terry import BTTrainConfig

    job = launch.RewardModelJob(str(tiny_backbone), LAYER, "vanilla", "out", {}, {}, states="s")
    assert job.reward_model["heldout_fraction"] == 0
    monkeypatch.setattr(launch, "load_final_token_states", lambda path, layer: torch.randn(100, 32))
    train, heldout = launch.training_data(job, BTTrainConfig(train_backbone=False))
    assert len(train) == 50 and heldout is None


LLAMA3_DATE_TEMPLATE = (
    "{% if date_string is not defined %}{% set date_string = strftime_now('%d %b %Y') %}{% endif %}"
    "<|system|>Today Date: {{ date_string }}\n"
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|eot|>{% endfor %}"
)


def test_prompts_carry_a_fixed_date_not_todays(tiny_backbone, tmp_path, monkeypatch):
    """Llama-3 templates write strftime_now(...) when no date_string is passed: training and evaluation on
    different days would see different tokens. Every conversation gets the fixed `date_string`."""
    import datetime

    import sarm.rm.final_states as final_states
    from sarm.data.chat import DEFAULT_DATE_STRING, format_conversation

    tokenizer = load_tokenizer(str(tiny_backbone))
    tokenizer.chat_template = LLAMA3_DATE_TEMPLATE
    text = format_conversation(tokenizer, conversations()[0])
    today = datetime.datetime.now().strftime("%d %b %Y")
    assert f"Today Date: {DEFAULT_DATE_STRING}" in text and (
        today == DEFAULT_DATE_STRING or today not in text
    )
    assert tokenize_conversations(tokenizer, conversations(), date_string="01 Jan 2030") != (
        tokenize_conversations(tokenizer, conversations())
    )

    # The date is in the final-state cache's fingerprint: chunks cached under one date are not reused
    # by a run with another.
    decoder = AutoModel.from_pretrained(str(tiny_backbone))
    real = final_states.iter_final_token_states

    def crash_after_one_chunk(*args, **kwargs):
        if list((tmp_path / "a.safetensors.parts").glob("chunk*")):
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(final_states, "iter_final_token_states", crash_after_one_chunk)
    with pytest.raises(KeyboardInterrupt):
        final_states.final_token_states(
            decoder, tokenizer, conversations(), [LAYER], 512, tmp_path / "a.safetensors", chunk_size=1
        )
    monkeypatch.setattr(final_states, "iter_final_token_states", real)
    later = {"date_string": "01 Jan 2030", "chunk_size": 1}
    final_states.final_token_states(
        decoder, tokenizer, conversations(), [LAYER], 512, tmp_path / "a.safetensors", **later
    )
    final_states.final_token_states(
        decoder, tokenizer, conversations(), [LAYER], 512, tmp_path / "b.safetensors", **later
    )
    resumed, fresh = (load_file(tmp_path / f"{n}.safetensors")[f"layer{LAYER}"] for n in "ab")
    assert torch.equal(resumed, fresh)


def test_reconstruction_over_the_last_assistant_turn_is_the_masked_normalised_mse(tiny_backbone, tmp_path):
    """The authors' mode 3: the SAE reconstructs every token of the last assistant turn (header excluded,
    end-of-turn included), each conversation weighted by the mean over its turn."""
    from sarm.data.chat import last_turn_starts
    from sarm.data.records import PreferencePair
    from sarm.rm.bradley_terry import BTTrainConfig, _micro_batch, train_reward_model
    from sarm.rm.pairs import tokenize_pairs

    tokenizer = load_tokenizer(str(tiny_backbone))
    convs = conversations()
    starts = last_turn_starts(tokenizer, convs)
    ids = tokenize_conversations(tokenizer, convs)
    for start, row, messages in zip(starts, ids, convs, strict=True):
        turn = tokenizer.decode(row[start:])
        assert turn.startswith(messages[-1]["content"])  # the turn's content, after its header
        assert messages[0]["content"] not in turn
    # left truncation moves the start with the cut
    assert last_turn_starts(tokenizer, convs, max_length=8) == [
        max(0, s - (len(r) - min(8, len(r)))) for s, r in zip(starts, ids, strict=True)
    ]

    pairs = [PreferencePair(convs[0], convs[1]), PreferencePair(convs[2], convs[1])]
    data = tokenize_pairs(tokenizer, pairs, last_turns=True)
    torch.manual_seed(0)
    model = build_sarm(str(tiny_backbone), LAYER, TopKSAE(32, SAEConfig(64, 4), seed=0))
    batch = _micro_batch(data, [0, 1], torch.device("cpu"))
    with torch.no_grad():
        hidden = model.residual(batch["input_ids"], batch["attention_mask"])
        expected = 0.0
        for row, mask in zip(hidden, batch["turn_mask"], strict=True):
            x = model.sae.normalize_input(row[mask])
            x_hat, _ = model.sae(row[mask])
            expected += ((x_hat - x).pow(2).sum(-1) / x.pow(2).sum(-1)).mean()
        assert model.reconstruction_loss(hidden, batch["turn_mask"]).item() == pytest.approx(
            float(expected), rel=1e-5
        )
    cfg = BTTrainConfig(
        lr=1e-3, epochs=1, global_batch=2, micro_batch=2, recon_coef=1.0, recon_tokens="assistant_turn"
    )
    train_reward_model(model, data, cfg, tmp_path / "rm")
    with pytest.raises(ValueError, match="last-turn starts"):
        train_reward_model(model, tokenize_pairs(tokenizer, pairs), cfg, tmp_path / "rm2")
