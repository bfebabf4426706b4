"""Paper tables 1-4 rebuilt from result files; the paper's numbers sit beside ours as separate rows."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sarm.data.rewardbench2 import SUBSETS
from sarm.report.bootstrap import BootstrapConfig, score_estimates
from sarm.report.sae_metrics import SAE_COLUMNS, empty_sae_columns, read_sae_metrics
from sarm.report.seeds import (
    SEED_COLUMNS,
    SEED_SUMMARY,
    empty_seed_columns,
    seed_spread,
    seed_summary,
    shown_in_place_of_seed_columns,
    typed_seed_columns,
)
from sarm.runtime import write_text_atomic

SCORE_COLUMNS = ("Overall", *SUBSETS)
LOW, HIGH = "_lo", "_hi"  # a score column's interval bounds: "Math_lo", "Math_hi"
INTERVAL_COLUMNS = tuple(f"{column}{bound}" for column in SCORE_COLUMNS for bound in (LOW, HIGH))
TABLE_COLUMNS = (
    "Model",
    "Source",
    "Size",
    *(name for column in SCORE_COLUMNS for name in (column, f"{column}{LOW}", f"{column}{HIGH}")),
    *SAE_COLUMNS,
)
SWEEP_TABLE_COLUMNS = ("Sweep", "Value", *TABLE_COLUMNS)
SAE_NUMBER_COLUMNS = [column for column in SAE_COLUMNS if column != "SAE split"]
# Cells shown with their own precision, whatever the table's `decimals`.
COLUMN_FORMATS = {"Value": "{:g}", "SAE FVU": "{:.3f}", "SAE L0": "{:.1f}", "SAE dead fraction": "{:.3f}"}
COMPUTE_COLUMNS = ("Procedure", "Source", "Device", "Hours", "Jobs")
SWEEP_KINDS = ("layer", "latents", "k")
TABLES = ("table1", "table2", "table3")
REPRODUCED, REPORTED = "reproduced", "reported"

# paper_reported.csv spells the score columns in snake_case.
_CSV_SCORES = {
    "overall": "Overall",
    "factuality": "Factuality",
    "precise_if": "Precise IF",
    "math": "Math",
    "safety": "Safety",
    "focus": "Focus",
    "ties": "Ties",
}
_REPORTED_COLUMNS = ("table", "group", "model", "size", *_CSV_SCORES)
_COMPUTE_CSV_COLUMNS = ("table", "procedure", "gpu", "gpu_hours")
# Stored `overall` may be rounded; anything further off the subset mean is a broken file.
_OVERALL_TOLERANCE = 1e-3
# The Ties formula's weights add up to 1.01: its tanh term (weight 0.01) lies in [-1, 1].
_TIES_RANGE = (-0.01, 1.01)
# rewardbench2.json and rewards.parquet are written together; the scores recomputed from the rewards must
# match up to float rounding, else the two files are not of the same evaluation.
_SAME_EVALUATION_TOLERANCE = 1e-9


@dataclass(frozen=True)
class ResultRow:
    """One reproduced row: our label, its rewardbench2.json, and the paper row (`model`) it stands beside.

    `rewards` (the evaluation's per-completion rewards.parquet) gives the row its bootstrap intervals, and
    `sae_metrics` (the metrics.json of the SAE the model's encoder is) its SAE columns; without them those
    cells stay blank. `further_seeds` (the rewardbench2.json of the same model trained with each further
    seed; `path` is the first seed's) gives the row its spread of Overall over seeds (`sarm.report.seeds`).
    """

    label: str
    path: Path
    reported_as: str | None = None
    sweep: str | None = None  # Table 3 only: "layer" | "latents" | "k"
    sweep_value: float | None = None  # layer index (resolved, not a fraction), latents / d, or k
    size: str = ""
    rewards: Path | None = None
    sae_metrics: Path | None = None
    further_seeds: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        for name in ("path", "rewards", "sae_metrics"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))
        seeds = tuple(Path(path) for path in self.further_seeds)
        if len({self.path, *seeds}) != 1 + len(seeds):
            raise ValueError(f"row {self.label!r}: a seed's scores are listed twice ({self.path}, {seeds})")
        object.__setattr__(self, "further_seeds", seeds)


def read_rewardbench2(path: str | Path) -> dict[str, float]:
    """Overall and per-subset scores (fractions 0..1; NaN for a subset listed in `missing_subsets`), validated."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"result file {path} does not exist (expected a rewardbench2.json)") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object with keys `subsets` and `overall`")
    subsets = data.get("subsets")
    if not isinstance(subsets, dict):
        raise ValueError(f"{path}: key `subsets` is missing or not an object")
    declared_missing = data.get("missing_subsets", [])
    if not isinstance(declared_missing, list) or not all(isinstance(name, str) for name in declared_missing):
        raise ValueError(
            f"{path}: key `missing_subsets` must be a list of subset names, got {declared_missing!r}"
        )
    # Subset names are matched case-insensitively, as the RewardBench 2 reference does.
    by_name = {str(name).lower(): name for name in subsets}
    absent = {name.lower() for name in declared_missing}
    scores = {"Overall": _fraction(data, "overall", path, "overall", _TIES_RANGE)}
    for name in SUBSETS:
        if name.lower() in by_name:
            bounds = _TIES_RANGE if name == "Ties" else (0.0, 1.0)
            scores[name] = _fraction(subsets, by_name[name.lower()], path, f"subsets.{name}", bounds)
        elif name.lower() in absent:
            scores[name] = math.nan  # the evaluation data had no prompts of this subset: an empty cell
        else:
            raise ValueError(f"{path}: key `subsets.{name}` is missing (and not listed in `missing_subsets`)")
    present = [scores[name] for name in SUBSETS if not math.isnan(scores[name])]
    if not present:
        raise ValueError(f"{path}: key `subsets` has none of the subsets {', '.join(SUBSETS)}")
    subset_mean = sum(present) / len(present)
    if abs(subset_mean - scores["Overall"]) > _OVERALL_TOLERANCE:
        raise ValueError(
            f"{path}: key `overall` is {scores['Overall']} but the mean of the subsets is {subset_mean:.4f}"
        )
    return scores


def _fraction(container: dict, key: str, path: Path, where: str, bounds: tuple[float, float]) -> float:
    if key not in container:
        raise ValueError(f"{path}: key `{where}` is missing")
    value = container[key]
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValueError(
            f"{path}: key `{where}` must be a fraction between {low:g} and {high:g}, got {value!r}"
        )
    return float(value)


def read_reported(csv_path: str | Path) -> pd.DataFrame:
    """The paper's reported scores (paper_reported.csv), score columns renamed to the table headers."""
    csv_path = Path(csv_path)
    frame = _read_csv(csv_path, _REPORTED_COLUMNS)
    for column, header in _CSV_SCORES.items():
        frame[header] = [_number(value, csv_path, line, column) for line, value in _lines(frame[column])]
    duplicated = frame.duplicated(["table", "model"], keep=False)
    if duplicated.any():
        first = frame[duplicated].iloc[0]
        raise ValueError(f"{csv_path}: model {first['model']!r} appears twice in {first['table']}")
    return frame.drop(columns=list(_CSV_SCORES))


def _read_csv(path: Path, required: Sequence[str]) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"reported numbers file {path} does not exist")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    return frame


def _lines(column: pd.Series) -> Iterable[tuple[int, str]]:
    # Line 1 is the header, so data row i is on line i + 2.
    return ((index + 2, value) for index, value in enumerate(column))


def _number(text: str, path: Path, line: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{path}, line {line}: column `{column}` must be a number, got {text!r}") from None
    if math.isnan(value):
        raise ValueError(f"{path}, line {line}: column `{column}` is NaN")
    return value


def results_table(
    rows: Sequence[ResultRow],
    reported_csv: str | Path,
    table: str = "table1",
    bootstrap: BootstrapConfig | None = None,
) -> pd.DataFrame:
    """Table 1 (leaderboard + SARM + vanilla RM), 2 (ablations) or 3 (sweeps): reproduced and reported rows.

    Reproduced scores carry the bounds of their 95% bootstrap interval over prompts (`<column>_lo` /
    `_hi`, from `bootstrap`, default `BootstrapConfig()`) and the SAE columns; reported rows carry neither.
    """
    bootstrap = bootstrap or BootstrapConfig()
    if table not in TABLES:
        raise ValueError(f"table must be one of {', '.join(TABLES)}, got {table!r}")
    rows = list(rows)
    paper = read_reported(reported_csv)
    paper = paper[paper["table"] == table].reset_index(drop=True)
    for row in rows:
        if row.reported_as is not None and row.reported_as not in set(paper["model"]):
            raise ValueError(
                f"row {row.label!r}: reported_as={row.reported_as!r} is not a `model` of {table} in "
                f"{reported_csv}; choose one of: {', '.join(paper['model'])}"
            )
    if table == "table3":
        return _sweep_table(rows, paper, bootstrap)
    columns = _with_seed_columns(TABLE_COLUMNS) if _has_seed_spread(rows) else list(TABLE_COLUMNS)
    # Paper order is kept; each of our rows goes just above the paper row it reproduces, the rest at the end.
    position = dict(zip(paper["model"], paper.index, strict=True))
    keyed = [
        ((position.get(row.reported_as, len(paper)), 0, index), _reproduced_record(row, bootstrap))
        for index, row in enumerate(rows)
    ]
    keyed += [((index, 1, 0), _reported_record(entry)) for index, entry in paper.iterrows()]
    keyed.sort(key=lambda pair: pair[0])
    return _typed(pd.DataFrame([record for _, record in keyed], columns=columns))


def _has_seed_spread(rows: Sequence[ResultRow]) -> bool:
    return any(row.further_seeds for row in rows)


def _with_seed_columns(columns: Sequence[str]) -> list[str]:
    """`columns` with the seed columns right after Overall and its interval."""
    after = list(columns).index(f"Overall{HIGH}") + 1
    return [*columns[:after], *SEED_COLUMNS, *columns[after:]]


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    # The SAE numbers stay numeric columns (right-aligned, NaN when blank) even when no row has an SAE.
    for column in SAE_NUMBER_COLUMNS:
        frame[column] = frame[column].astype(float)
    return typed_seed_columns(frame)


def _reproduced_record(row: ResultRow, bootstrap: BootstrapConfig) -> dict:
    scores = read_rewardbench2(row.path)
    record = {"Model": row.label, "Source": REPRODUCED, "Size": row.size}
    record.update({column: 100.0 * scores[column] for column in SCORE_COLUMNS})
    record.update(dict.fromkeys(INTERVAL_COLUMNS, math.nan))
    if row.rewards is not None:
        estimates = score_estimates(row.rewards, bootstrap)
        points = {column: estimate.value for column, estimate in estimates.items()}
        check_same_evaluation(row.label, scores, row.path, points, row.rewards)
        for column in SCORE_COLUMNS:
            if column in estimates:
                record[f"{column}{LOW}"] = 100.0 * estimates[column].low
                record[f"{column}{HIGH}"] = 100.0 * estimates[column].high
    record.update(read_sae_metrics(row.sae_metrics) if row.sae_metrics is not None else empty_sae_columns())
    record.update(_seed_columns(row, scores["Overall"]))
    return record


def _seed_columns(row: ResultRow, first_overall: float) -> dict[str, float]:
    """The spread of Overall (x100) over the row's seeds: the first seed's, then each further seed's."""
    if not row.further_seeds:
        return empty_seed_columns()
    overall = [first_overall] + [read_rewardbench2(path)["Overall"] for path in row.further_seeds]
    return seed_spread([100.0 * value for value in overall])


def check_same_evaluation(
    label: str,
    scores: Mapping[str, float],
    scores_path: Path,
    recomputed: Mapping[str, float],
    rewards_path: Path,
) -> None:
    """ValueError naming both files when the scores recomputed from the rewards differ from the JSON's."""
    for column in SCORE_COLUMNS:
        expected = scores[column]
        got = recomputed.get(column, math.nan)
        same = (math.isnan(expected) and math.isnan(got)) or abs(got - expected) <= _SAME_EVALUATION_TOLERANCE
        if not same:
            raise ValueError(
                f"row {label!r}: the rewards in {rewards_path} give {column} {got:.6f}, but {scores_path} "
                f"says {expected:.6f}: the two files are not of the same evaluation"
            )


def _reported_record(entry: pd.Series) -> dict:
    record = {"Model": entry["model"], "Source": REPORTED, "Size": entry["size"]}
    record.update({column: float(entry[column]) for column in SCORE_COLUMNS})
    record.update(dict.fromkeys(INTERVAL_COLUMNS, math.nan))
    record.update(empty_sae_columns())
    record.update(empty_seed_columns())
    return record


def _sweep_table(rows: Sequence[ResultRow], paper: pd.DataFrame, bootstrap: BootstrapConfig) -> pd.DataFrame:
    paper_value = {model: _sweep_value_from_name(model) for model in paper["model"]}
    paper_kind = dict(zip(paper["model"], paper["group"], strict=True))
    keyed = []
    for index, row in enumerate(rows):
        if row.sweep not in SWEEP_KINDS:
            raise ValueError(
                f"row {row.label!r}: sweep must be one of {', '.join(SWEEP_KINDS)}, got {row.sweep!r}"
            )
        if row.sweep_value is None:
            raise ValueError(f"row {row.label!r}: sweep_value is required for table3")
        if row.further_seeds:
            raise ValueError(f"row {row.label!r}: Table 3's sweep rows train one seed, got further seeds")
        anchor = row.sweep_value
        if row.reported_as is not None:
            if paper_kind[row.reported_as] != row.sweep:
                raise ValueError(
                    f"row {row.label!r}: reported_as={row.reported_as!r} belongs to the "
                    f"{paper_kind[row.reported_as]!r} sweep, not {row.sweep!r}"
                )
            anchor = paper_value[row.reported_as]  # keeps our row beside its paper counterpart
        record = {"Sweep": row.sweep, "Value": float(row.sweep_value), **_reproduced_record(row, bootstrap)}
        keyed.append(((SWEEP_KINDS.index(row.sweep), anchor, 0, index), record))
    for index, entry in paper.iterrows():
        if entry["group"] not in SWEEP_KINDS:
            continue
        record = {"Sweep": entry["group"], "Value": paper_value[entry["model"]], **_reported_record(entry)}
        keyed.append(((SWEEP_KINDS.index(entry["group"]), record["Value"], 1, index), record))
    keyed.sort(key=lambda pair: pair[0])
    return _typed(pd.DataFrame([record for _, record in keyed], columns=list(SWEEP_TABLE_COLUMNS)))


def _sweep_value_from_name(model: str) -> float:
    # The paper names sweep rows "Layer 14 (SARM)", "16x (SARM)", "144": the first number is the value.
    match = re.search(r"\d+(?:\.\d+)?", model)
    if match is None:
        raise ValueError(f"table3 row {model!r} of the reported numbers has no sweep value in its name")
    return float(match.group())


def benchmark_seconds(path: str | Path) -> float:
    """Wall-clock seconds of one Snakemake `benchmark:` file (mean over its repeats)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file {path} does not exist")
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    if "s" not in frame.columns:
        raise ValueError(f"{path}: column `s` is missing (not a Snakemake benchmark file?)")
    if frame.empty:
        raise ValueError(f"{path}: no benchmark rows")
    # Repeats time the same job again, so they are averaged rather than added up.
    seconds = [_number(value, path, line, "s") for line, value in _lines(frame["s"])]
    return sum(seconds) / len(seconds)


def read_compute(csv_path: str | Path) -> pd.DataFrame:
    """The paper's compute budget (paper_compute.csv) with `gpu_hours` checked to be numbers."""
    csv_path = Path(csv_path)
    frame = _read_csv(csv_path, _COMPUTE_CSV_COLUMNS)
    frame["gpu_hours"] = [
        _number(value, csv_path, line, "gpu_hours") for line, value in _lines(frame["gpu_hours"])
    ]
    return frame


def compute_table(
    benchmarks: Mapping[str, Sequence[str | Path]], device: str, reported_csv: str | Path
) -> pd.DataFrame:
    """Table 4: hours per procedure on `device` (reproduced) beside the paper's GPU-hours (reported)."""
    paper = read_compute(reported_csv)
    paper = paper[paper["table"] == "table4"]
    reported = {entry["procedure"]: entry for _, entry in paper.iterrows()}
    records = []
    for procedure, files in benchmarks.items():
        if not files:
            raise ValueError(f"procedure {procedure!r} has no benchmark files")
        hours = sum(benchmark_seconds(path) for path in files) / 3600.0
        records.append(
            {
                "Procedure": procedure,
                "Source": REPRODUCED,
                "Device": device,
                "Hours": hours,
                "Jobs": len(files),
            }
        )
        if procedure in reported:
            records.append(_reported_compute(reported.pop(procedure)))
    records += [_reported_compute(entry) for entry in reported.values()]
    frame = pd.DataFrame(records, columns=list(COMPUTE_COLUMNS))
    frame["Jobs"] = frame["Jobs"].astype("Int64")
    return frame


def _reported_compute(entry: pd.Series) -> dict:
    return {
        "Procedure": entry["procedure"],
        "Source": REPORTED,
        "Device": entry["gpu"],
        "Hours": entry["gpu_hours"],
        "Jobs": None,
    }


INTERVAL_STYLES = ("pm", "bounds")


def write_table(
    df: pd.DataFrame, out_prefix: str | Path, caption: str, decimals: int = 1, intervals: str = "pm"
) -> list[Path]:
    """Write `df` as <prefix>.md, .csv (full precision) and .tex (booktabs, escaped); returns the paths.

    A column `X` with columns `X_lo` / `X_hi` is shown with its interval: in Markdown as `X ± half the
    interval's width` (`intervals="pm"`) or `X [lo, hi]` (`"bounds"`), in LaTeX as `$X_{lo}^{hi}$`; the
    CSV keeps the three columns. The seed columns (`sarm.report.seeds`) are shown as one, "mean ± sd (n
    seeds)"; the CSV keeps each.
    """
    if intervals not in INTERVAL_STYLES:
        raise ValueError(f"intervals must be one of {', '.join(INTERVAL_STYLES)}, got {intervals!r}")
    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    shown = _shown_columns(df)
    numeric = [column == SEED_SUMMARY or pd.api.types.is_numeric_dtype(df[column]) for column in shown]
    rows = [row for _, row in df.iterrows()]
    markdown_cells = [[_cell(row, column, decimals, intervals) for column in shown] for row in rows]
    latex_cells = [[_cell(row, column, decimals, "latex") for column in shown] for row in rows]
    groups = list(df["Sweep"]) if "Sweep" in df.columns else [None] * len(rows)
    outputs = {
        out_prefix.with_name(out_prefix.name + ".md"): _markdown(shown, markdown_cells, numeric, caption),
        out_prefix.with_name(out_prefix.name + ".csv"): df.to_csv(index=False),
        out_prefix.with_name(out_prefix.name + ".tex"): _latex(
            shown, latex_cells, numeric, groups, caption, out_prefix.name
        ),
    }
    for path, text in outputs.items():
        write_text_atomic(text, path)
    return list(outputs)


def _shown_columns(df: pd.DataFrame) -> list[str]:
    """The columns of the Markdown / LaTeX tables: interval bounds go into their score's cell, the seed
    columns into one."""
    columns = [
        column
        for column in df.columns
        if not (str(column).endswith((LOW, HIGH)) and str(column)[: -len(LOW)] in df.columns)
    ]
    return shown_in_place_of_seed_columns(columns)


def _cell(row: pd.Series, column: str, decimals: int, style: str) -> str:
    if column == SEED_SUMMARY:
        return seed_summary(row, decimals, latex=style == "latex")
    text = _format_cell(column, row[column], decimals)
    low, high = row.get(f"{column}{LOW}"), row.get(f"{column}{HIGH}")
    has_interval = bool(text) and low is not None and high is not None and not (pd.isna(low) or pd.isna(high))
    if style == "latex":
        return (
            f"${text}_{{{low:.{decimals}f}}}^{{{high:.{decimals}f}}}$" if has_interval else latex_escape(text)
        )
    if not has_interval:
        return text
    if style == "pm":
        return f"{text} ± {(high - low) / 2:.{decimals}f}"
    return f"{text} [{low:.{decimals}f}, {high:.{decimals}f}]"


def _format_cell(column: str, value: object, decimals: int) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    if isinstance(value, float):
        return COLUMN_FORMATS.get(column, f"{{:.{decimals}f}}").format(value)
    return str(value)


def _markdown(header: list[str], cells: list[list[str]], numeric: list[bool], caption: str) -> str:
    def line(values: Iterable[str]) -> str:
        return "| " + " | ".join(value.replace("|", r"\|") for value in values) + " |"

    rule = "|" + "|".join("---:" if is_number else "---" for is_number in numeric) + "|"
    return "\n".join([caption, "", line(header), rule, *(line(row) for row in cells)]) + "\n"


_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
}


def latex_escape(text: str) -> str:
    """`text` with every LaTeX special character escaped, safe inside a tabular cell or caption."""
    return "".join(_LATEX_SPECIALS.get(char, char) for char in text)


def _latex(
    header: list[str],
    cells: list[list[str]],
    numeric: list[bool],
    groups: list[object],
    caption: str,
    label: str,
) -> str:
    """A booktabs table of `cells` (already LaTeX); a rule between consecutive rows of different `groups`."""
    spec = "".join("r" if is_number else "l" for is_number in numeric)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{latex_escape(caption)}}}",
        rf"\label{{tab:{re.sub(r'[^A-Za-z0-9:-]', '-', label)}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(latex_escape(str(column)) for column in header) + r" \\",
        r"\midrule",
    ]
    # A rule between Table 3's sweeps, as in the paper.
    for index, row in enumerate(cells):
        if index > 0 and groups[index] != groups[index - 1]:
            lines.append(r"\midrule")
        lines.append(" & ".join(row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"
