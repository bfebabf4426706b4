"""Which result files make each reproduced row of Tables 1-3 and each side of the comparisons table.

A row reads its model's rewardbench2.json (the scores), rewards.parquet (per-completion rewards, for the
bootstrap) and, when the model's encoder is a pretrained SAE, that SAE's metrics.json. A row of Table 1 or 2
also reads the rewardbench2.json of each further training seed of its model (`further_seeds`, only when
tables.seeds > 1, so that single-seed rows and their rule's params stay as they were). Standard library
and `sarm.config` / `sarm.paths` only: the Snakefile imports this module while it builds the DAG.
"""

from __future__ import annotations

from typing import Any

from sarm.config import (
    RewardModelRun,
    comparisons,
    experiment_run,
    further_seed_runs,
    run_label,
    sweep_runs,
    sweeps_train_apart,
    table_entries,
    training_settings,
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
        training = f" ({sweep_training(config)})" if sweeps_train_apart(config) else ""
        for kind, _, run in sweep_runs(config):
            hidden_size = config["backbones"][run.backbone]["hidden_size"]
            swept = {"layer": run.layer, "latents": run.latents / hidden_size, "k": run.k}[kind]
            rows.append(
                {
                    "label": f"{run.backbone} layer {run.layer}, M={run.latents}, k={run.k}{training}",
                    **run_files(run),
                    "sweep": kind,
                    "sweep_value": swept,
                }
            )
        return rows
    rows = []
    for name, reported_as in table_entries(config, table):
        run = experiment_run(config, name)
        rows.append({"label": name, **run_files(run), "reported_as": reported_as, **seed_files(config, run)})
    if table == "table1":
        for spec in config["tables"]["table1"].get("vanilla", []):
            run = vanilla_run(config, spec)
            rows.append({"label": run_label(spec, run), **run_files(run), **seed_files(config, run)})
    return rows


def sweep_training(config: dict[str, Any]) -> str:
    """How Table 3's models train when `tables.table3.reward_model` sets it: what their labels say."""
    rm = training_settings(config, sweep=True)
    if not rm["train_backbone"]:
        return "head only"
    layers = rm["train_layers"]
    return "all layers" if layers == "all" else "top layer" if layers == 1 else f"top {layers} layers"


def seed_files(config: dict[str, Any], run: RewardModelRun) -> dict[str, list[str]]:
    """`further_seeds`: the scores of `run` trained with each further seed; nothing with one seed."""
    paths = [run_files(seeded)["path"] for seeded in further_seed_runs(config, run)]
    return {"further_seeds": paths} if paths else {}


def input_files(rows: list[dict[str, Any]]) -> list[str]:
    """Every file the rows read, each once (the rule's inputs)."""
    paths = [row[key] for row in rows for key in ("path", "rewards", "sae_metrics") if row.get(key)]
    paths += [path for row in rows for path in row.get("further_seeds", [])]
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
