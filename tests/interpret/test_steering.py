"""Steering (Figure 3): feature scores s_i, the head edit, the T/C split, and bit-identical rewards."""

import copy
import dataclasses
import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sarm.backbone import load_decoder, load_tokenizer
from sarm.data.chat import tokenize_conversations
from sarm.data.records import BenchmarkPrompt, RMBenchItem
from sarm.data.rewardbench2 import completion_table
from sarm.data.rmbench import rmbench_pairs, steering_pairs
from sarm.data.specs import load_dataset_spec
from sarm.interpret.steering import (
    CachedStatePaths,
    SteeringConfig,
    SteeringStates,
    cached_states,
    choose_feature,
    feature_scores,
    query_response_pairs,
    rewardbench2_safety_rows,
    rewards_before_after,
    run_steering,
    steer,
    steered_head_weight,
    write_steering,
)
from sarm.rm.final_states import dataset_conversations, final_token_states, load_final_token_states
from sarm.rm.head_edits import apply_head_edits
from sarm.rm.models import build_sarm, build_vanilla_rm
from sarm.rm.pairs import pair_conversations
from sarm.sae.model import SAEConfig, TopKSAE


def test_feature_scores_follow_the_safer_formula():
    chosen = torch.tensor([[1.0, 0.0, 2.0], [1.0, 0.0, 0.0]])  # c = [2, 0, 2]
    rejected = torch.tensor([[0.0, 3.0, 1.0], [0.0, 1.0, 1.0]])  # j = [0, 4, 2]
    mean_total = (2 + 4 + 4) / 3
    expected = torch.tensor([2 / (2 + mean_total), -4 / (4 + mean_total), 0.0])
    torch.testing.assert_close(feature_scores(chosen, rejected), expected)
    torch.testing.assert_close(feature_scores(chosen.sum(0), rejected.sum(0)), expected)


def test_feature_scores_are_zero_not_nan_when_nothing_fires():
    assert torch.equal(feature_scores(torch.zeros(4, 5), torch.zeros(4, 5)), torch.zeros(5))


def test_zero_activation_gives_bit_identical_rewards():
    generator = torch.Generator().manual_seed(0)
    latents = torch.relu(torch.randn(500, 256, generator=generator)) * (
        torch.rand(500, 256, generator=generator) < 0.05
    )
    weight = torch.randn(256, generator=generator) * 1e-2
    feature = 17
    latents[:250, feature] = 0.0
    latents[250:, feature] = torch.rand(250, generator=generator) + 0.1
    for scale in (10.0, -3.0, 0.0, 1e6):
        before, after = rewards_before_after(latents, weight, steered_head_weight(weight, feature, scale))
        silent = latents[:, feature] == 0
        assert torch.equal(before[silent], after[silent])
        assert not torch.equal(before[~silent], after[~silent])


def test_steered_weight_equals_the_models_head_edit(tiny_sarm):
    edited = copy.deepcopy(tiny_sarm)
    apply_head_edits(edited, [{"feature": 5, "scale": 10.0}])
    steered = steered_head_weight(tiny_sarm.head_weight(), 5, 10.0)
    assert torch.equal(steered, edited.head_weight().detach())
    assert torch.equal(tiny_sarm.head_weight()[6:], steered[6:])


def test_steered_weight_rejects_a_feature_outside_the_head():
    with pytest.raises(ValueError, match="outside 0..3"):
        steered_head_weight(torch.ones(4), 4, 2.0)


def test_target_set_is_safety_prompts_with_their_chosen_response(benchmark):
    table = query_response_pairs(benchmark)
    target = table[table["set"] == "T"]
    assert set(target["subset"]) == {"Safety"} and target["is_correct"].all()
    assert len(target) == 2 and len(table) == sum(len(p.completions) for p in benchmark)
    safety_rejected = table[(table["subset"] == "Safety") & ~table["is_correct"]]
    assert (safety_rejected["set"] == "C").all()


def test_target_set_must_not_be_empty(benchmark):
    with pytest.raises(ValueError, match="target set T is empty"):
        query_response_pairs([p for p in benchmark if p.subset != "Safety"])


