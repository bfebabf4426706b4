import csv
import math
import signal

import pytest
import torch
import yaml

from sarm.backbone import hidden_states, load_decoder, load_tokenizer
from sarm.batching import pad_right, token_budget_batches
from sarm.data.chat import tokenize_conversations
from sarm.data.records import PreferencePair
from sarm.rm.bradley_terry import (
    BTTrainConfig,
    bradley_terry_loss,
    encoded_once,
    global_batch_indices,
    pairwise_accuracy,
    steps_per_epoch,
    train_reward_model,
)
from sarm.rm.final_states import final_token_states, load_final_token_states
from sarm.rm.models import SARM, LinearEncoder, build_sarm, load_reward_model
from sarm.rm.pairs import CachedPairs, pair_conversations, tokenize_pairs
from sarm.runtime import Preempted
from sarm.sae.model import SAEConfig, TopKSAE
from tests.conftest import REPO

LAYER = 2


def toy_pairs(n: int) -> list[PreferencePair]:
    good = ["yes the answer is true", "the sum is two", "water means light"]
    bad = ["sorry I cannot help", "no", "false false"]
    return [
        PreferencePair(
            chosen=[
                {"role": "user", "content": f"question {i}"},
                {"role": "assistant", "content": good[i % 3]},
            ],
            rejected=[
                {"role": "user", "content": f"question {i}"},
                {"role": "assistant", "content": bad[i % 3]},
            ],
        )
        for i in range(n)
    ]


def tiny_sarm(source):
    torch.manual_seed(0)
    # A random (not zero) head, so that the backbone gets a gradient from the first step on.
    return build_sarm(str(source), LAYER, TopKSAE(32, SAEConfig(64, 4), seed=0), head_init="normal")


def read_log(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_bradley_terry_loss_values():
    assert bradley_terry_loss(torch.tensor([0.0]), torch.tensor([0.0])).item() == pytest.approx(math.log(2))
    assert bradley_terry_loss(torch.tensor([2.0]), torch.tensor([0.0])).item() == pytest.approx(
        math.log1p(math.exp(-2))
    )
    pair_mean = bradley_terry_loss(torch.tensor([2.0, -1.0]), torch.tensor([0.0, 0.0])).item()
    assert pair_mean == pytest.approx((math.log1p(math.exp(-2)) + math.log1p(math.exp(1))) / 2)


def test_bradley_terry_loss_pushes_chosen_up_and_rejected_down():
    chosen, rejected = torch.zeros(3, requires_grad=True), torch.zeros(3, requires_grad=True)
    bradley_terry_loss(chosen, rejected).backward()
    assert (chosen.grad < 0).all() and (rejected.grad > 0).all()


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="`schedule`"):
        BTTrainConfig(schedule="step")
    with pytest.raises(ValueError, match="`global_batch`"):
        BTTrainConfig(global_batch=0)
    with pytest.raises(ValueError, match="`training.lrr`"):
        BTTrainConfig.from_mapping({"lrr": 1.0})


def test_every_pair_is_used_once_per_epoch_in_the_same_batches_for_any_world_size():
    cfg = BTTrainConfig(global_batch=4, seed=3)
    one = [global_batch_indices(10, cfg, step, world=1) for step in range(steps_per_epoch(10, 4, 1))]
    two = [global_batch_indices(10, cfg, step, world=2) for step in range(steps_per_epoch(10, 4, 2))]
    assert sorted(i for b in one for i in b) == list(range(10))
    assert one == two  # the remainder of 2 splits evenly over 2 processes
    assert steps_per_epoch(9, 4, 2) == 2  # a remainder of 1 cannot feed 2 processes
    assert global_batch_indices(10, cfg, 3, world=1) != one[0]  # epoch 2 is reshuffled


def test_token_budget_batches_stay_within_budget_and_cover_everything():
    lengths = [5, 1, 9, 3, 3, 7, 2]
    batches = token_budget_batches(lengths, 10)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 10


