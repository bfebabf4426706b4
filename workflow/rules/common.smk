# Config validation, input functions and wildcard constraints; nothing else.
from pathlib import Path

from sarm.config import (
    check_explainer_once as check_explainer,
    experiment_run,
    sweep_runs,
    table_entries,
    validate_config,
    vanilla_run,
)
from sarm.download import DOWNLOADED, configure_environment, hub_sources
from sarm.params import only, result_keys
from sarm.rm.train_layers import first_trained_layer
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
    TOKEN_STATES,
    VANILLA_DIR,
    activations_at,
    benchmark_path,
    converted_backbone,
    log_path,
)

validate_config(config, Path(workflow.basedir) / "schemas" / "config.schema.yaml")


wildcard_constraints:
    backbone=r"[A-Za-z0-9._-]+",
    layer=r"\d+",
    level=r"sequence_punct|sequence|token",
    encoder=r"sequence_punct|sequence|token|random_topk|random",
    latents=r"\d+",
    k=r"\d+",
    part=r"\d+",
    variant=r"vanilla|sarm_(sequence_punct|sequence|token|random_topk|random)_m\d+_k\d+",
    dataset=r"preferences|rewardbench2",


ENVS = Path(workflow.basedir).parent / "envs"
FROZEN_BACKBONE = not config["reward_model"]["train_backbone"]


def unused_train_layers_keys():
    """With train_layers `all` its two keys change nothing: left out of params, results built before these
    keys existed are not rerun."""
    if config["reward_model"]["train_layers"] == "all":
        return ["train_layers", "token_states_dtype"]
    return []


def token_states_layer(wildcards):
    """The layer whose cached per-token states a model trains from (train_layers N), or None."""
    if FROZEN_BACKBONE:
        return None
    return first_trained_layer(
        int(wildcards.layer), config["reward_model"]["train_layers"]
    )


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


# Jobs read hub models and datasets from the cache the `download` rule fills, offline.
configure_environment(config)
HUB_SOURCES = hub_sources(config)


def hub_source(kind, name):
    return HUB_SOURCES[(kind, name)]


def downloaded(kind, name):
    """The download record of a hub backbone or dataset (as an input), or nothing for local sources."""
    return (
        [DOWNLOADED.format(kind=kind, name=name)] if (kind, name) in HUB_SOURCES else []
    )


def backbone_files_of(name):
    """The converted folder when the backbone ships as GGUF; its download record for a hub id."""
    converted = converted_backbone(name, config["backbones"][name]["source"])
    return [converted] if converted else downloaded("backbone", name)


def backbone_files(wildcards):
    return backbone_files_of(wildcards.backbone)


def explainer_path():
    """Folder of the local explainer model (a backbone of the config), or None for an API explainer."""
    explainer = config["interpret"]["explainer"]
    return backbone_path(explainer["model"]) if explainer["kind"] == "local" else None


def explainer_gpus():
    """A GPU for the explainer / judge model only when it runs locally (an API explainer needs none)."""
    return 1 if config["interpret"]["explainer"]["kind"] == "local" else 0


def explainer_files(wildcards):
    """The local explainer's converted folder; for an API explainer, its key (and endpoint) checked first."""
    explainer = config["interpret"]["explainer"]
    if explainer["kind"] == "local":
        return backbone_files_of(explainer["model"])
    interpret = INTERPRET_DIR.format(**wildcards)
    done = all(
        Path(interpret, name).exists()
        for name in ("explanations.parquet", "detection.parquet")
    )
    if explainer.get("check_key", True) and not done:
        check_explainer(explainer)  # once per process: an endpoint check is one request
    return []


def reward_model_layers(backbone):
    """Layers whose final-token states the frozen-backbone reward models read."""
    return sorted({r.layer for r in table_runs() if r.backbone == backbone})


def local_data(name):
    """A dataset of the config as an input when it is a local file or folder (hub ids are not files)."""
    source = config["data"][name]["source"]
    sources = source if isinstance(source, list) else [source]
    return [path for path in sources if Path(path).exists()] + downloaded(
        "dataset", name
    )


def sampling_parts():
    return range(config["sampling"]["parts"])


# Activations live under sampling.activation_root (a scratch file system at paper scale: ~TBs).
ACTIVATIONS_AT = activations_at(config["sampling"]["activation_root"])


