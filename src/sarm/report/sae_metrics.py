"""The SAE quality columns of Tables 1-3: FVU, L0 and dead latents from an SAE's metrics.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

# Table column -> metrics.json key (written by `sarm.sae.train`).
SAE_COLUMNS = {
    "SAE FVU": "fvu",
    "SAE L0": "l0",
    "SAE dead fraction": "dead_fraction",
    "SAE split": "eval_split",
}
SPLITS = ("heldout", "train")


def read_sae_metrics(path: str | Path) -> dict[str, float | str]:
    """The SAE columns of a row from its SAE's metrics.json, validated; errors name the file and key."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"SAE metrics file {path} does not exist (written by rule train_sae)"
        ) from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object with keys {', '.join(SAE_COLUMNS.values())}")
    columns: dict[str, float | str] = {}
    for column, key in SAE_COLUMNS.items():
        if key not in data:
            raise ValueError(f"{path}: key `{key}` is missing")
        value = data[key]
        if key == "eval_split":
            if value not in SPLITS:
                raise ValueError(f"{path}: key `{key}` must be one of {', '.join(SPLITS)}, got {value!r}")
        elif (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            raise ValueError(f"{path}: key `{key}` must be a finite number >= 0, got {value!r}")
        elif key == "dead_fraction" and value > 1:
            raise ValueError(f"{path}: key `{key}` must be a fraction between 0 and 1, got {value!r}")
        columns[column] = value if key == "eval_split" else float(value)
    return columns


def empty_sae_columns() -> dict[str, None]:
    """A row without a pretrained SAE (vanilla RM, random encoder, the paper's rows): blank cells."""
    return dict.fromkeys(SAE_COLUMNS)
