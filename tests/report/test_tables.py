import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sarm.report.bootstrap import BootstrapConfig, score_estimates
from sarm.report.tables import (
    REPORTED,
    REPRODUCED,
    SCORE_COLUMNS,
    SUBSETS,
    ResultRow,
    compute_table,
    latex_escape,
    read_rewardbench2,
    results_table,
    write_table,
)
from tests.conftest import REPO
from tests.report.rb2_files import random_prompts, write_evaluation

REPORTED_CSV = REPO / "resources" / "paper" / "paper_reported.csv"
COMPUTE_CSV = REPO / "resources" / "paper" / "paper_compute.csv"
PAPER_SARM_2B = "SARM-2B (Llama-3.2-3B-Instruct layer 14)"


def write_scores(path: Path, **subsets: float) -> Path:
    """A rewardbench2.json with every subset at 0.5 unless given, and a consistent overall."""
    scores = {name: 0.5 for name in SUBSETS}
    scores.update({name.replace("_", " "): value for name, value in subsets.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    overall = sum(scores.values()) / len(scores)
    path.write_text(json.dumps({"subsets": scores, "overall": overall, "counts": dict.fromkeys(scores, 10)}))
    return path


def write_benchmark(path: Path, *seconds: float) -> Path:
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time"
    rows = [f"{value:.4f}\t0:00:00\t10.0\t20.0\t5.0\t6.0\t0.0\t0.0\t50.0\t1.0" for value in seconds]
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_reproduced_cell_comes_from_the_result_file(tmp_path):
    result = write_scores(tmp_path / "rewardbench2.json", Math=0.25)
    rows = [ResultRow("ours", result)]
    assert results_table(rows, REPORTED_CSV, "table2").set_index("Model").loc["ours", "Math"] == 25.0

    write_scores(result, Math=0.75)
    table = results_table(rows, REPORTED_CSV, "table2").set_index("Model")
    assert table.loc["ours", "Math"] == 75.0
    assert table.loc["ours", "Overall"] == pytest.approx(100 * (5 * 0.5 + 0.75) / 6)


def test_reproduced_and_reported_rows_never_share_a_row(tmp_path):
    ours = write_scores(tmp_path / "sarm/rewardbench2.json", Safety=0.9)
    vanilla = write_scores(tmp_path / "vanilla/rewardbench2.json", Safety=0.1)
    rows = [
        ResultRow("SARM demo", ours, reported_as=PAPER_SARM_2B, size="0.1B"),
        ResultRow("Vanilla RM", vanilla),
    ]
    table = results_table(rows, REPORTED_CSV, "table1")

    assert set(table["Source"]) == {REPRODUCED, REPORTED}
    reproduced = table[table["Source"] == REPRODUCED].set_index("Model")
    assert list(reproduced.index) == ["SARM demo", "Vanilla RM"]
    assert list(reproduced["Safety"]) == [90.0, 10.0]
    paper = pd.read_csv(REPORTED_CSV).query("table == 'table1'").set_index("model")
    for _, row in table[table["Source"] == REPORTED].iterrows():
        assert row["Model"] in paper.index
        assert row["Safety"] == paper.loc[row["Model"], "safety"]
        assert row["Overall"] == paper.loc[row["Model"], "overall"]


def test_table1_keeps_paper_order_with_ours_just_above_its_paper_row(tmp_path):
    rows = [
        ResultRow("Vanilla RM", write_scores(tmp_path / "v.json")),
        ResultRow("SARM demo", write_scores(tmp_path / "s.json"), reported_as=PAPER_SARM_2B),
    ]
    table = results_table(rows, REPORTED_CSV, "table1")
    paper = list(pd.read_csv(REPORTED_CSV).query("table == 'table1'")["model"])

    assert list(table.loc[table["Source"] == REPORTED, "Model"]) == paper
    ours = table.index[table["Model"] == "SARM demo"][0]
    assert (table.loc[ours + 1, "Model"], table.loc[ours + 1, "Source"]) == (PAPER_SARM_2B, REPORTED)
    assert table.loc[ours - 1, "Model"] == "GPT-4.1"  # the last leaderboard row
    assert table["Model"].iloc[-1] == "Vanilla RM"  # rows without a paper counterpart come last


def test_reported_size_comes_from_the_csv_and_ours_from_the_row(tmp_path):
    rows = [ResultRow("ours", write_scores(tmp_path / "r.json"), size="0.1B")]
    table = results_table(rows, REPORTED_CSV, "table1").set_index("Model")
    assert table.loc["ours", "Size"] == "0.1B"
    assert table.loc["ArmoRM-Llama3-8B-v0.1", "Size"] == "7.5B"
    assert table.loc["GPT-4o", "Size"] == ""


def test_table3_rows_carry_sweep_and_value_and_sit_beside_their_paper_row(tmp_path):
    rows = [
        ResultRow(
            "k 27", write_scores(tmp_path / "k27.json"), reported_as="144 (SARM)", sweep="k", sweep_value=27
        ),
        ResultRow(
            "layer 15",
            write_scores(tmp_path / "l15.json"),
            reported_as="Layer 14 (SARM)",
            sweep="layer",
            sweep_value=15,
        ),
        ResultRow("layer 5", write_scores(tmp_path / "l5.json"), sweep="layer", sweep_value=5),
    ]
    table = results_table(rows, REPORTED_CSV, "table3")

    assert list(dict.fromkeys(table["Sweep"])) == ["layer", "latents", "k"]
    layer = table[table["Sweep"] == "layer"]
    assert list(zip(layer["Model"], layer["Value"], strict=True)) == [
        ("layer 5", 5.0),
        ("Layer 7", 7.0),
        ("Layer 10", 10.0),
        ("layer 15", 15.0),
        ("Layer 14 (SARM)", 14.0),
        ("Layer 21", 21.0),
        ("Layer 28", 28.0),
    ]
    k = table[table["Sweep"] == "k"].reset_index(drop=True)
    at = k.index[k["Model"] == "k 27"][0]
    assert (k.loc[at, "Source"], k.loc[at + 1, "Model"]) == (REPRODUCED, "144 (SARM)")
    assert set(table.loc[table["Sweep"] == "latents", "Value"]) == {8.0, 12.0, 16.0, 24.0, 32.0}


def test_table3_requires_a_sweep_kind_matching_the_paper_row(tmp_path):
    result = write_scores(tmp_path / "r.json")
    with pytest.raises(ValueError, match="'no sweep'.*sweep must be one of"):
        results_table([ResultRow("no sweep", result)], REPORTED_CSV, "table3")
    with pytest.raises(ValueError, match="'16x \\(SARM\\)' belongs to the 'latents' sweep, not 'k'"):
        results_table(
            [ResultRow("x", result, reported_as="16x (SARM)", sweep="k", sweep_value=1)],
            REPORTED_CSV,
            "table3",
        )


def test_unknown_reported_as_names_the_row_and_the_table(tmp_path):
    rows = [ResultRow("mine", write_scores(tmp_path / "r.json"), reported_as="SARM-9B")]
    with pytest.raises(ValueError, match="row 'mine': reported_as='SARM-9B' is not a `model` of table2"):
        results_table(rows, REPORTED_CSV, "table2")


def test_missing_result_file_is_named(tmp_path):
    missing = tmp_path / "nowhere" / "rewardbench2.json"
    with pytest.raises(FileNotFoundError, match="nowhere/rewardbench2.json"):
        results_table([ResultRow("x", missing)], REPORTED_CSV, "table1")


@pytest.mark.parametrize(
    ("content", "key"),
    [
        ({"overall": 0.5}, "`subsets`"),
        ({"subsets": {name: 0.5 for name in SUBSETS if name != "Math"}, "overall": 0.5}, "`subsets.Math`"),
        ({"subsets": dict.fromkeys(SUBSETS, 0.5)}, "`overall`"),
        ({"subsets": {**dict.fromkeys(SUBSETS, 0.5), "Ties": 55.0}, "overall": 0.5}, "`subsets.Ties`"),
        ({"subsets": {**dict.fromkeys(SUBSETS, 0.5), "Focus": "high"}, "overall": 0.5}, "`subsets.Focus`"),
        ({"subsets": dict.fromkeys(SUBSETS, 0.5), "overall": 0.9}, "`overall` is 0.9 but the mean"),
        (
            {"subsets": dict.fromkeys(SUBSETS, 0.5), "overall": 0.5, "missing_subsets": "Ties"},
            "`missing_subsets`",
        ),
    ],
)
def test_malformed_result_file_names_the_file_and_the_key(tmp_path, content, key):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match="bad.json") as error:
        read_rewardbench2(path)
    assert key in str(error.value)


def test_a_subset_declared_missing_becomes_an_empty_cell(tmp_path):
    subsets = {"factuality": 0.2, "Precise IF": 0.4, "Math": 0.6, "Safety": 0.8, "Focus": 1.0}
    path = tmp_path / "rewardbench2.json"
    path.write_text(json.dumps({"subsets": subsets, "overall": 0.6, "missing_subsets": ["Ties"]}))
    table = results_table([ResultRow("no ties", path)], REPORTED_CSV, "table2").set_index("Model")

    assert table.loc["no ties", "Factuality"] == pytest.approx(20.0)  # names match case-insensitively
    assert table.loc["no ties", "Overall"] == pytest.approx(60.0)
    assert math.isnan(table.loc["no ties", "Ties"])
    write_table(table.reset_index(), tmp_path / "t", caption="c")
    assert (
        "| no ties | reproduced |  | 60.0 | 20.0 | 40.0 | 60.0 | 80.0 | 100.0 |  |"
        in (tmp_path / "t.md").read_text()
    )


def test_result_file_that_is_not_json_is_named(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        read_rewardbench2(path)


def test_malformed_reported_csv_names_the_line_and_column(tmp_path):
    csv = tmp_path / "reported.csv"
    text = REPORTED_CSV.read_text().splitlines()
    text[1] = text[1].replace("65.7", "n/a", 1)
    csv.write_text("\n".join(text) + "\n")
    with pytest.raises(
        ValueError, match="reported.csv, line 2: column `factuality` must be a number, got 'n/a'"
    ):
        results_table([], csv, "table1")


def test_latex_escape_escapes_every_special_once():
    assert (
        latex_escape("a_b & 50% $x$ #1 {y} ~z ^w")
        == r"a\_b \& 50\% \$x\$ \#1 \{y\} \textasciitilde{}z \textasciicircum{}w"
    )
    assert latex_escape("\\") == r"\textbackslash{}"


def test_write_table_writes_markdown_csv_and_escaped_booktabs_latex(tmp_path):
    rows = [ResultRow("SARM_demo & 50%", write_scores(tmp_path / "r.json", Math=0.123))]
    table = results_table(rows, REPORTED_CSV, "table2")
    paths = write_table(table, tmp_path / "out" / "table2", caption="Ablations | 100% of #runs")

    assert sorted(path.name for path in paths) == ["table2.csv", "table2.md", "table2.tex"]
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [
        "table2.csv",
        "table2.md",
        "table2.tex",
    ]
    tex = (tmp_path / "out" / "table2.tex").read_text()
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"SARM\_demo \& 50\% & reproduced" in tex
    assert r"\caption{Ablations | 100\% of \#runs}" in tex
    assert r"\begin{tabular}{lllrrrrrrrrrrl}" in tex  # 7 scores, SAE FVU, L0, dead fraction, split
    assert r"\label{tab:table2}" in tex
    md = (tmp_path / "out" / "table2.md").read_text()
    assert md.startswith("Ablations | 100% of #runs\n")
    assert "| SARM_demo & 50% | reproduced |  | 43.7 | 50.0 | 50.0 | 12.3 |" in md
    assert "| SARM-4B | reported | (4+0.3)B | 73.6 |" in md
    back = pd.read_csv(tmp_path / "out" / "table2.csv")
    assert back.set_index("Model").loc["SARM_demo & 50%", "Math"] == pytest.approx(12.3)
    assert list(back.columns) == list(table.columns)


def test_write_table_puts_a_rule_between_sweeps(tmp_path):
    table = results_table([], REPORTED_CSV, "table3")
    write_table(table, tmp_path / "table3", caption="Sweeps", decimals=2)
    body = (tmp_path / "table3.tex").read_text().split(r"\midrule", 1)[1]
    assert body.count(r"\midrule") == 2
    assert r"layer & 14 & Layer 14 (SARM) & reported & (1.5+0.15)B & 62.52 &" in body


def test_compute_table_sums_hours_over_files_and_averages_repeats(tmp_path):
    sae = [write_benchmark(tmp_path / "sae_a.tsv", 1800), write_benchmark(tmp_path / "sae_b.tsv", 3000, 4200)]
    sarm = [write_benchmark(tmp_path / "sarm.tsv", 720)]
    table = compute_table({"SAE training": sae, "Demo only": sarm}, "2-core CPU", COMPUTE_CSV)

    assert list(zip(table["Procedure"], table["Source"], strict=True)) == [
        ("SAE training", REPRODUCED),
        ("SAE training", REPORTED),
        ("Demo only", REPRODUCED),
        ("SARM reward modeling", REPORTED),
    ]
    ours = table[table["Source"] == REPRODUCED].set_index("Procedure")
    assert ours.loc["SAE training", "Hours"] == pytest.approx((1800 + 3600) / 3600)
    assert ours.loc["Demo only", "Hours"] == pytest.approx(0.2)
    assert list(ours["Jobs"]) == [2, 1]
    assert set(ours["Device"]) == {"2-core CPU"}
    paper = table[table["Source"] == REPORTED].set_index("Procedure")
    assert paper.loc["SAE training", "Device"] == "NVIDIA RTX 3090"
    assert paper.loc["SARM reward modeling", "Hours"] == 40.0
    assert paper["Jobs"].isna().all()
    write_table(table, tmp_path / "table4", caption="Compute", decimals=2)
    assert "| SAE training | reproduced | 2-core CPU | 1.50 | 2 |" in (tmp_path / "table4.md").read_text()


def test_compute_table_names_a_missing_or_malformed_benchmark_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="gone.tsv"):
        compute_table({"SAE training": [tmp_path / "gone.tsv"]}, "cpu", COMPUTE_CSV)
    bad = tmp_path / "bad.tsv"
    bad.write_text("seconds\n1.0\n")
    with pytest.raises(ValueError, match="bad.tsv: column `s` is missing"):
        compute_table({"SAE training": [bad]}, "cpu", COMPUTE_CSV)
    write_benchmark(bad, 1.0)
    bad.write_text(bad.read_text().replace("1.0000", "soon"))
    with pytest.raises(ValueError, match="bad.tsv, line 2: column `s` must be a number"):
        compute_table({"SAE training": [bad]}, "cpu", COMPUTE_CSV)


def write_sae_metrics(path: Path, fvu: float, l0: float, dead: float, split: str = "heldout") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"eval_split": split, "fvu": fvu, "l0": l0, "dead_fraction": dead, "steps": 3})
    )
    return path