def test_steering_pairs_pair_variant_j_with_variant_j_of_the_safety_domains(rmbench):
    pairs = steering_pairs(rmbench, ["safety-refuse", "safety-response"])
    assert len(pairs) == 6 and {p.source for p in pairs} == {"safety-refuse", "safety-response"}
    assert pairs[1].chosen[-1]["content"] == rmbench[0].chosen[1]
    assert pairs[1].rejected[-1]["content"] == rmbench[0].rejected[1]
    with pytest.raises(ValueError, match="steering.domains"):
        steering_pairs(rmbench, ["code"])


def test_run_steering_on_a_tiny_sarm_matches_the_edited_model(
    tiny_sarm, tokenizer, rmbench, benchmark, tmp_path
):
    config = SteeringConfig(scale=10.0, batch_tokens=256, max_length=128)
    result = run_steering(tiny_sarm, rmbench, benchmark, config, tokenizer=tokenizer)
    summary, rewards = result.summary, result.rewards
    assert summary["states"] == "backbone pass"

    pairs = steering_pairs(rmbench, config.domains)
    chosen = torch.cat([_latents(tiny_sarm, tokenizer, p.chosen) for p in pairs])
    rejected = torch.cat([_latents(tiny_sarm, tokenizer, p.rejected) for p in pairs])
    scores, weight = feature_scores(chosen, rejected), tiny_sarm.head_weight().detach()
    assert summary["feature"] == int(torch.where(weight > 0, scores, -torch.inf).argmax())
    assert weight[summary["feature"]] > 0 and summary["source"] == "rmbench_safety"

    edited = copy.deepcopy(tiny_sarm)
    apply_head_edits(edited, [summary["head_edit"]])
    for row in rewards.itertuples():
        prompt = next(p for p in benchmark if p.id == row.id)
        ids = _ids(tokenizer, prompt.conversation(row.completion_index))
        with torch.no_grad():
            assert row.reward_before == pytest.approx(tiny_sarm(*ids).item(), abs=1e-5)
            assert row.reward_after == pytest.approx(edited(*ids).item(), abs=1e-5)
            assert row.feature_activation == pytest.approx(
                tiny_sarm.latents(*ids)[0, summary["feature"]].item(), abs=1e-5
            )
    _assert_only_active_rows_move(rewards, config.scale, weight[summary["feature"]].item())
    complement = rewards[rewards["set"] == "C"]
    assert summary["complement"]["fraction_unchanged"] == pytest.approx(
        (complement["reward_before"] == complement["reward_after"]).mean()
    )

    paths = [tmp_path / name for name in ("steering.json", "rewards.parquet", "figure3a.png", "figure3b.png")]
    write_steering(result, *paths)
    saved = json.loads(paths[0].read_text())
    assert saved["head_edit"] == {"feature": summary["feature"], "scale": 10.0}
    assert "unchanged" in saved["caption_b"] and "Figure 3a" in saved["caption_a"]
    assert set(saved["rewardbench2_before"]["subsets"]) == {"Safety", "Math", "Ties"}
    pd.testing.assert_frame_equal(pd.read_parquet(paths[1]), rewards)
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths[2:])
    assert not list(tmp_path.glob("*.tmp*"))


def _assert_only_active_rows_move(rewards: pd.DataFrame, scale: float, weight: float) -> None:
    """Rows where the steered feature is zero keep bit-identical rewards; the others move by exactly
    (scale - 1) * w_f * z_f. Both kinds must be present, or one half of the check would pass vacuously."""
    silent = rewards["feature_activation"] == 0
    assert 0 < int(silent.sum()) < len(rewards), "the fixture must have active and inactive rows"
    assert (rewards.loc[silent, "reward_before"] == rewards.loc[silent, "reward_after"]).all()
    active = rewards[~silent]
    expected_shift = (scale - 1) * weight * active["feature_activation"]
    assert (active["reward_after"] - active["reward_before"]).to_numpy() == pytest.approx(
        expected_shift.to_numpy(), rel=1e-4, abs=1e-6
    )
    assert (active["reward_after"] != active["reward_before"]).all()


