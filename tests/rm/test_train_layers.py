"""`reward_model.train_layers: N`: the top N layers below the read layer train on per-token states cached at
layer l - N, and the saved folder is a normal reward model whose full backbone gives the same rewards."""

import json
import signal

import pytest
import torch
from safetensors.torch import load_file

from sarm.backbone import hidden_states, load_decoder, load_tokenizer
from sarm.batching import pad_right
from sarm.config import ConfigError, validate_config
from sarm.data.chat import tokenize_conversations
from sarm.data.rewardbench2 import completion_table
from sarm.data.specs import load_dataset_spec
from sarm.eval.score import score_completions, score_completions_from_token_states
from sarm.rm import launch
from sarm.rm.bradley_terry import BTTrainConfig, train_reward_model
from sarm.rm.final_states import final_token_states, load_final_token_states
from sarm.rm.models import build_sarm, load_reward_model
from sarm.rm.pairs import TokenStatePairs, pair_conversations, tokenize_pairs
from sarm.rm.token_states import load_token_states
from sarm.rm.train_layers import first_trained_layer, token_states_layer
from sarm.runtime import Preempted
from sarm.sae.model import SAEConfig, TopKSAE
from tests.conftest import REPO
from tests.rm.test_bradley_terry import toy_pairs

LAYER, N = 3, 2  # the tiny Llama has 4 layers: read layer 3, train layers 1 and 2, cache at layer 1
START = LAYER - N


def cache_token_states(decoder, tokenizer, conversations, batch_tokens, out, **kwargs):
    """Every token's state after all layers of `decoder`, as the rule cache_states stores it."""
    depth = decoder.config.num_hidden_layers
    return final_token_states(
        decoder, tokenizer, conversations, [], batch_tokens, out, token_layers=[depth], **kwargs
    )


def sarm(source):
    torch.manual_seed(0)
    # a random head, so that the backbone gets a gradient from the first step on
    return build_sarm(str(source), LAYER, TopKSAE(32, SAEConfig(64, 4), seed=0), head_init="normal")


def varied_pairs(n):
    """Pairs whose conversations differ in length, so that batches are padded."""
    pairs = toy_pairs(n)
    for i, pair in enumerate(pairs):
        pair.chosen[1]["content"] += " and the sum is two" * (i % 3)
    return pairs


@pytest.fixture(scope="module")
def cached(tiny_backbone, tmp_path_factory):
    pairs = varied_pairs(8)
    path = tmp_path_factory.mktemp("cache") / "preferences.safetensors"
    cache_token_states(
        load_decoder(str(tiny_backbone), START),
        load_tokenizer(str(tiny_backbone)),
        pair_conversations(pairs),
        200,
        path,
        chunk_size=5,
    )
    return pairs, TokenStatePairs.from_states(load_token_states(path, START)), path


CFG = dict(lr=1e-2, epochs=2, global_batch=4, micro_batch=2, train_layers=N)


@pytest.fixture(scope="module")
def trained(tiny_backbone, cached, tmp_path_factory):
    out = tmp_path_factory.mktemp("rm")
    model = sarm(tiny_backbone)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_reward_model(model, cached[1], BTTrainConfig(**CFG), out)
    return model, before, out


def text_batch(tokenizer, conversations):
    return pad_right(tokenize_conversations(tokenizer, conversations), tokenizer.pad_token_id)


def test_cached_states_are_every_tokens_state_at_the_layer(tiny_backbone, cached):
    pairs, data, _ = cached
    tokenizer = load_tokenizer(str(tiny_backbone))
    conversations = pair_conversations(pairs)
    input_ids, mask = text_batch(tokenizer, conversations)
    with torch.no_grad():
        expected = hidden_states(load_decoder(str(tiny_backbone), LAYER), input_ids, mask, [START])[START]
    lengths = mask.sum(1).tolist()
    assert data.states.lengths() == lengths and len(set(lengths)) > 1
    for i, length in enumerate(lengths):
        assert torch.allclose(data.states.sequence(i), expected[i, :length], atol=1e-5)


