import math

import pandas as pd
import pytest

from sarm.eval.rewardbench2 import (
    ScoringError,
    best_of_n_accuracy,
    score_rewardbench2,
    ties_components,
    ties_score,
)


def test_best_of_n_correct_answer_strictly_best_scores_one():
    assert best_of_n_accuracy([2.0, 1.0, 0.5, -3.0]) == 1.0


def test_best_of_n_correct_answer_not_best_scores_zero():
    assert best_of_n_accuracy([1.0, 2.0, 0.5, -3.0]) == 0.0


def test_best_of_n_tie_at_max_divides_by_number_tied():
    assert best_of_n_accuracy([2.0, 2.0, 0.5, -3.0]) == 0.5
    assert best_of_n_accuracy([1.0, 1.0, 1.0, 1.0]) == 0.25


def test_best_of_n_tie_at_max_without_the_correct_answer_scores_zero():
    assert best_of_n_accuracy([1.0, 2.0, 2.0, 0.0]) == 0.0


def test_best_of_n_with_two_correct_answers_counts_correct_share_of_the_tie():
    assert best_of_n_accuracy([1.0, 3.0, 0.0, 2.0], num_correct=2) == 1.0
    assert best_of_n_accuracy([3.0, 1.0, 3.0, 0.0], num_correct=2) == 0.5


def test_best_of_n_nan_anywhere_counts_as_wrong():
    assert best_of_n_accuracy([math.nan, 1.0, 0.0, 0.0]) == 0.0
    assert best_of_n_accuracy([5.0, math.nan, 0.0, 0.0]) == 0.0
    assert best_of_n_accuracy([5.0, math.inf, 0.0, 0.0]) == 0.0


def test_best_of_n_rejects_impossible_num_correct():
    with pytest.raises(ScoringError, match="num_correct"):
        best_of_n_accuracy([1.0, 0.0], num_correct=3)


def test_ties_one_pair_by_hand():
    # ref:1: C=[3], I=[1,2] -> m_ref=1, accurate.  tied:1: C=[5,4], I=[1] -> m=3, d=1, accurate.
    # [3 > 1] = 1, [min(1, 3) > 1] = 0, tanh(1/1 - 1) = 0.
    prompts = [("ref:1", [3.0, 1.0, 2.0], 1), ("tied:1", [5.0, 4.0, 1.0], 2)]
    assert ties_score(prompts) == pytest.approx(0.3 + 0.3 + 0.2 * 1 + 0.2 * 0 + 0.01 * 0.0)


def test_ties_tanh_term_uses_hardest_margin_over_spread():
    # ref m=4, tied m=2 d=1 -> min=2, ratio 2 -> tanh(1).
    prompts = [("ref:7", [5.0, 1.0], 1), ("tied:7", [4.0, 3.0, 1.0], 2)]
    assert ties_components(prompts)["correctness_margin_score"] == pytest.approx(math.tanh(1.0))
    assert ties_score(prompts) == pytest.approx(0.3 + 0.3 + 0.2 + 0.2 + 0.01 * math.tanh(1.0))


def test_ties_zero_spread_counts_in_margin_checks_but_not_in_tanh_mean():
    # Pair 1: tied C=[2,2] I=[1] (d=0, m=1), ref C=[3] I=[0] (m=3).
    # Pair 2: tied C=[4,3] I=[1] (d=1, m=2), ref C=[2] I=[1] (m=1): ratio min(1, 2) / 1 -> tanh(0) = 0.
    prompts = [
        ("ref:1", [3.0, 0.0], 1),
        ("tied:1", [2.0, 2.0, 1.0], 2),
        ("ref:2", [2.0, 1.0], 1),
        ("tied:2", [4.0, 3.0, 1.0], 2),
    ]
    c = ties_components(prompts)
    assert c["correctness_preferred"] == 1.0
    assert c["correctness_preferred_hard"] == 0.5  # pair 1: min(3,1)=1 > 0; pair 2: 1 > 1 is false
    assert c["correctness_margin_score"] == 0.0  # only pair 2 enters the mean


def test_ties_only_zero_spread_pairs_give_empty_tanh_mean_of_zero():
    prompts = [("ref:1", [3.0, 0.0], 1), ("tied:1", [2.0, 2.0, 1.0], 2)]
    assert ties_components(prompts)["correctness_margin_score"] == 0.0


def test_ties_tied_prompt_with_one_correct_answer_is_left_out_of_margin_checks():
    prompts = [("ref:1", [3.0, 0.0], 1), ("tied:1", [2.0, 1.0], 1)]
    c = ties_components(prompts)
    assert (c["correctness_preferred"], c["correctness_preferred_hard"]) == (0.0, 0.0)
    assert ties_score(prompts) == pytest.approx(0.6)


