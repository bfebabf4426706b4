"""Open a data set the same way whether it is a Hugging Face hub id or a local file or folder."""

from __future__ import annotations

import gzip
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sarm.config import looks_like_local_path
from sarm.runtime import write_text_atomic

if TYPE_CHECKING:
    from datasets import Dataset, IterableDataset

log = logging.getLogger(__name__)

FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")
KNOWN_SPLITS = ("train", "test", "validation", "dev", "filtered")
MAX_REPORTED_PROBLEMS = 10


class DataError(ValueError):
    """A data set is missing, unreadable or malformed; the message names the file, row (0-based) and field."""


class FieldProblem(Exception):
    """What is wrong with one field of one row; collected by RowProblems into a DataError."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"`{field}` {problem}")
        self.field = field
        self.problem = problem


BAD_ROW_ACTIONS = ("error", "skip")
DEFAULT_MAX_BAD_FRACTION = 0.01


@dataclass(frozen=True)
class SkippedRow:
    """A row dropped under `bad_rows: skip`: where it was, why, and its content (for the side file)."""

    where: str
    index: int
    reasons: tuple[str, ...]
    row: dict


@dataclass
class BadRows:
    """What a loader does with rows that fail validation, set per dataset by `data.<name>.bad_rows`.

    `error` (default): one DataError listing the bad rows. `skip`: drop them and record them in `skipped`,
    unless they are more than `max_fraction` of a file's rows, which is an error anyway.
    """

    action: str = "error"
    max_fraction: float = DEFAULT_MAX_BAD_FRACTION
    switch: str = "`bad_rows: skip`"  # how the user turns skipping on, named in messages
    skipped: list[SkippedRow] = field(default_factory=list)

    def __post_init__(self):
        if self.action not in BAD_ROW_ACTIONS:
            raise ValueError(f"bad_rows must be one of {', '.join(BAD_ROW_ACTIONS)}, got {self.action!r}")
        if not 0 <= self.max_fraction <= 1:
            raise ValueError(f"the share of bad rows to skip must be in [0, 1], got {self.max_fraction!r}")

    @classmethod
    def from_spec(cls, name: str, spec: dict) -> BadRows:
        """From a `data.<name>` config section (`bad_rows`, `max_bad_fraction`)."""
        return cls(
            spec.get("bad_rows", "error"),
            spec.get("max_bad_fraction", DEFAULT_MAX_BAD_FRACTION),
            switch=f"`data.{name}.bad_rows: skip`",
        )

    def summary(self, shown: int = MAX_REPORTED_PROBLEMS) -> str:
        """How many rows were skipped and the first `shown` of them with their reasons."""
        lines = [f"skipped {len(self.skipped)} bad rows ({self.switch})"]
        for skipped in self.skipped[:shown]:
            lines.append(f"  row {skipped.index} of {skipped.where}: {'; '.join(skipped.reasons)}")
        if len(self.skipped) > shown:
            lines.append(f"  (and {len(self.skipped) - shown} more, all in the side file)")
        return "\n".join(lines)

    def write(self, path: str | Path) -> Path:
        """The skipped rows as JSON lines {file, row, reasons, data}; `row` counts from 0 in `file` (for a
        folder: over its files read one after another in name order)."""
        lines = [
            json.dumps(
                {"file": s.where, "row": s.index, "reasons": list(s.reasons), "data": s.row},
                ensure_ascii=False,
                default=str,
            )
            for s in self.skipped
        ]
        return write_text_atomic("".join(line + "\n" for line in lines), path)

    def report(self, side_file: str | Path | None = None) -> None:
        """Log the skipped rows (first ten with reasons) and write them all to `side_file` if given."""
        if self.skipped:
            log.warning(self.summary())
        if side_file is not None and (self.skipped or self.action == "skip"):
            self.write(side_file)
            if self.skipped:
                log.warning("the %d skipped rows are in %s", len(self.skipped), side_file)


class RowProblems:
    """Collects every bad row of a file so that one error reports them all, and nothing partial is returned."""

    def __init__(self, where: str, policy: BadRows | None = None):
        self.where = where
        self.policy = policy
        self.messages: list[str] = []
        self.reasons: dict[int, list[str]] = {}

    def add(self, index: int, field: str, problem: str) -> None:
        self.messages.append(f"row {index} of {self.where}: `{field}` {problem}")
        self.reasons.setdefault(index, []).append(f"`{field}` {problem}")

    def add_problem(self, index: int, problem: FieldProblem) -> None:
        self.add(index, problem.field, problem.problem)

    def _listing(self) -> str:
        shown = self.messages[:MAX_REPORTED_PROBLEMS]
        more = len(self.messages) - len(shown)
        return "\n".join(shown) + (f"\n(and {more} more problems)" if more else "")

    def raise_if_any(self) -> None:
        if self.messages:
            raise DataError(self._listing())

    def finish(self, rows) -> set[int]:
        """The indices of the bad rows to drop (policy `skip`), or a DataError naming them (policy `error`)."""
        if not self.messages:
            return set()
        policy = self.policy or BadRows()
        total = len(rows)
        if policy.action == "error":
            raise DataError(
                f"{self._listing()}\n{len(self.reasons)} of {total} rows are bad: fix them, or set "
                f"{policy.switch} to drop such rows (at most {100 * policy.max_fraction:g}% of a file)."
            )
        if len(self.reasons) > policy.max_fraction * total:
            raise DataError(
                f"{self._listing()}\n{len(self.reasons)} of {total} rows of {self.where} are bad, more than "
                f"the {100 * policy.max_fraction:g}% that {policy.switch} may drop (max_bad_fraction): "
                "is this the right file and schema?"
            )
        for index, reasons in sorted(self.reasons.items()):
            policy.skipped.append(SkippedRow(self.where, index, tuple(reasons), dict(rows[index])))
        return set(self.reasons)


def data_format(path: Path) -> str | None:
    """`json` or `parquet` for a data file name (compressed json allowed), else None."""
    name = path.name.lower()
    for compression in COMPRESSIONS:
        name = name.removesuffix(compression)
    return FORMATS.get(Path(name).suffix)


def _is_saved_dataset(folder: Path) -> bool:
    return (folder / "dataset_info.json").is_file() or (folder / "dataset_dict.json").is_file()


def _split_of(path: Path, folder: Path) -> str | None:
    """The split a file in a hub-style folder belongs to (`test-0000.parquet`, `test/x.jsonl`), if any."""
    parts = [p.lower() for p in path.relative_to(folder).parts]
    names = parts[:-1] + [parts[-1].split(".")[0]]
    for name in names:
        for split in KNOWN_SPLITS:
            if name == split or name.startswith((f"{split}-", f"{split}_")):
                return split
    return None


def data_files(folder: str | Path, split: str) -> list[Path]:
    """The data files of a folder for one split: files named for the split if any, else those named for none."""
    folder = Path(folder)
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and data_format(p) and not p.name.startswith(".")
    )
    if not files:
        raise DataError(f"{folder}: no .json, .jsonl or .parquet files in this folder")
    splits = {path: _split_of(path, folder) for path in files}
    named = [path for path in files if splits[path] == split]
    if named:
        return named
    unnamed = [path for path in files if splits[path] is None]
    if not unnamed:
        others = ", ".join(sorted({s for s in splits.values() if s}))
        raise DataError(f"{folder}: no files for split `{split}` (files are named for: {others})")
    return unnamed


def _bad_json_line(path: Path) -> str | None:
    """Line number and reason of the first line of a JSON-lines file that is not a JSON object."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as err:
                    return f"line {number} is not valid JSON ({err.msg})"
                if not isinstance(value, dict):
                    return f"line {number} is a JSON {type(value).__name__}, not an object"
    except (OSError, UnicodeDecodeError) as err:
        return f"cannot be read as UTF-8 text ({err})"
    return None


