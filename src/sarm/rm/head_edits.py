"""Edits of a trained value head (w_i <- w_i * scale + shift): the steering experiment's intervention."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
import yaml

if TYPE_CHECKING:
    from sarm.rm.models import RewardModel


class HeadEditError(ValueError):
    """A head edit is malformed or names a feature the head does not have."""


def read_head_edits(spec: str | Path | list[dict]) -> list[dict]:
    """Head edits from a YAML/JSON file (a list, or {"edits": [...]}) or an already parsed list."""
    where = "head edits"
    if isinstance(spec, str | Path):
        where = str(spec)
        try:
            spec = yaml.safe_load(Path(spec).read_text())
        except (OSError, yaml.YAMLError) as err:
            raise HeadEditError(f"cannot read head edits from {where}: {err}") from err
        if isinstance(spec, dict) and "edits" in spec:
            spec = spec["edits"]
    if not isinstance(spec, list):
        raise HeadEditError(
            f"{where}: expected a list like [{{feature: 123, scale: 2.0}}], got {type(spec).__name__}"
        )
    for i, edit in enumerate(spec):
        if not isinstance(edit, dict) or "feature" not in edit:
            raise HeadEditError(f"{where}: edit {i} needs a `feature` key, got {edit!r}")
        unknown = set(edit) - {"feature", "scale", "shift"}
        if unknown:
            raise HeadEditError(
                f"{where}: edit {i} has unknown key(s) {sorted(unknown)} (allowed: feature, scale, shift)"
            )
        if isinstance(edit["feature"], bool) or not isinstance(edit["feature"], int):
            raise HeadEditError(f"{where}: edit {i}: `feature` must be an integer, got {edit['feature']!r}")
        if "scale" not in edit and "shift" not in edit:
            raise HeadEditError(f"{where}: edit {i} has neither `scale` nor `shift`")
        for key in ("scale", "shift"):
            if key in edit and (isinstance(edit[key], bool) or not isinstance(edit[key], int | float)):
                raise HeadEditError(f"{where}: edit {i}: `{key}` must be a number, got {edit[key]!r}")
    return spec


@torch.no_grad()
def apply_head_edits(model: RewardModel, edits: list[dict]) -> None:
    """w_i <- w_i * scale + shift for each edit, in order."""
    weight = model.head.weight[0]
    for i, edit in enumerate(edits):
        feature = edit["feature"]
        if not 0 <= feature < weight.numel():
            raise HeadEditError(f"head edit {i}: feature {feature} is outside 0..{weight.numel() - 1}")
        weight[feature] = weight[feature] * float(edit.get("scale", 1.0)) + float(edit.get("shift", 0.0))
