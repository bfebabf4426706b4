"""The figures plot the table's numbers: lines, bars, labels and hatching read back from the figure."""

import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sarm.report import plots
from sarm.report.plots import SWEEP_AXIS_LABELS, _layout, subset_bars, sweep_plot
from sarm.report.tables import REPORTED, REPRODUCED, SCORE_COLUMNS, results_table
from tests.conftest import REPO

REPORTED_CSV = REPO / "resources" / "paper" / "paper_reported.csv"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == PNG_MAGIC
    return struct.unpack(">II", header[16:24])


def sweep_rows(source: str, points: dict[float, float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Sweep": "k",
            "Value": list(points),
            "Model": "m",
            "Source": source,
            "Overall": list(points.values()),
        }
    )


@pytest.fixture(scope="module")
def paper_table3() -> pd.DataFrame:
    return results_table([], REPORTED_CSV, "table3")


@pytest.fixture
def saved_figures(monkeypatch) -> list:
    """The matplotlib figures the plot functions save, in order (the PNGs are still written)."""
    figures, save = [], plots._save

    def keep(figure, out_png):
        figures.append(figure)
        return save(figure, out_png)

    monkeypatch.setattr(plots, "_save", keep)
    return figures


def drawn_lines(figure) -> dict[str, tuple[list, list, object]]:
    """label -> (x, y, axes) of every line of the figure."""
    return {
        line.get_label(): (list(line.get_xdata()), list(line.get_ydata()), ax)
        for ax in figure.axes
        for line in ax.get_lines()
    }


def test_layout_follows_whether_values_and_scores_overlap():
    paper = sweep_rows(REPORTED, {48: 62.0, 144: 62.5, 240: 62.9})
    assert _layout(sweep_rows(REPRODUCED, {96: 60.0, 196: 63.0}), paper) == "shared"
    assert _layout(sweep_rows(REPRODUCED, {96: 30.0, 196: 33.0}), paper) == "twin-y"
    assert _layout(sweep_rows(REPRODUCED, {9: 30.0, 27: 33.0}), paper) == "panels"


@pytest.mark.parametrize("kind", ["layer", "latents", "k"])
def test_sweep_plot_draws_the_reproduced_and_reported_overall_of_each_sweep(
    tmp_path, paper_table3, saved_figures, kind
):
    ours = pd.DataFrame({"Sweep": kind, "Value": [16.0, 8.0], "Source": REPRODUCED, "Overall": [45.0, 40.0]})
    out = sweep_plot(pd.concat([paper_table3, ours]), kind, tmp_path / "plots" / f"{kind}.png")
    assert out == tmp_path / "plots" / f"{kind}.png"
    png_size(out)
    assert [path.name for path in out.parent.iterdir()] == [out.name]

    (figure,) = saved_figures
    lines = drawn_lines(figure)
    assert set(lines) == {"reproduced", "reported (paper)"}
    assert lines["reproduced"][:2] == ([8.0, 16.0], [40.0, 45.0])  # sorted by the swept value
    paper = paper_table3[paper_table3["Sweep"] == kind].sort_values("Value")
    assert lines["reported (paper)"][:2] == (paper["Value"].tolist(), paper["Overall"].tolist())
    for _, _, ax in lines.values():
        assert ax.get_xlabel() == SWEEP_AXIS_LABELS[kind]
    # layer: values and scores overlap the paper's; latents: only the values; k: neither (48..240)
    layout = {"layer": "on one axis", "latents": "separate y-axes", "k": "separate panels"}[kind]
    assert layout in figure.get_suptitle()
    assert len(figure.axes) == (1 if kind == "layer" else 2)


def test_sweep_plot_puts_a_reported_line_of_another_scale_on_its_own_y_axis(tmp_path, saved_figures):
    paper = sweep_rows(REPORTED, {48: 62.0, 144: 62.5, 240: 62.9})
    ours = sweep_rows(REPRODUCED, {96: 30.0, 196: 33.0})
    sweep_plot(pd.concat([paper, ours]), "k", tmp_path / "twin.png")
    (figure,) = saved_figures
    lines = drawn_lines(figure)
    left, right = lines["reproduced"][2], lines["reported (paper)"][2]
    assert left is not right and left.get_shared_x_axes().joined(left, right)
    assert left.get_ylabel() == "Overall, reproduced" and right.get_ylabel() == "Overall, reported (paper)"
    assert lines["reported (paper)"][1] == [62.0, 62.5, 62.9]
    assert "separate y-axes" in figure.get_suptitle()
    legend = figure.axes[-1].get_legend()
    assert [text.get_text() for text in legend.get_texts()] == ["reproduced", "reported (paper)"]