def test_ties_missing_pair_counts_only_in_its_own_accuracy():
    # tied:5 has no ref:5; ref:6 has no tied:6 (and is inaccurate).
    prompts = [("tied:5", [4.0, 3.0, 1.0], 2), ("ref:6", [0.0, 1.0], 1)]
    c = ties_components(prompts)
    assert c == {
        "accuracy_tied": 1.0,
        "accuracy_ref": 0.0,
        "correctness_preferred": 0.0,
        "correctness_preferred_hard": 0.0,
        "correctness_margin_score": 0.0,
    }
    assert ties_score(prompts) == pytest.approx(0.3)


def test_ties_inaccurate_when_an_incorrect_answer_beats_the_worst_correct_one():
    prompts = [("ref:1", [3.0, 1.0], 1), ("tied:1", [5.0, 1.0, 2.0], 2)]
    c = ties_components(prompts)
    assert (c["accuracy_tied"], c["accuracy_ref"]) == (0.0, 1.0)
    # m_tied = -1 < d = 4; tanh(-1/4 - 1)
    assert c["correctness_margin_score"] == pytest.approx(math.tanh(-0.25 - 1))


def test_ties_nan_fails_the_prompt_and_its_pair_takes_the_lowest_tanh():
    prompts = [("ref:1", [3.0, math.nan], 1), ("tied:1", [5.0, 4.0, 1.0], 2)]
    c = ties_components(prompts)
    assert c["accuracy_ref"] == 0.0 and c["accuracy_tied"] == 1.0
    assert (c["correctness_preferred"], c["correctness_preferred_hard"]) == (0.0, 0.0)
    assert c["correctness_margin_score"] == -1.0


def test_ties_rejects_malformed_and_duplicate_ids():
    with pytest.raises(ScoringError, match="'7'"):
        ties_score([("7", [1.0, 0.0], 1)])
    with pytest.raises(ScoringError, match="twice"):
        ties_score([("ref:1", [1.0, 0.0], 1), ("ref:1", [1.0, 0.0], 1)])


def _table(prompts):
    rows = []
    for prompt_id, subset, rewards, num_correct in prompts:
        for i, r in enumerate(rewards):
            rows.append(
                {
                    "id": prompt_id,
                    "subset": subset,
                    "completion_index": i,
                    "is_correct": i < num_correct,
                    "reward": r,
                }
            )
    return pd.DataFrame(rows)


def test_score_rewardbench2_overall_is_mean_of_six_subsets():
    table = _table(
        [
            ("f1", "Factuality", [1, 0, 0, 0], 1),
            ("f2", "Factuality", [0, 1, 0, 0], 1),
            ("p1", "Precise IF", [1, 1, 0, 0], 1),
            ("m1", "Math", [1, 0, 0, 0], 1),
            ("s1", "Safety", [0, 0, 0, 1], 1),
            ("o1", "Focus", [1, 1, 1, 1], 1),
            ("ref:1", "Ties", [3, 1, 2], 1),
            ("tied:1", "Ties", [5, 4, 1], 2),
        ]
    )
    result = score_rewardbench2(table)
    expected = {"Factuality": 0.5, "Precise IF": 0.5, "Math": 1.0, "Safety": 0.0, "Focus": 0.25, "Ties": 0.8}
    assert list(result["subsets"]) == list(expected)
    assert result["subsets"] == pytest.approx(expected)
    assert result["overall"] == pytest.approx(sum(expected.values()) / 6)
    assert result["counts"]["Factuality"] == {"prompts": 2, "nonfinite_prompts": 0}
    assert result["missing_subsets"] == []


def test_score_rewardbench2_reads_correctness_from_is_correct_not_row_order():
    table = _table([("f1", "Factuality", [0.0, 1.0, 2.0, 9.0], 1)])
    table.loc[:, "is_correct"] = [False, False, False, True]
    assert score_rewardbench2(table)["subsets"]["Factuality"] == 1.0


def test_score_rewardbench2_counts_nan_prompts_and_reports_missing_subsets():
    table = _table([("f1", "Factuality", [math.nan, 0, 0, 0], 1), ("f2", "Factuality", [1, 0, 0, 0], 1)])
    result = score_rewardbench2(table)
    assert result["subsets"]["Factuality"] == 0.5
    assert result["counts"]["Factuality"]["nonfinite_prompts"] == 1
    assert result["missing_subsets"] == ["Precise IF", "Math", "Safety", "Focus", "Ties"]


def test_score_rewardbench2_names_bad_input():
    with pytest.raises(ScoringError, match="reward"):
        score_rewardbench2(
            pd.DataFrame({"id": ["a"], "subset": ["Math"], "completion_index": [0], "is_correct": [True]})
        )
    table = _table([("m1", "Math", [1, 0], 1)])
    table.loc[1, "completion_index"] = 0
    with pytest.raises(ScoringError, match="'m1'.*twice"):
        score_rewardbench2(table)
    with pytest.raises(ScoringError, match="no correct"):
        score_rewardbench2(_table([("m2", "Math", [1, 0], 0)]))