def _load_files(files: list[Path], where: str, streaming: bool) -> Dataset | IterableDataset:
    formats = {data_format(path) for path in files}
    if len(formats) != 1:
        raise DataError(
            f"{where}: mixes data formats ({', '.join(sorted(formats))}); keep one format per folder"
        )
    builder = formats.pop()
    # Imported here, not at the top: many rule scripts (tables, plots, sampling, training on cached states)
    # import this module and never read a data set, and `import datasets` costs each ~0.5 s of CPU.
    import datasets

    try:
        return datasets.load_dataset(
            builder, data_files=[str(path) for path in files], split="train", streaming=streaming
        )
    except Exception as err:  # datasets wraps parser errors in several exception types
        reasons = [
            f"{path}: {reason}" for path in files if builder == "json" and (reason := _bad_json_line(path))
        ]
        detail = "; ".join(reasons) or str(err)
        raise DataError(f"{where}: cannot read the data ({detail})") from err


def _load_saved(folder: Path, split: str, streaming: bool) -> Dataset | IterableDataset:
    import datasets

    try:
        saved = datasets.load_from_disk(str(folder))
    except Exception as err:
        raise DataError(f"{folder}: cannot open this save_to_disk folder ({err})") from err
    if isinstance(saved, datasets.DatasetDict):
        if split not in saved:
            raise DataError(f"{folder}: no split `{split}` (has: {', '.join(saved)})")
        saved = saved[split]
    return saved.to_iterable_dataset() if streaming else saved