def test_tokenize_truncates_from_the_left_and_keeps_the_final_token(tiny_backbone):
    tokenizer = load_tokenizer(str(tiny_backbone))
    conversation = toy_pairs(1)[0].chosen
    full = tokenize_conversations(tokenizer, [conversation])[0]
    cut = tokenize_conversations(tokenizer, [conversation], max_length=5)[0]
    assert cut == full[-5:]
    assert (
        full[0] == tokenizer.convert_tokens_to_ids("<|im_start|>") and full.count(full[0]) == 2
    )  # no doubled BOS


def test_final_token_states_match_the_model_and_resume_by_chunk(tiny_backbone, tmp_path):
    tokenizer = load_tokenizer(str(tiny_backbone))
    decoder = load_decoder(str(tiny_backbone), 3)
    conversations = [p.chosen for p in toy_pairs(7)]
    calls = []

    class FailingAfter(torch.nn.Module):
        def __init__(self, inner, limit):
            super().__init__()
            self.inner, self.config, self.limit = inner, inner.config, limit

        def forward(self, **kwargs):
            calls.append(kwargs["input_ids"].shape[0])
            if len(calls) > self.limit:
                raise RuntimeError("killed")
            return self.inner(**kwargs)

    out = tmp_path / "states.safetensors"
    with pytest.raises(RuntimeError, match="killed"):
        final_token_states(
            FailingAfter(decoder, 2), tokenizer, conversations, [1, 3], 1000, out, chunk_size=3
        )
    assert not out.exists() and len(list((tmp_path / "states.safetensors.parts").glob("chunk*"))) == 2
    calls.clear()
    final_token_states(FailingAfter(decoder, 99), tokenizer, conversations, [1, 3], 1000, out, chunk_size=3)
    assert sum(calls) == 1  # only the last chunk (one conversation) was computed again
    assert not (tmp_path / "states.safetensors.parts").exists()

    input_ids, attention_mask = pad_right(
        tokenize_conversations(tokenizer, conversations), tokenizer.pad_token_id
    )
    last = attention_mask.sum(1) - 1
    with torch.no_grad():
        expected = hidden_states(decoder, input_ids, attention_mask, [1, 3])
    for layer in (1, 3):
        assert torch.allclose(
            load_final_token_states(out, layer), expected[layer][torch.arange(7), last], atol=1e-5
        )
    with pytest.raises(KeyError, match="layer 2"):
        load_final_token_states(out, 2)


def test_full_training_changes_backbone_and_head_but_not_the_frozen_sae(tiny_backbone, tmp_path):
    model = tiny_sarm(tiny_backbone)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tokenizer = load_tokenizer(str(tiny_backbone))
    data = tokenize_pairs(tokenizer, toy_pairs(8))
    cfg = BTTrainConfig(lr=1e-2, epochs=1, global_batch=4, micro_batch=2)
    train_reward_model(model, data, cfg, tmp_path / "rm")
    after = model.state_dict()
    for name in before:
        if name.startswith("sae."):
            assert torch.equal(before[name], after[name]), name
    assert not torch.equal(before["head.weight"], after["head.weight"])
    assert not torch.equal(
        before["decoder.layers.0.mlp.up_proj.weight"], after["decoder.layers.0.mlp.up_proj.weight"]
    )
    assert load_reward_model(tmp_path / "rm").trained_parts == {"backbone", "head"}
    assert not (tmp_path / "rm" / "checkpoint.pt").exists()


