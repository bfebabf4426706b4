"""Figures from the regenerated tables: Table 3's sweeps as lines, per-subset scores as bars."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sarm.report.tables import REPORTED, REPRODUCED, SCORE_COLUMNS, SWEEP_KINDS
from sarm.runtime import atomic_write

SWEEP_AXIS_LABELS = {
    "layer": "SAE layer",
    "latents": "SAE latents (multiple of hidden size d)",
    "k": "active latents k",
}
SWEEP_TITLES = {"layer": "SAE layer", "latents": "SAE width", "k": "sparsity k"}
LINE_LABELS = {REPRODUCED: "reproduced", REPORTED: "reported (paper)"}
_LAYOUT_TITLES = {
    "shared": "reproduced and reported on one axis",
    "twin-y": "separate y-axes: left reproduced, right reported (scales differ)",
    "panels": "separate panels (the swept values differ)",
    "single": "only one source available",
}
_STYLE = "whitegrid"


def sweep_plot(table3_df: pd.DataFrame, kind: str, out_png: str | Path) -> Path:
    """Overall vs the swept value, reproduced and reported as two lines; the title says how axes are shared."""
    _require_columns(table3_df, ("Sweep", "Value", "Source", "Overall"), "table3_df")
    if kind not in SWEEP_KINDS:
        raise ValueError(f"kind must be one of {', '.join(SWEEP_KINDS)}, got {kind!r}")
    rows = table3_df[table3_df["Sweep"] == kind].sort_values("Value")
    if rows.empty:
        raise ValueError(f"table3_df has no rows with Sweep == {kind!r}")
    lines = {source: rows[rows["Source"] == source] for source in (REPRODUCED, REPORTED)}
    lines = {source: line for source, line in lines.items() if not line.empty}
    layout = _layout(*lines.values()) if len(lines) == 2 else "single"
    colors = dict(zip((REPRODUCED, REPORTED), sns.color_palette("colorblind", 2), strict=True))

    with sns.axes_style(_STYLE):
        figure = Figure(figsize=(10, 4.2) if layout == "panels" else (6.5, 4.5), layout="constrained")
        FigureCanvasAgg(figure)
        axes = _sweep_axes(figure, layout, list(lines))
        for source, line in lines.items():
            ax = axes[source]
            ax.plot(
                line["Value"], line["Overall"], marker="o", color=colors[source], label=LINE_LABELS[source]
            )
            ax.set_xlabel(SWEEP_AXIS_LABELS[kind])
            if layout in ("shared", "single"):
                ax.set_ylabel("RewardBench 2 Overall")
            else:
                ax.set_ylabel(f"Overall, {LINE_LABELS[source]}", color=colors[source])
            if layout == "panels":
                ax.set_title(LINE_LABELS[source])
        if layout != "panels":  # panel titles already name the lines
            handles = [
                handle for ax in dict.fromkeys(axes.values()) for handle in ax.get_legend_handles_labels()[0]
            ]
            figure.axes[-1].legend(handles=handles, loc="best")  # the top axes, or a twin would hide it
        figure.suptitle(f"RewardBench 2 Overall vs {SWEEP_TITLES[kind]}\n{_LAYOUT_TITLES[layout]}")
        return _save(figure, out_png)


def _sweep_axes(figure: Figure, layout: str, sources: list[str]) -> dict:
    if layout == "panels":
        return dict(zip(sources, figure.subplots(1, 2), strict=True))
    first = figure.subplots()
    axes = dict.fromkeys(sources, first)
    if layout == "twin-y":
        axes[REPORTED] = first.twinx()
        axes[REPORTED].grid(False)  # two misaligned grids would read as one broken grid
    return axes


def _layout(first: pd.DataFrame, second: pd.DataFrame) -> str:
    """'shared' if both value and score ranges overlap, 'twin-y' if only values overlap, else 'panels'."""

    def overlap(column: str) -> bool:
        return first[column].min() <= second[column].max() and second[column].min() <= first[column].max()

    if not overlap("Value"):
        return "panels"
    return "shared" if overlap("Overall") else "twin-y"


def subset_bars(table_df: pd.DataFrame, out_png: str | Path) -> Path:
    """Grouped bars of Overall and each subset, one bar per table row; reproduced rows are hatched."""
    _require_columns(table_df, ("Model", "Source", *SCORE_COLUMNS), "table_df")
    if table_df.empty:
        raise ValueError("table_df has no rows to plot")
    duplicated = table_df[table_df.duplicated(["Model", "Source"])]
    if not duplicated.empty:
        model, source = duplicated.iloc[0][["Model", "Source"]]
        raise ValueError(
            f"table_df has the {source} row {model!r} twice; bars need one row per model and source"
        )
    frame = table_df.assign(Row=table_df["Model"] + " (" + table_df["Source"] + ")")
    long = frame.melt(id_vars="Row", value_vars=list(SCORE_COLUMNS), var_name="Score", value_name="Value")
    # Beyond ten rows the colorblind palette repeats, and repeated colours would merge two models.
    palette = sns.color_palette("colorblind" if len(frame) <= 10 else "husl", len(frame))
    with sns.axes_style(_STYLE):
        figure = Figure(figsize=(7.0 + 0.1 * len(frame) * len(SCORE_COLUMNS), 4.5), layout="constrained")
        FigureCanvasAgg(figure)
        ax = figure.subplots()
        sns.barplot(
            data=long, x="Score", y="Value", hue="Row", hue_order=list(frame["Row"]), ax=ax, palette=palette
        )
        ax.set_xlabel("")
        ax.set_ylabel("RewardBench 2 score (x100)")
        legend = ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", title=None)
        reproduced = list(frame["Source"] == REPRODUCED)
        for bars, handle, hatched in zip(ax.containers, legend.get_patches(), reproduced, strict=True):
            for patch in (*bars, handle) if hatched else ():
                patch.set_hatch("//")
        return _save(figure, out_png)


def _require_columns(df: pd.DataFrame, columns: tuple[str, ...], name: str) -> None:
    missing = [column for column in columns if column not in df.columns]
    if missing:
        raise ValueError(f"{name} lacks column(s) {', '.join(missing)}")


def _save(figure: Figure, out_png: str | Path) -> Path:
    return atomic_write(out_png, lambda tmp: figure.savefig(tmp, format="png", dpi=150))
