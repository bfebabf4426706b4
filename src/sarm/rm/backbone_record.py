"""How a reward-model folder names its backbone, so that the folder still loads after it moves.

A hub id is recorded as is. A local backbone folder is recorded twice: relative to the reward-model folder
(`backbone`, which survives moving the whole results tree) and as an absolute path (`backbone_path`, which
survives moving the reward-model folder alone). Loading tries those in that order, then (folders written
before both were recorded, with the path from the repo root) the working directory and the folder's
ancestors.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sarm.config import looks_like_local_path
from sarm.paths import GGUF_PREFIX


class MissingBackboneError(ValueError):
    """The backbone a reward-model folder was trained on is not where the folder says."""


def backbone_record(source: str, model_dir: str | Path) -> dict[str, str]:
    """The `backbone` (and `backbone_path`) entries of reward_model.json for a model saved in `model_dir`."""
    path = Path(os.path.expanduser(source))
    if source.startswith(GGUF_PREFIX) or not path.exists():
        return {"backbone": source}  # a hub id (or a packaged GGUF spec): valid anywhere
    absolute = path.resolve()
    relative = os.path.relpath(absolute, Path(model_dir).resolve())
    return {"backbone": Path(relative).as_posix(), "backbone_path": str(absolute)}


def _candidates(config: dict[str, Any], model_dir: Path) -> list[Path]:
    source = config["backbone"]
    found = []
    relative = not Path(os.path.expanduser(source)).is_absolute()
    if relative:
        found.append(model_dir / source)
    if config.get("backbone_path"):
        found.append(Path(config["backbone_path"]))
    found.append(Path(os.path.expanduser(source)))
    if relative and not source.startswith("."):
        # Folders written before the recording hold the path from the repo root (results/backbones/x):
        # the repo root is one of the folder's ancestors.
        found += [parent / source for parent in model_dir.resolve().parents]
    return list(dict.fromkeys(found))


def is_local_record(config: dict[str, Any]) -> bool:
    source = config["backbone"]
    return "backbone_path" in config or (
        not source.startswith(GGUF_PREFIX) and (looks_like_local_path(source) or Path(source).exists())
    )


def resolve_backbone(config: dict[str, Any], model_dir: str | Path, *, required: bool = True) -> str:
    """The backbone source to load: a hub id as is, a local folder at the first place it is found.

    Raises MissingBackboneError naming the backbone and the places looked at when it is local and gone
    (with `required=False` the recorded source is returned instead, for loads that need no backbone).
    """
    model_dir = Path(model_dir)
    if not is_local_record(config):
        return config["backbone"]
    candidates = _candidates(config, model_dir)
    for candidate in candidates:
        if candidate.is_dir():
            return str(candidate.resolve())
    if not required:
        return config["backbone"]
    looked = ", ".join(str(c) for c in candidates)
    raise MissingBackboneError(
        f"{model_dir}/reward_model.json: its backbone folder {config['backbone']!r} is missing (looked at "
        f"{looked}); the reward model was moved without its backbone: copy the backbone folder back, or set "
        "`backbone` in reward_model.json to its new path or its Hugging Face hub id"
    )