def learnable_states(n: int, sae: TopKSAE, seed: int, good: int = 5, bad: int = 9) -> CachedPairs:
    """Chosen states push SAE latent `good` up, rejected ones latent `bad`: a head can tell them apart."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(2, n, sae.d_model, generator=g)
    return CachedPairs(
        chosen=base[0] + 4 * sae.W_dec[good].detach(), rejected=base[1] + 4 * sae.W_dec[bad].detach()
    )


def test_head_only_training_on_cached_states_learns_a_learnable_preference(tmp_path):
    sae = TopKSAE(32, SAEConfig(64, 4), seed=0)
    torch.manual_seed(0)
    model = build_sarm("unused", LAYER, sae, head_init="normal", with_backbone=False)
    # The initial head prefers the rejected side's latent, so training has to turn the preference around.
    weight = model.head.weight[0]
    good, bad = int(weight.argmin()), int(weight.argmax())
    train, heldout = learnable_states(200, sae, 1, good, bad), learnable_states(100, sae, 2, good, bad)
    encoder_before = sae.encoder.weight.clone()
    _, accuracy_before = pairwise_accuracy(model, heldout, batch_size=64)
    cfg = BTTrainConfig(
        lr=0.05, epochs=5, global_batch=50, micro_batch=25, train_backbone=False, eval_every=1
    )
    train_reward_model(model, train, cfg, tmp_path / "rm", heldout=heldout)
    rows = read_log(tmp_path / "rm" / "train_log.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 21))
    assert accuracy_before < 0.3 and float(rows[-1]["heldout_accuracy"]) > 0.95
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert torch.equal(sae.encoder.weight, encoder_before)


@pytest.mark.parametrize("head_input", ["topk", "pre_activations"])
def test_head_only_training_encodes_cached_states_once_with_the_same_result(
    tmp_path, monkeypatch, head_input
):
    sae = TopKSAE(32, SAEConfig(64, 4), seed=0)
    train, heldout = learnable_states(96, sae, 1), learnable_states(32, sae, 2)
    cfg = BTTrainConfig(lr=0.05, epochs=4, global_batch=32, micro_batch=16, train_backbone=False)
    encoded_rows = []
    features = SARM.features
    monkeypatch.setattr(
        SARM, "features", lambda self, states: encoded_rows.append(len(states)) or features(self, states)
    )

    def trained(name):
        encoded_rows.clear()
        torch.manual_seed(0)
        model = build_sarm(
            "unused", LAYER, sae, head_input=head_input, head_init="normal", with_backbone=False
        )
        train_reward_model(model, train, cfg, tmp_path / name, heldout=heldout)
        return model, sum(encoded_rows), read_log(tmp_path / name / "train_log.csv")

    once, once_rows, once_log = trained("once")
    monkeypatch.setattr("sarm.rm.bradley_terry.MAX_ENCODED_BYTES", 0)  # too big to hold: encode every step
    every_step, every_step_rows, every_step_log = trained("every_step")
    assert once_rows == 2 * (len(train) + len(heldout)) < every_step_rows
    assert torch.allclose(once.head.weight, every_step.head.weight, atol=1e-6)
    rewards = [model.rewards_from_states(heldout.chosen) for model in (once, every_step)]
    assert torch.allclose(*rewards, atol=1e-5)
    for column in ("loss", "train_accuracy", "heldout_loss", "heldout_accuracy"):
        logged = [[float(row[column] or "nan") for row in log] for log in (once_log, every_step_log)]
        assert logged[0] == pytest.approx(logged[1], abs=1e-5, nan_ok=True)


def test_encoding_once_is_only_for_a_frozen_encoder(tmp_path):
    sae = TopKSAE(32, SAEConfig(64, 4), seed=0)
    data = learnable_states(8, sae, 0)
    random_init = build_sarm("unused", LAYER, LinearEncoder(32, 64, seed=0), with_backbone=False)
    random_init.trained_parts = {"head", "encoder"}  # the paper's random-init ablation trains its encoder
    assert encoded_once(random_init, data, torch.device("cpu")) is data
    frozen = build_sarm("unused", LAYER, sae, with_backbone=False)
    frozen.trained_parts = {"head"}
    encoded = encoded_once(frozen, data, torch.device("cpu"))
    assert torch.equal(encoded.chosen, frozen.features(data.chosen))


def test_cached_states_cannot_train_the_backbone(tmp_path):
    sae = TopKSAE(32, SAEConfig(64, 4), seed=0)
    model = build_sarm("unused", LAYER, sae, with_backbone=False)
    with pytest.raises(ValueError, match="train_backbone"):
        train_reward_model(model, learnable_states(8, sae, 0), BTTrainConfig(global_batch=4), tmp_path)


def test_reconstruction_loss_unfreezes_and_trains_the_sae(tmp_path):
    sae = TopKSAE(32, SAEConfig(64, 4), seed=0)
    model = build_sarm("unused", LAYER, sae, with_backbone=False)
    before = sae.W_dec.clone()
    cfg = BTTrainConfig(
        lr=0.01, epochs=1, global_batch=8, micro_batch=4, train_backbone=False, recon_coef=1.0
    )
    train_reward_model(model, learnable_states(16, sae, 0), cfg, tmp_path / "rm")
    assert not torch.equal(sae.W_dec, before)
    assert float(read_log(tmp_path / "rm" / "train_log.csv")[0]["recon_loss"]) > 0
    assert load_reward_model(tmp_path / "rm", with_backbone=False).trained_parts == {"head", "sae"}


def test_every_schedule_the_config_schema_offers_is_accepted():
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    offered = schema["properties"]["reward_model"]["properties"]["schedule"]["enum"]
    assert "cosine" in offered
    for schedule in offered:
        assert BTTrainConfig(schedule=schedule).schedule == schedule


def test_cosine_schedule_with_warmup_gives_the_logged_learning_rates_of_the_formula(tmp_path):
    sae = TopKSAE(32, SAEConfig(64, 4), seed=0)
    model = build_sarm("unused", LAYER, sae, with_backbone=False)
    cfg = BTTrainConfig(
        lr=0.1,
        epochs=2,
        global_batch=4,
        micro_batch=4,
        train_backbone=False,
        schedule="cosine",
        warmup_ratio=0.25,
    )
    train_reward_model(model, learnable_states(20, sae, 0), cfg, tmp_path / "rm")
    total, warmup = 10, 3  # 5 steps per epoch x 2 epochs; ceil(0.25 * 10) warmup steps

    def rate(step: int) -> float:  # the learning rate of optimizer step `step` (0-based)
        if step < warmup:
            return 0.1 * step / warmup
        return 0.1 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))

    lrs = [float(r["lr"]) for r in read_log(tmp_path / "rm" / "train_log.csv")]
    assert lrs == pytest.approx([rate(step) for step in range(total)], abs=1e-12)


def test_weight_decay_shrinks_matrices_but_not_biases_or_norm_gains(tiny_backbone, tmp_path):
    """One AdamW step with and without decay: p <- p (1 - lr wd) - lr u, where u does not depend on wd."""
    lr, decay = 0.01, 0.5
    tokenizer = load_tokenizer(str(tiny_backbone))
    data = tokenize_pairs(tokenizer, toy_pairs(4))

    def one_step(weight_decay):
        model = tiny_sarm(tiny_backbone)  # backbone (norm gains) and SAE (biases) train with the head
        cfg = BTTrainConfig(
            lr=lr, epochs=1, global_batch=4, micro_batch=4, recon_coef=1.0, weight_decay=weight_decay
        )
        train_reward_model(model, data, cfg, tmp_path / str(weight_decay))
        return {name: p.detach() for name, p in model.named_parameters()}

    before = {name: p.detach().clone() for name, p in tiny_sarm(tiny_backbone).named_parameters()}
    plain, decayed = one_step(0.0), one_step(decay)
    trained = [name for name in before if not torch.equal(plain[name], before[name])]
    vectors = [name for name in trained if before[name].ndim == 1]
    assert any("layernorm" in name for name in vectors), trained
    assert any(name.endswith(("bias", "b_pre")) for name in vectors), trained
    assert "head.weight" in trained and "decoder.layers.0.mlp.up_proj.weight" in trained
    for name in trained:
        if name in vectors:
            assert torch.equal(decayed[name], plain[name]), f"{name} was decayed"
        else:
            shrink = plain[name] - decayed[name]
            assert torch.allclose(shrink, lr * decay * before[name], atol=1e-7), f"{name} was not decayed"


def test_sigterm_checkpoints_and_resume_gives_identical_weights(tiny_backbone, tmp_path):
    tokenizer = load_tokenizer(str(tiny_backbone))
    data = tokenize_pairs(tokenizer, toy_pairs(12))
    cfg = BTTrainConfig(
        lr=1e-2, epochs=2, global_batch=4, micro_batch=2, checkpoint_every=100, weight_decay=0.01
    )

    reference = tiny_sarm(tiny_backbone)
    train_reward_model(reference, data, cfg, tmp_path / "uninterrupted")

    def terminate_at_step_2(step):
        if step == 2:
            signal.raise_signal(signal.SIGTERM)

    interrupted = tiny_sarm(tiny_backbone)
    with pytest.raises(Preempted) as stopped:
        train_reward_model(interrupted, data, cfg, tmp_path / "resumed", on_step=terminate_at_step_2)
    assert stopped.value.step == 2 and stopped.value.code == 143
    assert (tmp_path / "resumed" / "checkpoint.pt").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is removed again

    resumed = tiny_sarm(tiny_backbone)  # a fresh process would start from the untrained model
    train_reward_model(resumed, data, cfg, tmp_path / "resumed")
    for name, value in reference.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    rows = read_log(tmp_path / "resumed" / "train_log.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 7))
    assert rows == read_log(tmp_path / "uninterrupted" / "train_log.csv")


def test_resume_refuses_a_checkpoint_of_a_different_config(tiny_backbone, tmp_path):
    tokenizer = load_tokenizer(str(tiny_backbone))
    data = tokenize_pairs(tokenizer, toy_pairs(8))
    cfg = BTTrainConfig(lr=1e-2, epochs=2, global_batch=4, micro_batch=4)

    def stop(step):
        signal.raise_signal(signal.SIGTERM)

    with pytest.raises(Preempted):
        train_reward_model(tiny_sarm(tiny_backbone), data, cfg, tmp_path, on_step=stop)
    with pytest.raises(ValueError, match=r"other settings \(`lr`: saved 0.01, requested 0.001\)"):
        train_reward_model(
            tiny_sarm(tiny_backbone), data, BTTrainConfig(lr=1e-3, epochs=2, global_batch=4), tmp_path
        )


def test_crash_between_checkpoints_resumes_from_the_last_one_with_identical_weights(tiny_backbone, tmp_path):
    tokenizer = load_tokenizer(str(tiny_backbone))
    data = tokenize_pairs(tokenizer, toy_pairs(12))
    cfg = BTTrainConfig(lr=1e-2, epochs=2, global_batch=4, micro_batch=4, checkpoint_every=2)
    reference = tiny_sarm(tiny_backbone)
    train_reward_model(reference, data, cfg, tmp_path / "uninterrupted")

    def crash_at_step_3(step):
        if step == 3:
            raise KeyboardInterrupt  # stands in for SIGKILL / a node failure: no chance to checkpoint

    with pytest.raises(KeyboardInterrupt):
        train_reward_model(tiny_sarm(tiny_backbone), data, cfg, tmp_path / "crashed", on_step=crash_at_step_3)
    assert len(read_log(tmp_path / "crashed" / "train_log.csv")) == 3  # step 3 was logged, not checkpointed
    resumed = tiny_sarm(tiny_backbone)
    train_reward_model(resumed, data, cfg, tmp_path / "crashed")
    for name, value in reference.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    assert read_log(tmp_path / "crashed" / "train_log.csv") == read_log(
        tmp_path / "uninterrupted" / "train_log.csv"
    )


def test_head_trained_on_cached_states_scores_text_the_same_after_loading(tiny_backbone, tmp_path):
    tokenizer = load_tokenizer(str(tiny_backbone))
    pairs = toy_pairs(6)
    decoder = load_decoder(str(tiny_backbone), LAYER)
    path = final_token_states(
        decoder, tokenizer, pair_conversations(pairs), [LAYER], 512, tmp_path / "s.safetensors"
    )
    cached = CachedPairs.from_states(load_final_token_states(path, LAYER))
    assert len(cached) == 6
    torch.manual_seed(0)
    model = build_sarm(str(tiny_backbone), LAYER, TopKSAE(32, SAEConfig(64, 4), seed=0), with_backbone=False)
    cfg = BTTrainConfig(lr=0.05, epochs=2, global_batch=3, micro_batch=3, train_backbone=False)
    train_reward_model(model, cached, cfg, tmp_path / "rm")
    loaded = load_reward_model(tmp_path / "rm")
    assert loaded.trained_parts == {"head"}
    with torch.no_grad():
        from_text = loaded(
            *pad_right(tokenize_conversations(tokenizer, [p.chosen for p in pairs]), tokenizer.pad_token_id)
        )
        assert torch.allclose(from_text, model.rewards_from_states(cached.chosen), atol=1e-5)
