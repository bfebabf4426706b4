import json

import numpy as np
import pandas as pd
import pytest

from sarm.eval.rewardbench2 import ties_score
from sarm.report.bootstrap import (
    OVERALL,
    BootstrapConfig,
    paired_differences,
    read_subset_terms,
    resampled_scores,
    score_estimates,
)
from tests.report.rb2_files import BEST_OF_4, best_of_4, random_prompts, write_evaluation

CONFIG = BootstrapConfig(resamples=1000, seed=0)


def ties_question(number: int, ref_margin: float = 2.0) -> list:
    # ref:N: C=[ref_margin], I=[0]; tied:N: C=[5, 4], I=[0] -> spread 1, margin 4: every Ties term is met.
    return [
        (f"ref:{number}", "Ties", [ref_margin, 0.0], 1),
        (f"tied:{number}", "Ties", [5.0, 4.0, 0.0], 2),
    ]


def test_an_all_correct_subset_has_the_interval_100_100(tmp_path):
    prompts = best_of_4("Math", [1] * 20) + best_of_4("Safety", [1] * 10 + [0] * 10)
    _, rewards = write_evaluation(tmp_path, prompts)
    estimates = score_estimates(rewards, CONFIG)
    assert (estimates["Math"].value, estimates["Math"].low, estimates["Math"].high) == (1.0, 1.0, 1.0)
    assert estimates["Safety"].value == 0.5
    assert estimates["Safety"].low < 0.5 < estimates["Safety"].high


def test_ties_questions_are_resampled_whole_and_scored_by_the_ties_formula(tmp_path):
    # Every question scores the same, so every resample of questions scores the same: a zero-width interval.
    # tanh(min(2, 4) / 1 - 1) = tanh(1).
    prompts = [prompt for number in range(12) for prompt in ties_question(number)]
    _, rewards = write_evaluation(tmp_path, prompts)
    ties = score_estimates(rewards, CONFIG)["Ties"]
    assert ties.value == pytest.approx(0.3 + 0.3 + 0.2 + 0.2 + 0.01 * np.tanh(1.0))
    assert ties.low == pytest.approx(ties.value) and ties.high == pytest.approx(ties.value)
    # One question whose ref answer loses: now resamples differ, and the point is the Ties score itself.
    prompts[0] = ("ref:0", "Ties", [-1.0, 0.0], 1)
    _, rewards = write_evaluation(tmp_path, prompts)
    ties = score_estimates(rewards, CONFIG)["Ties"]
    assert ties.value == pytest.approx(ties_score([(p[0], p[2], p[3]) for p in prompts]))
    assert ties.low < ties.value <= ties.high


@pytest.mark.parametrize("seed", range(5))
def test_point_estimates_are_the_evaluation_scores_and_lie_inside_their_intervals(tmp_path, seed):
    scores, rewards = write_evaluation(tmp_path, random_prompts(np.random.default_rng(seed)))
    expected = json.loads(scores.read_text())
    estimates = score_estimates(rewards, CONFIG)
    assert estimates[OVERALL].value == pytest.approx(expected["overall"], abs=1e-12)
    for subset, value in expected["subsets"].items():
        assert estimates[subset].value == pytest.approx(value, abs=1e-12)
    for name, estimate in estimates.items():
        assert estimate.low <= estimate.value <= estimate.high, name
        assert estimate.low < estimate.high, name  # random rewards: no subset is certain


def test_overall_is_recomputed_per_resample_not_averaged_from_subset_bounds(tmp_path):
    # Six subsets of independent outcomes: the spread of their mean is ~1/sqrt(6) of a subset's spread,
    # while averaging the subsets' bounds would give an interval as wide as a subset's.
    _, rewards = write_evaluation(tmp_path, random_prompts(np.random.default_rng(7), per_subset=40))
    estimates = score_estimates(rewards, CONFIG)
    subset_width = np.mean([estimates[s].high - estimates[s].low for s in BEST_OF_4])
    overall_width = estimates[OVERALL].high - estimates[OVERALL].low
    assert overall_width < 0.6 * subset_width
    low_of_means = np.mean([estimates[s].low for s in (*BEST_OF_4, "Ties")])
    assert estimates[OVERALL].low > low_of_means