def source_name(source: str | Sequence[str]) -> str:
    """A source as it is named in messages: the id / path, or the comma-separated paths of a list."""
    return source if isinstance(source, str) else ", ".join(map(str, source))


def load_rows(
    source: str | Sequence[str], split: str = "train", *, streaming: bool = False
) -> Dataset | IterableDataset:
    """Rows of a hub data set, a .json/.jsonl/.parquet file, a `save_to_disk` folder or a folder of data files.

    A single local file is the split itself; `split` picks a split of hub data sets, saved DatasetDicts and
    folders whose file names carry split names (`test-00000.parquet`). A list of local files is read as one.
    """
    if not isinstance(source, str):
        files = [Path(os.path.expanduser(str(item))) for item in source]
        if not files:
            raise DataError("an empty list of data files")
        for path in files:
            if not path.is_file():
                raise DataError(f"{path}: no such file (in the list {source_name(source)})")
            if data_format(path) is None:
                raise DataError(f"{path}: not a .json, .jsonl or .parquet file (optionally compressed)")
        return _load_files(files, source_name(source), streaming)
    path = Path(os.path.expanduser(source))
    if path.is_file():
        if data_format(path) is None:
            raise DataError(f"{source}: not a .json, .jsonl or .parquet file (optionally compressed)")
        return _load_files([path], source, streaming)
    if path.is_dir():
        if _is_saved_dataset(path):
            return _load_saved(path, split, streaming)
        return _load_files(data_files(path, split), source, streaming)
    if looks_like_local_path(source):
        raise DataError(f"{source}: no such file or folder")
    import datasets

    try:
        return datasets.load_dataset(source, split=split, streaming=streaming)
    except Exception as err:  # no network, unknown id, unknown split: all end here with the cause attached
        raise DataError(f"cannot load `{source}` (split `{split}`) from the Hugging Face hub: {err}") from err


def column_names(rows: Dataset | IterableDataset) -> list[str]:
    """Column names, also for streamed data sets whose features are only known after the first row."""
    if rows.column_names is not None:
        return list(rows.column_names)
    first = next(iter(rows), None)
    return list(first) if first is not None else []


def require_columns(rows: Dataset | IterableDataset, columns: Iterable[str], where: str) -> None:
    """Raise DataError naming the first missing column and the columns that are there."""
    present = column_names(rows)
    missing = [column for column in columns if column not in present]
    if missing:
        raise DataError(f"{where}: missing column `{missing[0]}` (has: {', '.join(present) or 'no columns'})")