def test_one_pass_caches_final_token_states_and_every_tokens_state(tiny_backbone, cached, tmp_path):
    pairs, data, _ = cached
    decoder, tokenizer = load_decoder(str(tiny_backbone), LAYER + 1), load_tokenizer(str(tiny_backbone))
    conversations = pair_conversations(pairs)
    both = final_token_states(
        decoder,
        tokenizer,
        conversations,
        [LAYER, LAYER + 1],
        200,
        tmp_path / "both.safetensors",
        token_layers=[START],
    )
    finals_only = final_token_states(
        decoder, tokenizer, conversations, [LAYER, LAYER + 1], 200, tmp_path / "finals.safetensors"
    )
    for layer in (LAYER, LAYER + 1):
        assert torch.equal(load_final_token_states(both, layer), load_final_token_states(finals_only, layer))
    tokens = load_token_states(both, START)
    assert torch.equal(tokens.offsets, data.states.offsets)
    assert torch.allclose(tokens.states, data.states.states, atol=1e-5)
    with pytest.raises(ValueError, match="holds no per-token states of layer 2"):
        load_token_states(both, START + 1)


def test_loaded_full_backbone_gives_the_rewards_of_the_cached_state_path(tiny_backbone, cached, trained):
    pairs, data, _ = cached
    model, _, out = trained
    loaded = load_reward_model(out)
    tokenizer = load_tokenizer(str(tiny_backbone))
    every = list(range(len(data.states)))
    with torch.no_grad():
        hidden, mask = data.states.padded(every)
        from_cache = model.rewards_from_states(model.final_states_from(hidden, mask, START))
        from_text = loaded(*text_batch(tokenizer, pair_conversations(pairs)))
    assert torch.allclose(from_text, from_cache, atol=1e-5)
    assert from_cache.std() > 1e-3  # rewards that tell conversations apart, not a constant


def test_only_the_top_n_layers_change_and_only_they_are_stored(tiny_backbone, trained):
    model, before, out = trained
    after = model.state_dict()
    for name in before:
        in_top = any(name.startswith(f"decoder.layers.{i}.") for i in range(START, LAYER))
        weight_matrix = name.endswith("proj.weight")
        if name.startswith("decoder.") and not in_top:
            assert torch.equal(before[name], after[name]), name
        elif in_top and weight_matrix:
            assert not torch.equal(before[name], after[name]), name
    config = json.loads((out / "reward_model.json").read_text())
    assert config["backbone_weights"] == "top_layers" and config["first_trained_layer"] == START
    stored = {k for k in load_file(out / "reward_model.safetensors") if k.startswith("decoder.")}
    assert stored and all(k.split(".")[2] in {str(i) for i in range(START, LAYER)} for k in stored)
    source = load_decoder(str(tiny_backbone), LAYER).state_dict()
    loaded = load_reward_model(out).state_dict()
    for name, value in source.items():
        assert torch.equal(loaded[f"decoder.{name}"], after[f"decoder.{name}"]), name
        if not any(name.startswith(f"layers.{i}.") for i in range(START, LAYER)):
            assert torch.equal(value, loaded[f"decoder.{name}"]), name


def test_training_from_the_cache_equals_training_the_top_layers_from_tokens(tiny_backbone, cached, trained):
    pairs, _, _ = cached
    tokens = tokenize_pairs(load_tokenizer(str(tiny_backbone)), pairs)
    model = sarm(tiny_backbone)
    train_reward_model(model, tokens, BTTrainConfig(**CFG), trained[2].parent / "from_tokens")
    for name, value in trained[0].state_dict().items():
        # float sums in another order (padding to other widths); Adam turns them into ~1e-6 weight changes
        torch.testing.assert_close(value, model.state_dict()[name], atol=1e-4, rtol=0, msg=name)