def test_overall_samples_are_the_mean_of_the_subset_samples(tmp_path):
    _, rewards = write_evaluation(tmp_path, random_prompts(np.random.default_rng(3)))
    (samples,) = resampled_scores([read_subset_terms(rewards)], CONFIG, [str(rewards)])
    subsets = np.stack([samples[s] for s in (*BEST_OF_4, "Ties")])
    np.testing.assert_allclose(samples[OVERALL], subsets.mean(axis=0))


def test_a_difference_is_paired_over_the_same_resampled_prompts(tmp_path):
    outcomes = [1, 0] * 25
    a = best_of_4("Math", outcomes) + best_of_4("Focus", outcomes)
    b = list(a)
    b[0] = ("Math-0", "Math", [0.0, 1.0, 0.0, 0.0], 1)  # B loses the one Math prompt A wins over it
    _, rewards_a = write_evaluation(tmp_path / "a", a)
    _, rewards_b = write_evaluation(tmp_path / "b", b)

    same = paired_differences(rewards_a, rewards_a, CONFIG)
    assert all((e.difference.low, e.difference.high) == (0.0, 0.0) for e in same.values())
    # A - B counts how often prompt Math-0 is drawn: never negative on a shared resample. Drawn apart,
    # A's and B's resamples would differ by ~0.14 either way.
    differences = paired_differences(rewards_a, rewards_b, CONFIG)
    math_diff = differences["Math"].difference
    assert math_diff.value == pytest.approx(1 / 50)
    assert math_diff.low >= 0.0 and 0.0 < math_diff.high <= 5 / 50
    assert differences["Focus"].difference.high == 0.0 and differences["Focus"].difference.low == 0.0
    assert differences[OVERALL].difference.low >= 0.0
    assert (differences["Math"].a, differences["Math"].b) == (0.5, pytest.approx(0.48))


def test_a_difference_needs_both_models_on_the_same_prompts(tmp_path):
    _, rewards_a = write_evaluation(tmp_path / "a", best_of_4("Math", [1, 0, 1]))
    _, rewards_b = write_evaluation(tmp_path / "b", best_of_4("Math", [1, 0]))
    with pytest.raises(
        ValueError, match="b/rewards.parquet and .*a/rewards.parquet scored different prompts"
    ):
        paired_differences(rewards_a, rewards_b, CONFIG)
    _, rewards_c = write_evaluation(tmp_path / "c", best_of_4("Focus", [1, 0, 1]))
    with pytest.raises(ValueError, match="c/rewards.parquet has subsets \\['Focus'\\]"):
        paired_differences(rewards_a, rewards_c, CONFIG)


def test_intervals_depend_on_the_seed_not_on_the_row_order_of_the_file(tmp_path):
    _, rewards = write_evaluation(tmp_path, random_prompts(np.random.default_rng(1)))
    first = score_estimates(rewards, CONFIG)
    table = pd.read_parquet(rewards)
    table.sample(frac=1.0, random_state=0).to_parquet(rewards, index=False)
    assert score_estimates(rewards, CONFIG) == first
    assert score_estimates(rewards, BootstrapConfig(resamples=1000, seed=1)) != first


def test_bad_input_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere/rewards.parquet do not exist"):
        score_estimates(tmp_path / "nowhere" / "rewards.parquet", CONFIG)
    broken = tmp_path / "rewards.parquet"
    pd.DataFrame({"id": ["a"], "subset": ["Math"]}).to_parquet(broken)
    with pytest.raises(ValueError, match="rewards.parquet: reward table lacks column"):
        score_estimates(broken, CONFIG)
    with pytest.raises(ValueError, match="tables.bootstrap.resamples must be a positive integer"):
        BootstrapConfig(resamples=0)
