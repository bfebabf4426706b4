import pandas as pd
import pytest

from sarm.report.bootstrap import BootstrapConfig, paired_differences
from sarm.report.comparisons import ComparedPair, comparisons_table
from sarm.report.tables import SCORE_COLUMNS, write_table
from tests.report.rb2_files import best_of_4, write_evaluation

CONFIG = BootstrapConfig(resamples=500, seed=0)


def evaluation(folder, math_outcomes, other_outcomes):
    prompts = best_of_4("Math", math_outcomes)
    for subset in ("Factuality", "Precise IF", "Safety", "Focus"):
        prompts += best_of_4(subset, other_outcomes)
    prompts += [("ref:1", "Ties", [2.0, 0.0], 1), ("tied:1", "Ties", [5.0, 4.0, 0.0], 2)]
    return write_evaluation(folder, prompts)


def test_each_pair_gets_a_row_per_score_with_its_paired_difference(tmp_path):
    scores_a, rewards_a = evaluation(tmp_path / "a", [1] * 30, [1, 0] * 15)
    scores_b, rewards_b = evaluation(tmp_path / "b", [1, 0] * 15, [1, 0] * 15)
    pair = ComparedPair("A vs B", "model A", scores_a, rewards_a, "model B", scores_b, rewards_b)
    table = comparisons_table([pair], CONFIG).set_index("Score")

    assert list(table.index) == list(SCORE_COLUMNS)
    assert (table["Comparison"] == "A vs B").all() and (table["A"] == "model A").all()
    math = table.loc["Math"]
    assert (math["A score"], math["B score"], math["Difference"]) == (100.0, 50.0, 50.0)
    expected = paired_differences(rewards_a, rewards_b, CONFIG)["Math"].difference
    assert (math["Difference_lo"], math["Difference_hi"]) == (100 * expected.low, 100 * expected.high)
    assert math["Difference_lo"] > 0 and math["Excludes 0"] == "yes"
    focus = table.loc["Focus"]  # identical outcomes on shared resamples: exactly 0
    assert (focus["Difference"], focus["Difference_lo"], focus["Difference_hi"]) == (0.0, 0.0, 0.0)
    assert focus["Excludes 0"] == "no"
    assert table.loc["Overall", "Difference"] == pytest.approx(50.0 / 6)

    write_table(table.reset_index(), tmp_path / "comparisons", caption="c", intervals="bounds")
    md = (tmp_path / "comparisons.md").read_text()
    low, high = math["Difference_lo"], math["Difference_hi"]
    assert f"| 100.0 | 50.0 | 50.0 [{low:.1f}, {high:.1f}] | yes |" in md
    back = pd.read_csv(tmp_path / "comparisons.csv")
    assert {"Difference_lo", "Difference_hi", "Excludes 0"} <= set(back.columns)


def test_a_side_whose_scores_and_rewards_disagree_is_refused(tmp_path):
    scores_a, rewards_a = evaluation(tmp_path / "a", [1] * 30, [1, 0] * 15)
    scores_b, rewards_b = evaluation(tmp_path / "b", [1, 0] * 15, [1, 0] * 15)
    pair = ComparedPair("A vs B", "model A", scores_b, rewards_a, "model B", scores_b, rewards_b)
    with pytest.raises(ValueError, match="row 'model A': the rewards in .*a/rewards.parquet give"):
        comparisons_table([pair], CONFIG)
