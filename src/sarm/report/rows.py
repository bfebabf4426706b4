"""Which result files make each reproduced row of Tables 1-3 and each side of the comparisons table.

A row reads its model's rewardbench2.json (the scores), rewards.parquet (per-completion rewards, for the
bootstrap) and, when the model's encoder is a pretrained SAE, that SAE's metrics.json. Standard library
and `sarm.config` / `sarm.paths` only: the Snakefile imports this module while it builds the DAG.
"""

from __future__ import annotations

from typing import Any

from sarm.config import (
    RewardModelRun,
    comparisons,
    experiment_run,
    run_label,
    sweep_runs,
    table_entries,
    vanilla_run,
)

SCORES_FILE = "rewardbench2.json"
REWARDS_FILE = "rewards.parquet"
SAE_METRICS_FILE = "metrics.json"


def run_files(run: RewardModelRun) -> dict[str, str | None]:
    """The files a row of `run` reads: `path` (scores), `rewards` and `sae_metrics` (None without an SAE)."""
    sae = run.sae_directory
    return {
        "path": f"{run.directory}/{SCORES_FILE}",
        "rewards": f"{run.directory}/{REWARDS_FILE}",
        "sae_metrics": f"{sae}/{SAE_METRICS_FILE}" if sae else None,
    }


def result_rows(config: dict[str, Any], table: str) -> list[dict[str, Any]]:
    """Rows of a results table: our label, our result files, and the paper row shown beside it."""
    if table == "table3":
        rows = []
        for kind, _, run in sweep_runs(config):
            hidden_size = config["backbones"][run.backbone]["hidden_size"]
            swept = {"layer": run.layer, "latents": run.latents / hidden_size, "k": run.k}[kind]
            rows.append(
                {
                    "label": f"{run.backbone} layer {run.layer}, M={run.latents}, k={run.k}",
                    **run_files(run),
                    "sweep": kind,
                    "sweep_value": swept,
                }
            )
        return rows
    rows = [
        {"label": name, **run_files(experiment_run(config, name)), "reported_as": reported_as}
        for name, reported_as in table_entries(config, table)
    ]
    if table == "table1":
        for spec in config["tables"]["table1"].get("vanilla", []):
            run = vanilla_run(config, spec)
            rows.append({"label": run_label(spec, run), **run_files(run)})
    return rows


def input_files(rows: list[dict[str, Any]]) -> list[str]:
    """Every file the rows read, each once (the rule's inputs)."""
    paths = [row[key] for row in rows for key in ("path", "rewards", "sae_metrics") if row.get(key)]
    return list(dict.fromkeys(paths))


def comparison_rows(config: dict[str, Any]) -> list[dict[str, str]]:
    """Per `tables.comparisons` entry: its name, and the label and files of sides A and B."""
    return [
        {
            "name": pair.name,
            "label_a": pair.label_a,
            "scores_a": run_files(pair.run_a)["path"],
            "rewards_a": run_files(pair.run_a)["rewards"],
            "label_b": pair.label_b,
            "scores_b": run_files(pair.run_b)["path"],
            "rewards_b": run_files(pair.run_b)["rewards"],
        }
        for pair in comparisons(config)
    ]