def job(backbone, out_dir, train_layers):
    return launch.RewardModelJob(
        backbone=str(backbone),
        layer=LAYER,
        encoder="vanilla",
        out_dir=str(out_dir),
        preferences={"source": str(REPO / "resources" / "demo" / "preference_train.jsonl"), "limit": 6},
        reward_model={**CFG, "train_layers": train_layers, "max_length": 64, "global_batch": 3},
    )


def test_n_equal_to_the_read_layer_trains_the_same_weights_as_all(tiny_backbone, tmp_path):
    launch.run(job(tiny_backbone, tmp_path / "all", "all"))
    launch.run(job(tiny_backbone, tmp_path / "n", LAYER))
    every = load_file(tmp_path / "all" / "reward_model.safetensors")
    n_equal = load_file(tmp_path / "n" / "reward_model.safetensors")
    assert set(every) == set(n_equal) and "decoder.embed_tokens.weight" in every
    for name, value in every.items():
        assert torch.equal(value, n_equal[name]), name


def test_sigterm_checkpoints_and_resume_gives_identical_weights(tiny_backbone, cached, trained, tmp_path):
    def terminate_at_step_2(step):
        if step == 2:
            signal.raise_signal(signal.SIGTERM)

    with pytest.raises(Preempted):
        train_reward_model(
            sarm(tiny_backbone), cached[1], BTTrainConfig(**CFG), tmp_path, on_step=terminate_at_step_2
        )
    assert (tmp_path / "checkpoint.pt").exists()
    with pytest.raises(ValueError, match="`lr`: saved 0.01, requested 0.001"):
        train_reward_model(sarm(tiny_backbone), cached[1], BTTrainConfig(**{**CFG, "lr": 1e-3}), tmp_path)
    resumed = sarm(tiny_backbone)  # a fresh process starts from the untrained model
    train_reward_model(resumed, cached[1], BTTrainConfig(**CFG), tmp_path)
    for name, value in trained[0].state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


def test_cache_resumes_by_chunk_and_restarts_on_other_input(tiny_backbone, tmp_path):
    tokenizer, decoder = load_tokenizer(str(tiny_backbone)), load_decoder(str(tiny_backbone), START)
    conversations = pair_conversations(varied_pairs(4))
    calls = []

    class FailingAfter(torch.nn.Module):
        def __init__(self, limit):
            super().__init__()
            self.config, self.limit = decoder.config, limit
            self.inner = decoder

        def forward(self, **kwargs):
            calls.append(kwargs["input_ids"].shape[0])
            if len(calls) > self.limit:
                raise RuntimeError("killed")
            return self.inner(**kwargs)

    out = tmp_path / "states.safetensors"
    with pytest.raises(RuntimeError, match="killed"):
        cache_token_states(FailingAfter(1), tokenizer, conversations, 1000, out, chunk_size=3)
    assert not out.exists() and len(list(tmp_path.glob("states.safetensors.parts/chunk*"))) == 1
    calls.clear()
    cache_token_states(FailingAfter(99), tokenizer, conversations, 1000, out, chunk_size=3)
    # Chunks run in prompt order (c0 r0 c1 | r1 c2 r2 | c3 r3), a pair's sides packed in one row: chunks 2 and
    # 3 are 3 rows (r1, c2+r2, c3+r3); chunk 1 was kept.
    assert sum(calls) == 3
    reference = tmp_path / "reference.safetensors"
    cache_token_states(decoder, tokenizer, conversations, 1000, reference, chunk_size=3)
    assert torch.equal(load_token_states(out, START).states, load_token_states(reference, START).states)
    assert torch.equal(load_token_states(out, START).offsets, load_token_states(reference, START).offsets)

    other = tmp_path / "other.safetensors"
    calls.clear()
    with pytest.raises(RuntimeError, match="killed"):  # leaves one chunk of another input (max_length 20)
        cache_token_states(
            FailingAfter(1), tokenizer, conversations, 1000, other, max_length=20, chunk_size=3
        )
    calls.clear()
    cache_token_states(FailingAfter(99), tokenizer, conversations, 1000, other, chunk_size=3)
    assert sum(calls) == 5  # nothing of the other input was reused: all 5 rows
    assert torch.equal(load_token_states(other, START).states, load_token_states(reference, START).states)