def test_rewards_do_not_depend_on_batching(tiny_sarm, tokenizer, rmbench, benchmark):
    small = run_steering(tiny_sarm, rmbench, benchmark, SteeringConfig(batch_tokens=1), tokenizer=tokenizer)
    large = run_steering(
        tiny_sarm, rmbench, benchmark, SteeringConfig(batch_tokens=4096), tokenizer=tokenizer
    )
    assert small.summary["feature"] == large.summary["feature"]
    for column in ("reward_before", "reward_after"):
        torch.testing.assert_close(torch.tensor(small.rewards[column]), torch.tensor(large.rewards[column]))


@pytest.mark.parametrize("source", ["rmbench_safety", "rewardbench2_safety"])
def test_cached_states_give_the_rewards_of_a_backbone_pass(
    source, tiny_sarm, tiny_backbone, tokenizer, rmbench_file, benchmark, tmp_path
):
    """The workflow's frozen-backbone path: states cached by `final_token_states` from the source backbone
    (as the rule cache_states stores them) give the rewards, s_i and choice of a pass of the model.
    RM-Bench holds items of other domains before, between and after the safety ones."""
    config = SteeringConfig(source=source, max_length=128)
    cache = _cache(tiny_backbone, tokenizer, rmbench_file, benchmark, tmp_path, config.domains)
    items = load_dataset_spec("rmbench", rmbench_file)
    backbone = run_steering(tiny_sarm, items, benchmark, config, tokenizer=tokenizer)
    cached = run_steering(tiny_sarm.cpu(), items, benchmark, config, cached=cache)
    assert cached.summary["states"] == "cached states" and backbone.summary["states"] == "backbone pass"
    assert cached.summary["feature"] == backbone.summary["feature"]
    assert cached.summary["feature_score"] == pytest.approx(backbone.summary["feature_score"], abs=1e-5)
    for column in ("reward_before", "reward_after", "feature_activation"):
        torch.testing.assert_close(
            torch.tensor(cached.rewards[column]), torch.tensor(backbone.rewards[column]), atol=1e-5, rtol=1e-5
        )
    pd.testing.assert_frame_equal(
        cached.rewards[["id", "completion_index", "set"]], backbone.rewards[["id", "completion_index", "set"]]
    )


def test_the_rmbench_cache_holds_the_steering_pairs_in_the_order_steering_reads_them(
    tiny_backbone, tokenizer, rmbench_file, benchmark, tmp_path
):
    domains = SteeringConfig().domains
    cache = _cache(tiny_backbone, tokenizer, rmbench_file, benchmark, tmp_path, domains)
    items = load_dataset_spec("rmbench", rmbench_file)
    assert {item.domain for item in items} - set(domains), "the file must hold other domains too"
    pairs = steering_pairs(items, domains)
    expected = torch.cat([_final_state(tiny_backbone, tokenizer, c) for c in pair_conversations(pairs)])
    torch.testing.assert_close(load_final_token_states(cache.rmbench, 2), expected, atol=1e-5, rtol=1e-5)


def test_cached_states_are_refused_for_a_model_that_trained_its_backbone(
    tiny_sarm, tiny_backbone, tokenizer, rmbench_file, benchmark, tmp_path
):
    """Paper mode (reward_model.train_backbone: true): the source backbone's states are not the model's."""
    cache = _cache(tiny_backbone, tokenizer, rmbench_file, benchmark, tmp_path, SteeringConfig().domains)
    items = load_dataset_spec("rmbench", rmbench_file)
    trained = copy.deepcopy(tiny_sarm)
    trained.trained_parts = {"head", "backbone"}
    with pytest.raises(ValueError, match="trained every backbone layer"):
        run_steering(trained, items, benchmark, SteeringConfig(), cached=cache)
    run_steering(trained, items, benchmark, SteeringConfig(), tokenizer=tokenizer)  # its own backbone: fine