def test_sweep_plot_uses_two_panels_when_the_values_do_not_overlap(tmp_path, saved_figures):
    paper = sweep_rows(REPORTED, {48: 62.0, 144: 62.5, 240: 62.9})
    sweep_plot(pd.concat([paper, sweep_rows(REPRODUCED, {27: 33.0, 9: 30.0})]), "k", tmp_path / "b.png")
    (figure,) = saved_figures
    lines = drawn_lines(figure)
    assert lines["reproduced"][:2] == ([9, 27], [30.0, 33.0])
    assert [ax.get_title() for ax in figure.axes] == ["reproduced", "reported (paper)"]
    assert [len(ax.get_lines()) for ax in figure.axes] == [1, 1]


def test_sweep_plot_draws_a_single_source(tmp_path, paper_table3, saved_figures):
    sweep_plot(paper_table3, "layer", tmp_path / "paper_only.png")
    (figure,) = saved_figures
    lines = drawn_lines(figure)
    assert list(lines) == ["reported (paper)"]
    assert lines["reported (paper)"][:2] == (
        [7.0, 10.0, 14.0, 21.0, 28.0],
        [36.21, 53.55, 62.52, 64.17, 62.94],
    )
    assert "only one source" in figure.get_suptitle()


def test_sweep_plot_rejects_an_unknown_or_absent_sweep(tmp_path, paper_table3):
    with pytest.raises(ValueError, match="kind must be one of layer, latents, k, got 'depth'"):
        sweep_plot(paper_table3, "depth", tmp_path / "x.png")
    with pytest.raises(ValueError, match="no rows with Sweep == 'k'"):
        sweep_plot(paper_table3[paper_table3["Sweep"] != "k"], "k", tmp_path / "x.png")
    with pytest.raises(ValueError, match="table3_df lacks column\\(s\\) Sweep"):
        sweep_plot(paper_table3.drop(columns="Sweep"), "k", tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_subset_bars_draw_every_score_of_every_row_and_hatch_the_reproduced_ones(tmp_path, saved_figures):
    paper = results_table([], REPORTED_CSV, "table2")
    ours = paper.tail(1).assign(
        Source=REPRODUCED, **{column: 50.0 + i for i, column in enumerate(SCORE_COLUMNS)}
    )
    table = pd.concat([paper, ours], ignore_index=True)
    png_size(subset_bars(table, tmp_path / "bars.png"))
    (figure,) = saved_figures
    (ax,) = figure.axes
    assert [tick.get_text() for tick in ax.get_xticklabels()] == list(SCORE_COLUMNS)
    rows = table["Model"] + " (" + table["Source"] + ")"
    assert [text.get_text() for text in ax.get_legend().get_texts()] == rows.tolist()
    assert len(ax.containers) == len(table)
    for bars, (_, row) in zip(ax.containers, table.iterrows(), strict=True):
        heights = [bar.get_height() for bar in bars]
        np.testing.assert_allclose(heights, row[list(SCORE_COLUMNS)].astype(float).to_numpy())
        hatches = {bar.get_hatch() or "" for bar in bars}
        assert hatches == ({"//"} if row["Source"] == REPRODUCED else {""}), row["Model"]


def test_subset_bars_refuse_missing_columns_and_duplicate_rows(tmp_path):
    table = results_table([], REPORTED_CSV, "table2")
    with pytest.raises(ValueError, match="table_df lacks column\\(s\\) Ties"):
        subset_bars(table.drop(columns="Ties"), tmp_path / "bars.png")
    with pytest.raises(ValueError, match="the reported row 'SARM-4B' twice"):
        subset_bars(pd.concat([table, table.tail(1)]), tmp_path / "bars.png")