def activations_output():
    """The sampling output; temp() deletes it once its SAEs are trained if sampling.delete_after_sae."""
    output = directory(ACTIVATIONS_AT)
    return temp(output) if config["sampling"]["delete_after_sae"] else output


def sampling_keys_not_for(level):
    """Sampling keys that do not change this level's activations (they only apply to token level)."""
    return ["parts"] + (["skip_first_tokens"] if level == "sequence" else [])


def sae_layers(backbone, level):
    """Layers at which this backbone needs SAEs of this level."""
    runs = table_runs()
    return sorted(
        {r.layer for r in runs if r.backbone == backbone and r.sae_level == level}
    )


def sampled_layers(backbone, level, layer):
    """The `layer` wildcard of the sampling jobs that hold this layer: the layer alone, or with
    sampling.group_layers all layers of this backbone and level from one forward pass ("8-11-15").
    """
    if not config["sampling"]["group_layers"]:
        return str(layer)
    return "-".join(str(index) for index in sae_layers(backbone, level))


def activation_parts(wildcards):
    return expand(
        ACTIVATIONS_AT,
        backbone=wildcards.backbone,
        level=wildcards.level,
        layer=sampled_layers(wildcards.backbone, wildcards.level, wildcards.layer),
        part=sampling_parts(),
    )


def reward_model_inputs(wildcards):
    """A SARM reads its pretrained SAE; in frozen mode every reward model reads cached states."""
    inputs = {}
    encoder = getattr(wildcards, "encoder", "vanilla")
    if encoder not in ("vanilla", "random"):
        # `random` (the paper's ablation) is a linear layer of M outputs and needs no SAE; `random_topk`
        # copies the shape and input scale of the sequence-level SAE.
        level = "sequence" if encoder == "random_topk" else encoder
        inputs["sae"] = f"{SAE_DIR.format(**wildcards, level=level)}/sae.safetensors"
    start = token_states_layer(wildcards)
    if FROZEN_BACKBONE:
        inputs["states"] = FINAL_STATES.format(
            backbone=wildcards.backbone, dataset="preferences"
        )
    elif start is not None:
        inputs["backbone"] = backbone_files(wildcards)
        inputs["token_states"] = TOKEN_STATES.format(
            backbone=wildcards.backbone, layer=start, dataset="preferences"
        )
    else:
        inputs["backbone"] = backbone_files(wildcards)
        inputs["data"] = local_data("preferences")
    return inputs


def evaluation_inputs(wildcards):
    inputs = {"model": f"{REWARD_MODEL_DIR.format(**wildcards)}/reward_model.json"}
    start = token_states_layer(wildcards)
    if FROZEN_BACKBONE:
        inputs["states"] = FINAL_STATES.format(
            backbone=wildcards.backbone, dataset="rewardbench2"
        )
    elif start is not None:
        inputs["backbone"] = backbone_files(wildcards)
        inputs["token_states"] = TOKEN_STATES.format(
            backbone=wildcards.backbone, layer=start, dataset="rewardbench2"
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


def named_targets():
    """What users rerun, by name (`snakemake --profile slurm sweep_k`), generated from the config."""
    table2 = [
        experiment_run(config, name) for name, _ in table_entries(config, "table2")
    ]
    targets = {f"table{n}": [f"{TABLE.format(n=n)}.md"] for n in (1, 2, 3, 4)}
    for kind in ("layer", "latents", "k"):
        runs = [run for swept, _, run in sweep_runs(config) if swept == kind]
        targets[f"sweep_{kind}"] = [
            f"{run.directory}/rewardbench2.json" for run in runs
        ]
        targets[f"sweep_{kind}"].append(SWEEP_PLOT.format(kind=kind))
    for target, encoder in (
        ("ablation_random_init", "random"),
        ("ablation_token_level", "token"),
    ):
        targets[target] = [
            f"{run.directory}/rewardbench2.json"
            for run in table2
            if run.encoder == encoder
        ]
    targets["interpretation"] = [f"{interpret_dir()}/feature_cards.md"]
    targets["steering"] = [
        f"{steering_dir()}/{name}"
        for name in ("steering.json", "figure3a.png", "figure3b.png")
    ]
    return targets


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