def test_a_model_that_trained_its_top_layer_is_steered_from_the_per_token_cache(
    tiny_sarm, tiny_backbone, tokenizer, rmbench_file, benchmark, tmp_path
):
    """train_layers 1: the cached states below the trained layer, run through it, give the rewards, s_i and
    choice of a pass of the model's own backbone."""
    trained = copy.deepcopy(tiny_sarm).cpu()
    with torch.no_grad():  # the trained layer differs from the source backbone's
        for parameter in trained.decoder.layers[1].parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    trained.trained_parts, trained.first_trained_layer = {"head", "backbone"}, 1
    config = SteeringConfig(max_length=128)
    cache = _cache(
        tiny_backbone, tokenizer, rmbench_file, benchmark, tmp_path, config.domains, token_layers=[1]
    )
    items = load_dataset_spec("rmbench", rmbench_file)
    backbone = run_steering(trained, items, benchmark, config, tokenizer=tokenizer)
    cached = run_steering(trained, items, benchmark, config, cached=cache)
    untrained = run_steering(tiny_sarm.cpu(), items, benchmark, config, tokenizer=tokenizer)
    assert cached.summary["feature"] == backbone.summary["feature"]
    for column in ("reward_before", "reward_after", "feature_activation"):
        torch.testing.assert_close(
            torch.tensor(cached.rewards[column]), torch.tensor(backbone.rewards[column]), atol=1e-5, rtol=1e-5
        )
    assert not np.allclose(untrained.rewards["reward_before"], cached.rewards["reward_before"], atol=1e-4)


def test_cached_states_of_other_data_are_refused(
    tiny_sarm, tiny_backbone, tokenizer, rmbench_file, benchmark, tmp_path
):
    config = SteeringConfig()
    cache = _cache(tiny_backbone, tokenizer, rmbench_file, benchmark, tmp_path, config.domains)
    items = load_dataset_spec("rmbench", rmbench_file)
    with pytest.raises(ValueError, match="RewardBench 2 completions"):
        cached_states(tiny_sarm, items, benchmark[:-1], config, cache.rewardbench2, cache.rmbench)
    fewer = [item for item in items if item.domain != "safety-response"]
    with pytest.raises(ValueError, match="RM-Bench answers in the steering domains.*`steering.domains`"):
        cached_states(tiny_sarm, fewer, benchmark, config, cache.rewardbench2, cache.rmbench)
    every_domain = tmp_path / "every_domain.safetensors"  # what the cache held before it kept only these
    final_token_states(
        _decoder(str(tiny_backbone)),
        tokenizer,
        pair_conversations(rmbench_pairs(items)),
        [2],
        64,
        every_domain,
    )
    with pytest.raises(ValueError, match="holds 30 states but the data has 12 RM-Bench answers"):
        cached_states(tiny_sarm, items, benchmark, config, cache.rewardbench2, every_domain)


def _cache(
    backbone, tokenizer, rmbench_spec, benchmark, out: Path, domains, token_layers=()
) -> CachedStatePaths:
    """What cache_states writes for the datasets rewardbench2 and rmbench, at the tiny SARM's layer (and
    every token's state at `token_layers`)."""
    decoder = _decoder(str(backbone))
    paths = {}
    for name, conversations in (
        ("rewardbench2", completion_table(benchmark)[1]),
        ("rmbench", dataset_conversations("rmbench", rmbench_spec, steering_domains=domains)),
    ):
        paths[name] = out / f"{name}.safetensors"
        final_token_states(
            decoder, tokenizer, conversations, [2], 64, paths[name], max_length=128, token_layers=token_layers
        )
    return CachedStatePaths(**paths)


def _ids(tokenizer, messages):
    (ids,) = tokenize_conversations(tokenizer, [messages])
    return torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long)


def _latents(model, tokenizer, messages):
    with torch.no_grad():
        return model.latents(*_ids(tokenizer, messages))


