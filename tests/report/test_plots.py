import struct
from pathlib import Path

import pandas as pd
import pytest

from sarm.report.plots import _layout, subset_bars, sweep_plot
from sarm.report.tables import REPORTED, REPRODUCED, results_table
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


def test_layout_follows_whether_values_and_scores_overlap():
    paper = sweep_rows(REPORTED, {48: 62.0, 144: 62.5, 240: 62.9})
    assert _layout(sweep_rows(REPRODUCED, {96: 60.0, 196: 63.0}), paper) == "shared"
    assert _layout(sweep_rows(REPRODUCED, {96: 30.0, 196: 33.0}), paper) == "twin-y"
    assert _layout(sweep_rows(REPRODUCED, {9: 30.0, 27: 33.0}), paper) == "panels"


@pytest.mark.parametrize("kind", ["layer", "latents", "k"])
def test_sweep_plot_writes_a_png_for_each_sweep(tmp_path, paper_table3, kind):
    ours = pd.DataFrame({"Sweep": kind, "Value": [8.0, 16.0], "Source": REPRODUCED, "Overall": [40.0, 45.0]})
    out = sweep_plot(pd.concat([paper_table3, ours]), kind, tmp_path / "plots" / f"{kind}.png")
    assert out == tmp_path / "plots" / f"{kind}.png"
    assert out.stat().st_size > 1000
    png_size(out)
    assert [path.name for path in out.parent.iterdir()] == [out.name]


def test_sweep_plot_uses_two_panels_when_the_values_do_not_overlap(tmp_path):
    paper = sweep_rows(REPORTED, {48: 62.0, 144: 62.5, 240: 62.9})
    shared = sweep_plot(
        pd.concat([paper, sweep_rows(REPRODUCED, {96: 60.0, 196: 63.0})]), "k", tmp_path / "a.png"
    )
    panels = sweep_plot(
        pd.concat([paper, sweep_rows(REPRODUCED, {9: 30.0, 27: 33.0})]), "k", tmp_path / "b.png"
    )
    assert png_size(panels)[0] > png_size(shared)[0]


def test_sweep_plot_draws_a_single_source(tmp_path, paper_table3):
    assert sweep_plot(paper_table3, "layer", tmp_path / "paper_only.png").stat().st_size > 1000


def test_sweep_plot_rejects_an_unknown_or_absent_sweep(tmp_path, paper_table3):
    with pytest.raises(ValueError, match="kind must be one of layer, latents, k, got 'depth'"):
        sweep_plot(paper_table3, "depth", tmp_path / "x.png")
    with pytest.raises(ValueError, match="no rows with Sweep == 'k'"):
        sweep_plot(paper_table3[paper_table3["Sweep"] != "k"], "k", tmp_path / "x.png")
    with pytest.raises(ValueError, match="table3_df lacks column\\(s\\) Sweep"):
        sweep_plot(paper_table3.drop(columns="Sweep"), "k", tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_subset_bars_writes_a_png(tmp_path):
    table = results_table([], REPORTED_CSV, "table2")
    out = subset_bars(table, tmp_path / "bars.png")
    assert out.stat().st_size > 1000
    png_size(out)
    with pytest.raises(ValueError, match="table_df lacks column\\(s\\) Ties"):
        subset_bars(table.drop(columns="Ties"), tmp_path / "bars.png")
    with pytest.raises(ValueError, match="the reported row 'SARM-4B' twice"):
        subset_bars(pd.concat([table, table.tail(1)]), tmp_path / "bars.png")
