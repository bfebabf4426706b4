# Config validation, input functions and wildcard constraints; nothing else.
from pathlib import Path

from sarm.config import (
    experiment_run,
    sweep_runs,
    table_entries,
    validate_config,
    vanilla_run,
)
from sarm.paths import (
    ACTIVATIONS,
    BENCHMARKS,
    CONVERTED_BACKBONE,
    EXPLAINER_CACHE,
    FINAL_STATES,
    INTERPRET_DIR,
    REWARD_MODEL_DIR,
    REWARD_MODEL_NAME,
    SAE_DIR,
    SAE_NAME,
    SARM_DIR,
    SARM_NAME,
    SENTENCES,
    STEERING_DIR,
    SWEEP_PLOT,
    TABLE,
    VANILLA_DIR,
    benchmark_path,
    converted_backbone,
    log_path,
)

validate_config(config, Path(workflow.basedir) / "schemas" / "config.schema.yaml")


wildcard_constraints:
    backbone=r"[A-Za-z0-9._-]+",
    layer=r"\d+",
    level=r"sequence|token",
    encoder=r"sequence|token|random",
    latents=r"\d+",
    k=r"\d+",
    part=r"\d+",
    variant=r"vanilla|sarm_(sequence|token|random)_m\d+_k\d+",
    dataset=r"preferences|rewardbench2",


ENVS = Path(workflow.basedir).parent / "envs"
FROZEN_BACKBONE = not config["reward_model"]["train_backbone"]


def table_runs():
    """Every reward model a table or figure needs, each once (shared sweep points coincide)."""
    tables = config["tables"]
    names = [name for t in ("table1", "table2") for name, _ in table_entries(config, t)]
    names += [
        config[stage]["experiment"]
        for stage in ("interpret", "steering")
        if stage in config
    ]
    runs = [experiment_run(config, name) for name in names]
    runs += [vanilla_run(config, spec) for spec in tables["table1"].get("vanilla", [])]
    runs += [run for _, _, run in sweep_runs(config)]
    return list(dict.fromkeys(runs))


def backbone_path(name):
    """Where rules load a backbone from: its hub id / folder, or the folder converted from GGUF."""
    source = config["backbones"][name]["source"]
    return converted_backbone(name, source) or source


def backbone_files_of(name):
    """The converted folder as an input when the backbone ships as GGUF; nothing for hub ids."""
    converted = converted_backbone(name, config["backbones"][name]["source"])
    return [converted] if converted else []


def backbone_files(wildcards):
    return backbone_files_of(wildcards.backbone)


def explainer_path():
    """Folder of the local explainer model (a backbone of the config), or None for an API explainer."""
    explainer = config["interpret"]["explainer"]
    return backbone_path(explainer["model"]) if explainer["kind"] == "local" else None


def explainer_files(wildcards):
    explainer = config["interpret"]["explainer"]
    return backbone_files_of(explainer["model"]) if explainer["kind"] == "local" else []


def sae_layers(backbone, level):
    """Layers at which this backbone needs SAEs of this level: sampled in one forward pass."""
    runs = table_runs()
    return sorted(
        {r.layer for r in runs if r.backbone == backbone and r.sae_level == level}
    )


def reward_model_layers(backbone):
    """Layers whose final-token states the frozen-backbone reward models read."""
    return sorted({r.layer for r in table_runs() if r.backbone == backbone})


def local_data(name):
    """A dataset of the config as an input when it is a local file or folder (hub ids are not files)."""
    source = config["data"][name]["source"]
    return [source] if Path(source).exists() else []


def sampling_parts():
    return range(config["sampling"]["parts"])


def activation_parts(wildcards):
    return expand(
        ACTIVATIONS,
        backbone=wildcards.backbone,
        level=wildcards.level,
        part=sampling_parts(),
    )


def reward_model_inputs(wildcards):
    """A SARM reads its pretrained SAE; in frozen mode every reward model reads cached states."""
    inputs = {}
    encoder = getattr(wildcards, "encoder", "vanilla")
    if encoder != "vanilla":
        # The random-init ablation copies the shape and input scale of the sequence-level SAE.
        level = "sequence" if encoder == "random" else encoder
        inputs["sae"] = f"{SAE_DIR.format(**wildcards, level=level)}/sae.safetensors"
    if FROZEN_BACKBONE:
        inputs["states"] = FINAL_STATES.format(
            backbone=wildcards.backbone, dataset="preferences"
        )
    else:
        inputs["backbone"] = backbone_files(wildcards)
        inputs["data"] = local_data("preferences")
    return inputs


def evaluation_inputs(wildcards):
    inputs = {"model": f"{REWARD_MODEL_DIR.format(**wildcards)}/reward_model.json"}
    if FROZEN_BACKBONE:
        inputs["states"] = FINAL_STATES.format(
            backbone=wildcards.backbone, dataset="rewardbench2"
        )
    else:
        inputs["backbone"] = backbone_files(wildcards)
        inputs["data"] = local_data("rewardbench2")
    return inputs


def experiment_dir(name):
    return experiment_run(config, name).directory


def interpret_dir():
    return experiment_run(config, config["interpret"]["experiment"]).path(INTERPRET_DIR)


def steering_dir():
    return experiment_run(config, config["steering"]["experiment"]).path(STEERING_DIR)


def report_caption(name):
    return str(Path(workflow.basedir) / "report" / f"{name}.rst")


def result_rows(table):
    """Rows of a results table: our label, our result file, and the paper row shown beside it."""
    tables = config["tables"]
    if table == "table3":
        rows = []
        for kind, value, run in sweep_runs(config):
            hidden_size = config["backbones"][run.backbone]["hidden_size"]
            swept = {
                "layer": run.layer,
                "latents": run.latents / hidden_size,
                "k": run.k,
            }[kind]
            rows.append(
                {
                    "label": f"{run.backbone} layer {run.layer}, M={run.latents}, k={run.k}",
                    "path": f"{run.directory}/rewardbench2.json",
                    "sweep": kind,
                    "sweep_value": swept,
                }
            )
        return rows
    rows = [
        {
            "label": name,
            "path": f"{experiment_dir(name)}/rewardbench2.json",
            "reported_as": reported_as,
        }
        for name, reported_as in table_entries(config, table)
    ]
    if table == "table1":
        for spec in tables["table1"].get("vanilla", []):
            run = vanilla_run(config, spec)
            rows.append(
                {
                    "label": f"Vanilla RM ({run.backbone}, layer {run.layer})",
                    "path": f"{run.directory}/rewardbench2.json",
                }
            )
    return rows


def result_files(table):
    return list(dict.fromkeys(row["path"] for row in result_rows(table)))