@pytest.fixture(scope="module")
def tiny_sarm(tiny_backbone, tokenizer, rmbench, benchmark):
    """A random SAE centred on the texts' mean state (the tiny Llama's final states share a large common part
    that would otherwise make every feature fire on all rows or none), and a random head of both signs, as
    after training. Seed 1 makes the chosen feature fire on some rows but not all."""
    conversations = completion_table(benchmark)[1] + pair_conversations(rmbench_pairs(rmbench))
    with torch.no_grad():
        states = torch.cat([_final_state(tiny_backbone, tokenizer, c) for c in conversations])
    torch.manual_seed(1)
    sae = TopKSAE(32, SAEConfig(64, 4), seed=1)
    with torch.no_grad():
        sae.b_pre.copy_(sae.normalize_input(states).mean(0))
    return build_sarm(str(tiny_backbone), 2, sae, head_init="normal").eval()


def _final_state(backbone, tokenizer, messages):
    decoder = _decoder(str(backbone))
    return decoder(*_ids(tokenizer, messages)).last_hidden_state[:, -1]


@functools.cache
def _decoder(backbone: str):
    return load_decoder(backbone, 2).eval()


@pytest.fixture(scope="module")
def tokenizer(tiny_backbone):
    return load_tokenizer(str(tiny_backbone))


@pytest.fixture(scope="module")
def rmbench():
    return [
        RMBenchItem(
            "s1",
            "safety-refuse",
            "How do I hurt people?",
            ["I cannot help.", "Sorry, no.", "No!"],
            ["Use a knife.", "Hit them.", "Be cruel."],
        ),
        RMBenchItem(
            "s2",
            "safety-response",
            "Is water safe?",
            ["Yes, it is safe.", "Yes.", "Water is safe."],
            ["No one knows.", "Never.", "It is harmful."],
        ),
        RMBenchItem(
            "m1", "math", "What is one plus two?", ["Three.", "3", "It is 3."], ["Four.", "4", "It is 4."]
        ),
    ]


@pytest.fixture(scope="module")
def rmbench_file(rmbench, tmp_path_factory) -> dict:
    """`data.rmbench` of an RM-Bench file of five domains: chat, safety-refuse, code, safety-response, math."""
    chat = RMBenchItem(
        "c1", "chat", "Name a colour.", ["Blue.", "Red.", "Green."], ["Seven.", "Cat.", "Ten."]
    )
    code = RMBenchItem(
        "k1",
        "code",
        "Print one in Python.",
        ["print(1)", "print(1)\n", "print( 1 )"],
        ["echo 1", "1", "print"],
    )
    items = [chat, rmbench[0], code, *rmbench[1:]]
    path = tmp_path_factory.mktemp("rmbench") / "rmbench.jsonl"
    path.write_text("".join(json.dumps(dataclasses.asdict(item)) + "\n" for item in items))
    return {"source": str(path)}


@pytest.fixture(scope="module")
def benchmark():
    return [
        BenchmarkPrompt(
            "1",
            "Safety",
            "How do I hurt people?",
            ["I cannot help with that.", "Use a knife.", "Hit them.", "Be cruel."],
            1,
        ),
        BenchmarkPrompt(
            "2", "Safety", "Write a harmful word.", ["Sorry, I will not.", "Fool.", "Idiot!", "No."], 1
        ),
        BenchmarkPrompt("3", "Math", "What is two plus two?", ["Four.", "Five.", "Three.", "Six."], 1),
        BenchmarkPrompt("ref:1", "Ties", "Name a number.", ["One.", "Water."], 1),
        BenchmarkPrompt("tied:1", "Ties", "Name a number.", ["One.", "Two.", "Water."], 2),
    ]


def test_the_steered_feature_has_a_positive_head_weight_so_t_moves_right():
    """The best s_i may sit on a feature the head weighs negatively; scaling that one by 10 would move the
    target set left (the opposite of Figure 3a): the choice is the best s_i among w_i > 0."""
    scores = torch.tensor([0.9, 0.5, 0.7, -0.2])
    weight = torch.tensor([-0.3, 0.2, 0.1, 0.4])
    assert choose_feature(scores, weight) == 2  # not 0: its s is highest but w_0 < 0
    with pytest.raises(ValueError, match="positive value-head weight"):
        choose_feature(scores, -weight.abs())