def test_rewardbench2_scores_from_the_cache_equal_scoring_text(tiny_backbone, trained, tmp_path):
    prompts = load_dataset_spec(
        "rewardbench2", {"source": str(REPO / "resources" / "demo" / "rewardbench2.jsonl"), "limit": 3}
    )
    tokenizer = load_tokenizer(str(tiny_backbone))
    path = cache_token_states(
        load_decoder(str(tiny_backbone), START),
        tokenizer,
        completion_table(prompts)[1],
        300,
        tmp_path / "rb2.safetensors",
        max_length=64,
    )
    model = load_reward_model(trained[2])
    from_text = score_completions(model, tokenizer, prompts, batch_tokens=300, max_length=64)
    from_cache = score_completions_from_token_states(model, prompts, path, batch_tokens=300)
    assert len(from_cache) > 3
    assert torch.allclose(torch.tensor(from_cache["reward"]), torch.tensor(from_text["reward"]), atol=1e-5)
    short = cache_token_states(
        load_decoder(str(tiny_backbone), START),
        tokenizer,
        completion_table(prompts)[1][:4],
        300,
        tmp_path / "short.safetensors",
    )
    with pytest.raises(ValueError, match="holds 4 conversations but the prompts have"):
        score_completions_from_token_states(model, prompts, short)


def test_first_trained_layer():
    assert first_trained_layer(15, 2) == 13
    assert first_trained_layer(15, 15) is None and first_trained_layer(15, 40) is None
    assert first_trained_layer(15, "all") is None
    assert token_states_layer(15, 2, train_backbone=True) == 13
    assert token_states_layer(15, 2, train_backbone=False) is None  # head only: no per-token states
    assert token_states_layer(15, "all", train_backbone=True) is None


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"train_layers": 0}, "`reward_model.train_layers` must be `all` or a positive integer"),
        ({"train_layers": True}, "`reward_model.train_layers` must be `all` or a positive integer"),
        ({"train_layers": "some"}, "`reward_model.train_layers` must be `all` or a positive integer"),
        ({"train_layers": 2, "train_backbone": False}, "`reward_model.train_backbone` is false"),
        (
            {"train_layers": 2, "recon_tokens": "assistant_turn"},
            "`reward_model.recon_tokens: assistant_turn`",
        ),
    ],
)
def test_bad_combinations_are_named(settings, message):
    with pytest.raises(ValueError, match=message):
        BTTrainConfig(**settings)


def test_the_workflow_config_names_the_keys_before_any_job():
    import yaml

    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config["reward_model"].update(train_backbone=False, train_layers=2)
    with pytest.raises(ConfigError, match="`reward_model.train_backbone` is false"):
        validate_config(config, REPO / "workflow" / "schemas" / "config.schema.yaml", base_dir=REPO)
    config["reward_model"].update(train_backbone=True)
    validate_config(config, REPO / "workflow" / "schemas" / "config.schema.yaml", base_dir=REPO)


def test_states_of_another_layer_are_refused(tiny_backbone, cached, tmp_path):
    with pytest.raises(ValueError, match="needs the states of layer 2"):
        train_reward_model(
            sarm(tiny_backbone), cached[1], BTTrainConfig(**{**CFG, "train_layers": 1}), tmp_path
        )
    with pytest.raises(ValueError, match="holds no per-token states of layer 2"):
        load_token_states(cached[2], 2)
