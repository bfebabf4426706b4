"""Steering (Figure 3): feature scores s_i, the head edit, the T/C split, and bit-identical rewards."""

import copy
import json

import pandas as pd
import pytest
import torch

from sarm.backbone import load_tokenizer
from sarm.data.chat import tokenize_conversations
from sarm.data.records import BenchmarkPrompt, RMBenchItem
from sarm.interpret.steering import (
    SteeringConfig,
    choose_feature,
    feature_scores,
    query_response_pairs,
    rewardbench2_safety_pairs,
    rewards_before_after,
    run_steering,
    safety_pairs,
    steered_head_weight,
    write_steering,
)
from sarm.rm.head_edits import apply_head_edits
from sarm.rm.models import build_sarm
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


def test_safety_pairs_pair_variant_j_with_variant_j_of_the_safety_domains(rmbench):
    pairs = safety_pairs(rmbench, ["safety-refuse", "safety-response"])
    assert len(pairs) == 6 and {p.source for p in pairs} == {"safety-refuse", "safety-response"}
    assert pairs[1].chosen[-1]["content"] == rmbench[0].chosen[1]
    assert pairs[1].rejected[-1]["content"] == rmbench[0].rejected[1]
    with pytest.raises(ValueError, match="steering.domains"):
        safety_pairs(rmbench, ["code"])


def test_run_steering_on_a_tiny_sarm_matches_the_edited_model(
    tiny_sarm, tokenizer, rmbench, benchmark, tmp_path
):
    config = SteeringConfig(scale=10.0, batch_tokens=256, max_length=128)
    result = run_steering(tiny_sarm.latents, tiny_sarm.head_weight(), tokenizer, rmbench, benchmark, config)
    summary, rewards = result.summary, result.rewards

    pairs = safety_pairs(rmbench, config.domains)
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
    silent = rewards["feature_activation"] == 0
    assert (rewards.loc[silent, "reward_before"] == rewards.loc[silent, "reward_after"]).all()
    active = rewards[~silent]
    expected_shift = (config.scale - 1) * weight[summary["feature"]].item() * active["feature_activation"]
    assert (active["reward_after"] - active["reward_before"]).to_numpy() == pytest.approx(
        expected_shift.to_numpy(), abs=1e-5
    )
    complement = rewards[rewards["set"] == "C"]
    assert summary["complement"]["fraction_unchanged"] == pytest.approx(
        (complement["reward_before"] == complement["reward_after"]).mean()
    )
    assert summary["complement"]["fraction_unchanged"] >= (complement["feature_activation"] == 0).mean()

    paths = [tmp_path / name for name in ("steering.json", "rewards.parquet", "figure3a.png", "figure3b.png")]
    write_steering(result, *paths)
    saved = json.loads(paths[0].read_text())
    assert saved["head_edit"] == {"feature": summary["feature"], "scale": 10.0}
    assert "unchanged" in saved["caption_b"] and "Figure 3a" in saved["caption_a"]
    assert set(saved["rewardbench2_before"]["subsets"]) == {"Safety", "Math", "Ties"}
    pd.testing.assert_frame_equal(pd.read_parquet(paths[1]), rewards)
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths[2:])
    assert not list(tmp_path.glob("*.tmp*"))


def test_rewards_do_not_depend_on_batching(tiny_sarm, tokenizer, rmbench, benchmark):
    small = run_steering(
        tiny_sarm.latents,
        tiny_sarm.head_weight(),
        tokenizer,
        rmbench,
        benchmark,
        SteeringConfig(batch_tokens=1),
    )
    large = run_steering(
        tiny_sarm.latents,
        tiny_sarm.head_weight(),
        tokenizer,
        rmbench,
        benchmark,
        SteeringConfig(batch_tokens=4096),
    )
    assert small.summary["feature"] == large.summary["feature"]
    for column in ("reward_before", "reward_after"):
        torch.testing.assert_close(torch.tensor(small.rewards[column]), torch.tensor(large.rewards[column]))


def _ids(tokenizer, messages):
    (ids,) = tokenize_conversations(tokenizer, [messages])
    return torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long)


def _latents(model, tokenizer, messages):
    with torch.no_grad():
        return model.latents(*_ids(tokenizer, messages))


@pytest.fixture(scope="module")
def tiny_sarm(tiny_backbone):
    torch.manual_seed(0)  # a random head of both signs, as after training
    sae = TopKSAE(32, SAEConfig(64, 4), seed=0)
    return build_sarm(str(tiny_backbone), 2, sae, head_init="normal").eval()


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
        summary = run_steering(
            tiny_sarm.latents, tiny_sarm.head_weight(), tokenizer, rmbench, benchmark, config
        ).summary
        assert summary["head_weight_before"] > 0 and summary["source"] == source
        assert summary["target"]["mean_shift"] >= 0  # TopK latents are >= 0 and w_f > 0: T cannot move left


def test_rewardbench2_safety_pairs_are_each_correct_against_each_rejected_completion(benchmark):
    pairs = rewardbench2_safety_pairs(benchmark)
    assert len(pairs) == 2 * 3  # 2 Safety prompts x 3 rejected (the paper's 450 x 3 = 1,350)
    assert {p.chosen[-1]["content"] for p in pairs} == {"I cannot help with that.", "Sorry, I will not."}
    assert (
        pairs[0].rejected[-1]["content"] == "Use a knife." and pairs[2].rejected[-1]["content"] == "Be cruel."
    )
    assert SteeringConfig.from_config({"scale": 2.0}, {"batch_tokens": 8, "max_length": 16}).source == (
        "rmbench_safety"
    )
    with pytest.raises(ValueError, match="source"):
        SteeringConfig(source="hh_rlhf")


def test_the_data_limit_applies_to_both_steering_sources(tmp_path):
    """`data.rmbench.limit` and `data.rewardbench2.limit` cut the rows the safety pairs come from."""
    from sarm.data.specs import load_dataset_spec
    from sarm.interpret.steering import steering_pairs
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
        assert len(steering_pairs(SteeringConfig(source=source), rmbench, prompts)) == expected
