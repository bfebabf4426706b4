"""One dataset of the config's `data` section ({source, split, limit}) -> its validated rows."""

from __future__ import annotations

from sarm.data.preferences import load_preference_pairs
from sarm.data.rewardbench2 import load_rewardbench2
from sarm.data.rmbench import load_rmbench

LOADERS = {"preferences": load_preference_pairs, "rewardbench2": load_rewardbench2, "rmbench": load_rmbench}


def load_dataset_spec(name: str, spec: dict) -> list:
    """The rows of `data.<name>`: loaded from its source and split, cut to its `limit` when one is set."""
    if name not in LOADERS:
        raise ValueError(f"no loader for dataset {name!r} (known: {', '.join(LOADERS)})")
    load = LOADERS[name]
    rows = load(spec["source"], spec["split"]) if "split" in spec else load(spec["source"])
    return rows[: spec["limit"]] if spec.get("limit") else rows
