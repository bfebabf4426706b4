"""One dataset of the config's `data` section ({source, split, limit, bad_rows}) -> its validated rows."""

from __future__ import annotations

from pathlib import Path

from sarm.data.preferences import load_preference_pairs
from sarm.data.rewardbench2 import load_rewardbench2
from sarm.data.rmbench import load_rmbench
from sarm.data.sources import BadRows

LOADERS = {"preferences": load_preference_pairs, "rewardbench2": load_rewardbench2, "rmbench": load_rmbench}
SKIPPED_ROWS_SUFFIX = ".skipped_rows.jsonl"


def skipped_rows_file(output: str | Path, name: str) -> Path:
    """The side file next to a job's output that lists the rows of `data.<name>` skipped by `bad_rows: skip`."""
    return Path(output).parent / f"{name}{SKIPPED_ROWS_SUFFIX}"


def load_dataset_spec(name: str, spec: dict, skipped_rows: str | Path | None = None) -> list:
    """The rows of `data.<name>`: loaded from its source and split, cut to its `limit` when one is set.

    Bad rows stop the load, or with `bad_rows: skip` are dropped, logged (first ten with their reasons)
    and, when `skipped_rows` is given, all written there as JSON lines.
    """
    if name not in LOADERS:
        raise ValueError(f"no loader for dataset {name!r} (known: {', '.join(LOADERS)})")
    load = LOADERS[name]
    policy = BadRows.from_spec(name, spec)
    if "split" in spec:
        rows = load(spec["source"], spec["split"], bad_rows=policy)
    else:
        rows = load(spec["source"], bad_rows=policy)
    policy.report(skipped_rows)
    return rows[: spec["limit"]] if spec.get("limit") else rows
