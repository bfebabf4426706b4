"""The spread of Overall over a Table 1 / 2 model's training seeds (tables.seeds > 1)."""

import statistics

import numpy as np
import pandas as pd
import pytest

from sarm.report.seeds import SEED_COLUMNS, SEED_SUMMARY, seed_spread
from sarm.report.tables import REPORTED, ResultRow, read_rewardbench2, results_table, write_table
from tests.report.rb2_files import random_prompts, write_evaluation
from tests.report.test_tables import REPORTED_CSV, write_scores


@pytest.fixture
def three_seeds(tmp_path):
    """A row whose first seed has per-completion rewards (bootstrap intervals) and two further seeds."""
    scores, rewards = write_evaluation(tmp_path / "sarm", random_prompts(np.random.default_rng(0)))
    further = [
        write_scores(tmp_path / "sarm_seed1/rewardbench2.json", Math=0.2),
        write_scores(tmp_path / "sarm_seed2/rewardbench2.json", Math=0.8),
    ]
    return ResultRow("ours", scores, rewards=rewards, further_seeds=tuple(further))


def overall_per_seed(row: ResultRow) -> list[float]:
    return [100 * read_rewardbench2(path)["Overall"] for path in (row.path, *row.further_seeds)]


def test_the_spread_is_over_the_seeds_each_counted_once(three_seeds):
    ours = results_table([three_seeds], REPORTED_CSV, "table2").set_index("Model").loc["ours"]
    overall = overall_per_seed(three_seeds)
    assert ours["Seeds"] == 3
    assert ours["Overall seed mean"] == pytest.approx(statistics.mean(overall))
    assert ours["Overall seed sd"] == pytest.approx(statistics.stdev(overall))  # over seeds, not prompts
    assert (ours["Overall seed min"], ours["Overall seed max"]) == pytest.approx((min(overall), max(overall)))
    # the row's own cells stay the first seed's, with its interval over prompts
    assert ours["Overall"] == pytest.approx(overall[0])
    assert ours["Overall_lo"] <= ours["Overall"] <= ours["Overall_hi"]


def test_a_missing_seed_stops_the_table_naming_its_file(three_seeds):
    three_seeds.further_seeds[1].unlink()
    with pytest.raises(FileNotFoundError, match="sarm_seed2/rewardbench2.json"):
        results_table([three_seeds], REPORTED_CSV, "table2")


def test_a_seed_listed_twice_is_refused(tmp_path):
    first = write_scores(tmp_path / "sarm/rewardbench2.json")
    with pytest.raises(ValueError, match="listed twice"):
        ResultRow("ours", first, further_seeds=(first,))
    with pytest.raises(ValueError, match="at least 2 seeds"):
        seed_spread([50.0])


def test_single_seed_and_reported_rows_leave_the_seed_columns_blank(three_seeds, tmp_path):
    single = ResultRow("one seed", write_scores(tmp_path / "single/rewardbench2.json"))
    table = results_table([three_seeds, single], REPORTED_CSV, "table2")
    blank = table[(table["Model"] == "one seed") | (table["Source"] == REPORTED)]
    assert len(blank) == 1 + (table["Source"] == REPORTED).sum()
    assert blank[list(SEED_COLUMNS)].isna().all(axis=None)


def test_a_table_without_further_seeds_has_no_seed_columns(tmp_path):
    row = ResultRow("ours", write_scores(tmp_path / "sarm/rewardbench2.json"))
    assert not set(SEED_COLUMNS) & set(results_table([row], REPORTED_CSV, "table1").columns)


def test_sweep_rows_take_no_further_seeds(three_seeds):
    row = ResultRow(
        "sweep", three_seeds.path, sweep="k", sweep_value=144, further_seeds=three_seeds.further_seeds
    )
    with pytest.raises(ValueError, match="train one seed"):
        results_table([row], REPORTED_CSV, "table3")


def test_markdown_and_latex_show_mean_and_sd_in_one_column_and_the_csv_every_number(tmp_path):
    scores = [
        write_scores(tmp_path / f"s{seed}/rewardbench2.json", Math=m)
        for seed, m in enumerate((0.2, 0.5, 0.56))
    ]
    row = ResultRow("ours", scores[0], further_seeds=tuple(scores[1:]))
    table = results_table([row], REPORTED_CSV, "table2")
    write_table(table, tmp_path / "t", caption="c")
    # Overall of the three seeds: 45, 50 and 51; mean 48.67, sample sd 3.21 (half the range: 3)
    md = (tmp_path / "t.md").read_text()
    assert f"| Overall | {SEED_SUMMARY} |" in md  # beside the first seed's Overall
    assert "| 45.0 | 48.7 ± 3.2 (3 seeds) |" in md
    assert "Overall seed min" not in md
    assert r"$48.7 \pm 3.2$ (3 seeds)" in (tmp_path / "t.tex").read_text()
    back = pd.read_csv(tmp_path / "t.csv").set_index("Model")
    expected = [3, statistics.mean([45, 50, 51]), statistics.stdev([45, 50, 51]), 45, 51]
    assert back.loc["ours", list(SEED_COLUMNS)].tolist() == pytest.approx(expected)
    assert back.loc["SARM-4B", list(SEED_COLUMNS)].isna().all()
