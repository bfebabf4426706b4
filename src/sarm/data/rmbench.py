"""RM-Bench (THU-KEG) rows -> RMBenchItem: three chosen and three rejected styles of one answer per prompt.

Two layouts: rows with a `domain` field (the hub's combined file), and the authors' per-domain files
(`chat_filtered.json`, ..., `safety-response_filtered.json`: JSON arrays whose `subset` is the row's source,
e.g. `alpacaeval`; the domain is in the file name). A folder or a list of those files is one source.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sarm.data.records import PreferencePair, RMBenchItem
from sarm.data.sources import (
    BadRows,
    FieldProblem,
    RowProblems,
    data_files,
    load_rows,
    require_columns,
)

DOMAINS = ("chat", "code", "math", "safety-refuse", "safety-response")
STYLES = ("concise", "detailed_plain", "detailed_markdown")  # order of the three variants in each list


def _variants(value: Any, field: str) -> list[str]:
    if not isinstance(value, list) or len(value) != len(STYLES):
        got = f"{len(value)} items" if isinstance(value, list) else type(value).__name__
        raise FieldProblem(
            field, f"must be a list of {len(STYLES)} responses ({', '.join(STYLES)}), got {got}"
        )
    for position, text in enumerate(value):
        if not isinstance(text, str) or not text.strip():
            raise FieldProblem(f"{field}[{position}]", "must be a non-empty string")
    return value


def domain_of_file(path: str | Path) -> str | None:
    """The domain a released per-domain file is named for (`safety-refuse_filtered.json`), if any."""
    stem = Path(path).name.split(".")[0].removesuffix("_filtered")
    return stem if stem in DOMAINS else None


def rmbench_item(row: dict, default_domain: str | None = None) -> RMBenchItem:
    """One RM-Bench row -> RMBenchItem.

    The domain is the row's `domain`, else the domain its file is named for, else its `subset` when that
    is a domain name; any other `subset` (the row's source, e.g. `alpacaeval`) is kept as metadata.
    """
    subset = row.get("subset")
    if row.get("domain") is not None:
        domain, field = row["domain"], "domain"
    elif default_domain is not None:
        domain, field = default_domain, "domain"
    elif subset in DOMAINS:
        domain, field = subset, "subset"
    elif subset is not None:
        raise FieldProblem(
            "subset",
            f"is {subset!r}, the row's source, and neither a `domain` field nor the file name "
            f"(e.g. chat_filtered.json) gives its domain ({', '.join(DOMAINS)})",
        )
    else:
        raise FieldProblem(
            "domain", "is missing (no `domain` or `subset` value, and the file name names no domain)"
        )
    if domain not in DOMAINS:
        raise FieldProblem(field, f"must be one of {', '.join(DOMAINS)}, got {domain!r}")
    if row.get("id") is None:
        raise FieldProblem("id", "is missing")
    if not isinstance(row["prompt"], str) or not row["prompt"].strip():
        raise FieldProblem("prompt", "must be a non-empty string")
    return RMBenchItem(
        id=str(row["id"]),
        domain=domain,
        prompt=row["prompt"],
        chosen=_variants(row["chosen"], "chosen"),
        rejected=_variants(row["rejected"], "rejected"),
        subset=subset if isinstance(subset, str) else "",
    )


def _parts(source: str | Sequence[str], split: str) -> list[tuple[str, str | None]]:
    """(source, domain from its file name) per file of a list or local folder, else the source itself."""
    if not isinstance(source, str):
        return [(str(file), domain_of_file(file)) for file in source]
    path = Path(source)
    if (
        path.is_dir()
        and not (path / "dataset_info.json").exists()
        and not (path / "dataset_dict.json").exists()
    ):
        return [(str(file), domain_of_file(file)) for file in data_files(path, split)]
    return [(source, domain_of_file(source) if path.is_file() else None)]


def load_rmbench(
    source: str | Sequence[str], split: str = "train", bad_rows: BadRows | None = None
) -> list[RMBenchItem]:
    """All RM-Bench items of a hub id, a file, a list of files or a folder of the per-domain files."""
    items: list[RMBenchItem] = []
    seen: dict[tuple[str, str], str] = {}
    for part, default_domain in _parts(source, split):
        rows = load_rows(part, split)
        require_columns(rows, ["id", "prompt", "chosen", "rejected"], part)
        problems = RowProblems(part, bad_rows)
        read: dict[int, RMBenchItem] = {}
        for index, row in enumerate(rows):
            try:
                item = rmbench_item(row, default_domain)
            except FieldProblem as problem:
                problems.add_problem(index, problem)
                continue
            key = (item.domain, item.id)
            if key in seen:
                problems.add(index, "id", f"{item.id!r} ({item.domain}) was already read from {seen[key]}")
            else:
                seen[key] = f"row {index} of {part}"
            read[index] = item
        dropped = problems.finish(rows)
        items += [item for index, item in read.items() if index not in dropped]
    return items


def rmbench_pairs(items: Sequence[RMBenchItem]) -> list[PreferencePair]:
    """Every item as three pairs, chosen variant j against rejected variant j, with its domain as `source`."""
    pairs = []
    for item in items:
        user = {"role": "user", "content": item.prompt}
        for chosen, rejected in zip(item.chosen, item.rejected, strict=True):
            pairs.append(
                PreferencePair(
                    [user, {"role": "assistant", "content": chosen}],
                    [user, {"role": "assistant", "content": rejected}],
                    source=item.domain,
                )
            )
    return pairs


def steering_pairs(items: Sequence[RMBenchItem], domains: Sequence[str]) -> list[PreferencePair]:
    """The pairs steering scores features on: those of the items in `domains` (config `steering.domains`),
    in item order. The rmbench final-state cache holds exactly these, so both take them from here."""
    pairs = rmbench_pairs([item for item in items if item.domain in domains])
    if not pairs:
        raise ValueError(
            f"no RM-Bench items in the steering domains {list(domains)} (config `steering.domains`)"
        )
    return pairs