def test_reproduced_cells_carry_their_bootstrap_interval_and_reported_cells_none(tmp_path):
    scores, rewards = write_evaluation(tmp_path / "sarm", random_prompts(np.random.default_rng(0)))
    rows = [ResultRow("ours", scores, rewards=rewards)]
    table = results_table(rows, REPORTED_CSV, "table2", BootstrapConfig(resamples=500, seed=0))

    ours = table[table["Source"] == REPRODUCED].iloc[0]
    estimates = score_estimates(rewards, BootstrapConfig(resamples=500, seed=0))
    for column in SCORE_COLUMNS:
        assert ours[f"{column}_lo"] == pytest.approx(100 * estimates[column].low)
        assert ours[f"{column}_hi"] == pytest.approx(100 * estimates[column].high)
        assert ours[f"{column}_lo"] <= ours[column] <= ours[f"{column}_hi"]
    paper = table[table["Source"] == REPORTED]
    assert paper[[f"{c}_{b}" for c in SCORE_COLUMNS for b in ("lo", "hi")]].isna().all(axis=None)


def test_markdown_shows_half_the_interval_width_and_latex_the_bounds(tmp_path):
    scores, rewards = write_evaluation(tmp_path / "sarm", random_prompts(np.random.default_rng(2)))
    table = results_table([ResultRow("ours", scores, rewards=rewards)], REPORTED_CSV, "table2")
    write_table(table, tmp_path / "t", caption="c")
    ours = table.set_index("Model").loc["ours"]
    half = (ours["Overall_hi"] - ours["Overall_lo"]) / 2
    md = (tmp_path / "t.md").read_text()
    assert f"| ours | reproduced |  | {ours['Overall']:.1f} ± {half:.1f} | {ours['Factuality']:.1f} ± " in md
    assert "| SARM-4B | reported | (4+0.3)B | 73.6 | " in md  # no interval on the paper's row
    tex = (tmp_path / "t.tex").read_text()
    assert f"${ours['Overall']:.1f}_{{{ours['Overall_lo']:.1f}}}^{{{ours['Overall_hi']:.1f}}}$" in tex
    back = pd.read_csv(tmp_path / "t.csv").set_index("Model")
    assert back.loc["ours", "Overall_lo"] == pytest.approx(ours["Overall_lo"])


