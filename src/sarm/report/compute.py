"""Which rules make up each procedure of the paper's Table 4, and what device this run used."""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable
from pathlib import Path

import torch

PROCEDURES = {
    "SAE training": ("split_sentences", "sample_activations", "train_sae"),
    "SARM reward modeling": ("cache_final_states", "train_sarm", "train_vanilla_rm"),
    "RewardBench 2 evaluation": ("evaluate_rewardbench2",),
    "Interpretation and steering": ("feature_contexts", "explain_features", "detection_scores", "steering"),
}


def benchmarks_by_procedure(benchmark_dir: str | Path) -> dict[str, list[Path]]:
    """The `benchmark:` files under `benchmark_dir/<rule>/...`, grouped by procedure (empty ones dropped)."""
    root = Path(benchmark_dir)
    grouped = {
        procedure: sorted(path for rule in rules for path in (root / rule).rglob("*.tsv"))
        for procedure, rules in PROCEDURES.items()
    }
    return {procedure: files for procedure, files in grouped.items() if files}


def _cpu_name(lines: Iterable[str]) -> str:
    for line in lines:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def device_name() -> str:
    """The GPU model when there is one, else the CPU model and its core count."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    try:
        cpu = _cpu_name(Path("/proc/cpuinfo").read_text().splitlines())
    except OSError:
        cpu = platform.processor() or platform.machine()
    return f"CPU {cpu} ({os.cpu_count()} cores)"