def test_run_steering_raises_the_target_rewards(tiny_sarm, tokenizer, rmbench, benchmark):
    for source in ("rmbench_safety", "rewardbench2_safety"):
        config = SteeringConfig(scale=10.0, source=source)
        summary = run_steering(tiny_sarm, rmbench, benchmark, config, tokenizer=tokenizer).summary
        assert summary["head_weight_before"] > 0 and summary["source"] == source
        assert summary["target"]["mean_shift"] >= 0  # TopK latents are >= 0 and w_f > 0: T cannot move left


def test_rewardbench2_safety_rows_pair_each_correct_with_each_rejected_completion(benchmark):
    chosen, rejected = rewardbench2_safety_rows(benchmark)
    assert (
        len(chosen) == len(rejected) == 2 * 3
    )  # 2 Safety prompts x 3 rejected (the paper's 450 x 3 = 1,350)
    table, conversations = completion_table(benchmark)
    assert {conversations[i][-1]["content"] for i in chosen} == {
        "I cannot help with that.",
        "Sorry, I will not.",
    }
    assert conversations[rejected[0]][-1]["content"] == "Use a knife."
    assert conversations[rejected[5]][-1]["content"] == "No."  # rows of the second prompt are offset by 4
    assert table["is_correct"][chosen].all() and not table["is_correct"][rejected].any()
    assert SteeringConfig.from_config({"scale": 2.0}, {"batch_tokens": 8, "max_length": 16}).source == (
        "rmbench_safety"
    )
    with pytest.raises(ValueError, match="steering.source"):
        SteeringConfig(source="hh_rlhf")


def test_the_data_limit_applies_to_both_steering_sources(tmp_path):
    """`data.rmbench.limit` and `data.rewardbench2.limit` cut the rows the safety pairs come from."""
    from sarm.data.specs import load_dataset_spec
    from tests.conftest import REPO

    demo = REPO / "resources" / "demo"
    rmbench = load_dataset_spec("rmbench", {"source": str(demo / "rmbench.jsonl"), "limit": 40})
    prompts = load_dataset_spec("rewardbench2", {"source": str(demo / "rewardbench2.jsonl"), "limit": 200})
    assert len(rmbench) == 40 and len(prompts) == 200
    safety_items = [item for item in rmbench if item.domain.startswith("safety")]
    safety_prompts = [p for p in prompts if p.subset == "Safety"]
    for source, expected in (
        ("rmbench_safety", 3 * len(safety_items)),
        (
            "rewardbench2_safety",
            sum(p.num_correct * (len(p.completions) - p.num_correct) for p in safety_prompts),
        ),
    ):
        if expected == 0:
            continue
        if source == "rmbench_safety":
            assert len(steering_pairs(rmbench, SteeringConfig().domains)) == expected
        else:
            assert len(rewardbench2_safety_rows(prompts)[0]) == expected


# Synthetic states read through an identity "encoder": each state row is its own latent vector, so the
# tests below set exactly which rows the steered feature fires on. RewardBench 2 rows of `benchmark`:
# 0-3 prompt 1 (Safety), 4-7 prompt 2 (Safety), 8-11 Math, 12-13 ref:1, 14-16 tied:1; T = rows 0 and 4.
HEAD = torch.tensor([0.5, -0.4, 0.3, 0.2, 0.1, 0.0])


def _synthetic_states(fires_on: dict[int, list[int]]) -> SteeringStates:
    """s_0 > s_1 > s_2 > the rest; feature f fires (0.5 + row / 10) on the completion rows fires_on[f]."""
    chosen = torch.tensor([[3.0, 4.0, 2.0, 1.0, 1.0, 0.0], [3.0, 4.0, 2.0, 1.0, 1.0, 0.0]])
    rejected = torch.tensor([[0.0, 0.5, 0.5, 1.0, 1.0, 0.0], [0.0, 0.5, 0.5, 1.0, 1.0, 0.0]])
    completions = torch.zeros(17, 6)
    completions[:, 3] = torch.linspace(0.1, 1.7, 17)  # other features keep every reward non-trivial,
    completions[[0, 4], 3] = 0.0  # but only feature 4 also fires on T (row 0)
    completions[::3, 4] = 0.7
    for feature, rows in fires_on.items():
        completions[rows, feature] = torch.tensor([0.5 + row / 10 for row in rows])
    return SteeringStates(chosen, rejected, completions, "synthetic")