def test_rewards_from_another_evaluation_are_refused(tmp_path):
    scores, _ = write_evaluation(tmp_path / "a", random_prompts(np.random.default_rng(0)))
    _, other = write_evaluation(tmp_path / "b", random_prompts(np.random.default_rng(1)))
    with pytest.raises(
        ValueError, match="row 'ours': the rewards in .*b/rewards.parquet give Overall .* but .*a/"
    ):
        results_table([ResultRow("ours", scores, rewards=other)], REPORTED_CSV, "table2")


def test_each_row_shows_the_metrics_of_its_own_sae(tmp_path):
    sequence = write_sae_metrics(tmp_path / "sequence/metrics.json", fvu=0.07, l0=27.0, dead=0.01)
    token = write_sae_metrics(tmp_path / "token/metrics.json", fvu=0.25, l0=26.5, dead=0.2, split="train")
    rows = [
        ResultRow("SARM", write_scores(tmp_path / "s.json"), sae_metrics=sequence),
        ResultRow("token-level", write_scores(tmp_path / "t.json"), sae_metrics=token),
        ResultRow("random encoder", write_scores(tmp_path / "r.json")),
    ]
    table = results_table(rows, REPORTED_CSV, "table2").set_index("Model")
    sae = ["SAE FVU", "SAE L0", "SAE dead fraction", "SAE split"]
    assert table.loc["SARM", sae].tolist() == [0.07, 27.0, 0.01, "heldout"]
    assert table.loc["token-level", sae].tolist() == [0.25, 26.5, 0.2, "train"]
    assert table.loc["random encoder", sae].isna().all()
    assert table.loc["SARM-4B", sae].isna().all()  # the paper's row
    write_table(table.reset_index(), tmp_path / "t", caption="c")
    md = (tmp_path / "t.md").read_text()
    assert "| SARM | reproduced |" in md and "| 0.070 | 27.0 | 0.010 | heldout |" in md
    assert "| 0.250 | 26.5 | 0.200 | train |" in md


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"fvu": 0.1, "l0": 3, "dead_fraction": 0.1}, "key `eval_split` is missing"),
        ({"fvu": 0.1, "l0": 3, "eval_split": "heldout"}, "key `dead_fraction` is missing"),
        (
            {"fvu": "low", "l0": 3, "dead_fraction": 0.1, "eval_split": "heldout"},
            "key `fvu` must be a finite",
        ),
        (
            {"fvu": 0.1, "l0": 3, "dead_fraction": 2.0, "eval_split": "heldout"},
            "key `dead_fraction` must be a fraction",
        ),
        (
            {"fvu": 0.1, "l0": 3, "dead_fraction": 0.1, "eval_split": "test"},
            "key `eval_split` must be one of",
        ),
    ],
)
def test_malformed_sae_metrics_name_the_file_and_key(tmp_path, content, message):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(content))
    rows = [ResultRow("x", write_scores(tmp_path / "r.json"), sae_metrics=path)]
    with pytest.raises(ValueError, match=f"metrics.json: {message}"):
        results_table(rows, REPORTED_CSV, "table2")
    with pytest.raises(FileNotFoundError, match="gone/metrics.json does not exist"):
        results_table(
            [ResultRow("x", rows[0].path, sae_metrics=tmp_path / "gone/metrics.json")], REPORTED_CSV
        )
