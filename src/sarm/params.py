"""Which config keys change which result: a rule passes only those as `params`.

Snakemake reruns a job whose `params` changed, so a rule that received a whole config section would
retrain every SAE when `sae.checkpoint_every` changes. Keys that only change *how* a job runs (how often
it checkpoints, how many tokens it scores per batch, how the model is sharded over GPUs) are bookkeeping:
rules leave them out of `params`, and the rule scripts read them from the config with `with_bookkeeping`.
Standard library only: the Snakefile imports this module while it builds the DAG.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# Per config section: keys that never change a result file (only speed, memory or restart points).
BOOKKEEPING: dict[str, tuple[str, ...]] = {
    "sampling": ("batch_tokens", "activation_root", "delete_after_sae", "share_levels"),
    "sae": ("checkpoint_every",),
    "reward_model": ("batch_tokens", "checkpoint_every", "sharding", "activation_checkpointing"),
}


def result_keys(config: Mapping[str, Any], section: str, drop: Iterable[str] = ()) -> dict[str, Any]:
    """The keys of `config[section]` that change a result, without bookkeeping and without `drop`."""
    skip = set(BOOKKEEPING.get(section, ())) | set(drop)
    return {key: value for key, value in config.get(section, {}).items() if key not in skip}


def only(config: Mapping[str, Any], section: str, keys: Iterable[str]) -> dict[str, Any]:
    """Just these keys of `config[section]` (for rules that read two or three keys of a section)."""
    values = config.get(section, {})
    return {key: values[key] for key in keys if key in values}


def with_bookkeeping(params: Mapping[str, Any], config: Mapping[str, Any], section: str) -> dict[str, Any]:
    """A rule's `params` section completed by the bookkeeping keys of the same section of the config."""
    values = config.get(section, {})
    return {**{key: values[key] for key in BOOKKEEPING.get(section, ()) if key in values}, **params}


def with_seed(keys: Mapping[str, Any], seed: int | None) -> Mapping[str, Any]:
    """A training job's `reward_model` keys with the seed of its folder: `keys` themselves for the first
    seed (None), so its params, and whether it reruns, do not depend on how many seeds there are."""
    return keys if seed is None else {**keys, "seed": seed}