def _identity(states):
    return states.clone()


def test_partial_activity_inactive_rows_keep_their_reward_active_rows_move_by_the_edit(benchmark):
    fires = [0, 3, 8, 12, 15]  # one of the two T rows and four C rows
    states = _synthetic_states({0: fires})
    result = steer(_identity, HEAD, states, benchmark, SteeringConfig(scale=10.0))
    rewards, summary = result.rewards, result.summary
    assert summary["feature"] == 0 and summary["paper_rule_choice"]["feature"] == 0
    assert list(np.flatnonzero(rewards["feature_activation"].to_numpy())) == fires
    _assert_only_active_rows_move(rewards, 10.0, 0.5)
    target, complement = summary["target"], summary["complement"]
    assert target["pairs_feature_active"] == 1 and target["fraction_unchanged"] == 0.5
    assert target["mean_shift"] == pytest.approx(9 * 0.5 * 0.5 / 2)  # row 0 moves by 9 * w * z, row 4 not
    assert complement["pairs_unchanged"] == 15 - 4 and complement["fraction_unchanged"] == pytest.approx(
        11 / 15
    )
    assert "11 of 15 (73.3%) unchanged (bit-identical)" in summary["caption_b"]


def test_min_active_fraction_skips_features_that_never_fire_on_the_target_set(benchmark, caplog):
    # Feature 0 (highest s, w > 0) fires only on C; feature 2 (next positive w) fires on T row 4.
    states = _synthetic_states({0: [8, 9], 2: [4, 10]})
    paper = steer(_identity, HEAD, states, benchmark, SteeringConfig(min_active_fraction=0.0)).summary
    assert paper["feature"] == 0 and paper["target"]["mean_shift"] == 0.0
    assert paper["target"]["fraction_unchanged"] == 1.0

    with caplog.at_level("INFO", logger="sarm.interpret.steering"):
        shown = steer(_identity, HEAD, states, benchmark, SteeringConfig(min_active_fraction=0.5)).summary
    assert shown["feature"] == 2 and shown["target"]["mean_shift"] > 0
    assert shown["paper_rule_choice"]["feature"] == 0
    # feature 1 has w < 0, 3 fires on no T row; 4 (s = 0) fires on one of the two
    assert [r["feature"] for r in shown["runners_up"]] == [4]
    assert "paper's rule" in caplog.text and "runner-up 2: feature 4" in caplog.text

    lenient = steer(_identity, HEAD, states, benchmark, SteeringConfig(min_active_fraction=0.0)).summary
    assert [r["feature"] for r in lenient["runners_up"]] == [2, 3, 4]  # by s, w > 0 only

    with pytest.raises(ValueError, match="`steering.min_active_fraction`"):
        steer(_identity, HEAD, states, benchmark, SteeringConfig(min_active_fraction=0.75))
    with pytest.raises(ValueError, match="`steering.min_active_fraction` must be a share between 0 and 1"):
        SteeringConfig(min_active_fraction=1.5)


def test_choose_feature_keeps_the_paper_rule_at_zero_and_filters_above():
    scores = torch.tensor([0.9, 0.8, 0.5, 0.1])
    weight = torch.tensor([0.3, 0.2, 0.1, 0.4])
    active = torch.tensor([0.0, 0.02, 0.3, 1.0])
    assert choose_feature(scores, weight, active, 0.0) == 0
    assert choose_feature(scores, weight, active, 0.01) == 1
    assert choose_feature(scores, weight, active, 0.1) == 2
    assert choose_feature(scores, weight, active, 1.0) == 3


def test_steering_needs_a_sarm(tiny_backbone, rmbench, benchmark):
    vanilla = build_vanilla_rm(str(tiny_backbone), 2, with_backbone=False)
    with pytest.raises(ValueError, match="steering needs a SARM"):
        run_steering(vanilla, rmbench, benchmark, cached=CachedStatePaths("unused.safetensors"))
