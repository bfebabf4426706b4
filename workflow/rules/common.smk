# Config validation, input functions and wildcard constraints; nothing else.
import re
from functools import cache
from pathlib import Path

from sarm.config import (
    check_explainer_once as check_explainer,
    experiment_run,
    further_seed_runs,
    sweep_runs,
    table_entries,
    top_layers_start,
    training_settings,
    validate_config,
    workflow_runs,
)
from sarm.download import DOWNLOADED, configure_environment, hub_sources
from sarm.params import only, result_keys, with_seed
from sarm.report.rows import comparison_rows, input_files
from sarm.report.rows import result_rows as table_rows
from sarm.rm.train_layers import token_states_layer as states_layer
from sarm.paths import (
    ACTIVATIONS,
    BENCHMARKS,
    COMPARISONS,
    CONVERTED_BACKBONE,
    EXPLAINER_CACHE,
    CACHED_STATES,
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
    activations_at,
    benchmark_path,
    converted_backbone,
    fill,
    log_path,
    suffix_seed,
    sweep_variant,
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
    variant=r"(vanilla|sarm_(sequence_punct|sequence|token|random_topk|random)_m\d+_k\d+)(_sweep)?(_seed\d+)?",
    sweep=r"(_sweep)?",
    seed_suffix=r"(_seed\d+)?",
    dataset=r"preferences|rewardbench2|rmbench",


ENVS = Path(workflow.basedir).parent / "envs"


def settings(wildcards):
    """The reward_model section this job's model trains with (Table 3's `_sweep` models: with
    tables.table3.reward_model)."""
    return training_settings(config, sweep_variant(wildcards_variant(wildcards)))


def wildcards_variant(wildcards):
    """The `{variant}` of a reward-model job, also for the training rules, whose folder is built from parts."""
    if hasattr(wildcards, "variant"):
        return wildcards.variant
    return getattr(wildcards, "sweep", "") + getattr(wildcards, "seed_suffix", "")


def frozen_backbone(wildcards):
    """The model trains its head on cached final-token states (reward_model.train_backbone false)."""
    return not settings(wildcards)["train_backbone"]


def unused_train_layers_keys(rm):
    """With train_layers `all` its two keys change nothing: left out of params, results built before these
    keys existed are not rerun."""
    if rm["train_layers"] == "all":
        return ["train_layers", "token_states_dtype"]
    return []


def token_states_layer(wildcards):
    """The layer whose cached per-token states a model trains from (train_layers N), or None."""
    rm = settings(wildcards)
    return states_layer(int(wildcards.layer), rm["train_layers"], rm["train_backbone"])


@cache  # the config is fixed while the DAG is built; input functions ask for this ~80 times
def table_runs():
    """Every reward model the workflow trains, each once (sarm.config.workflow_runs)."""
    return tuple(workflow_runs(config))


def training_params(drop=()):
    """Input function of a training rule's `reward_model` params: the result keys of the settings the model
    trains with (`settings`), with the seed of a further seed's folder (`_seed<n>`). The first seed's
    folder has no suffix and keeps the config's keys as they are, so adding seeds reruns none of its jobs.
    """

    def params(wildcards):
        rm = settings(wildcards)
        skip = [*drop, *unused_train_layers_keys(rm)]
        keys = result_keys({"reward_model": rm}, "reward_model", drop=skip)
        return with_seed(keys, suffix_seed(wildcards.seed_suffix))

    return params


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
    """Folder of the local explainer model (a backbone of the config), or None for an API / contrastive one."""
    explainer = config["interpret"]["explainer"]
    return backbone_path(explainer["model"]) if explainer["kind"] == "local" else None


def judge_uses_explainer():
    """Detection asks the chat explainer (detection_judge: explainer) instead of the lexical judge."""
    return config["interpret"]["detection_judge"] == "explainer"


def explainer_gpus(rule_name):
    """A GPU only where a local chat model runs: explain_features, and detection_scores if it judges."""
    local = config["interpret"]["explainer"]["kind"] == "local"
    return int(local and (rule_name == "explain_features" or judge_uses_explainer()))


def explainer_files(rule_name):
    """Input function: the local explainer's converted folder; for an API explainer, its key (and endpoint)
    checked first; nothing for the contrastive explainer, or for detection_scores with the lexical judge.
    """

    def files(wildcards):
        explainer = config["interpret"]["explainer"]
        if explainer["kind"] == "contrastive" or (
            rule_name == "detection_scores" and not judge_uses_explainer()
        ):
            return []
        if explainer["kind"] == "local":
            return backbone_files_of(explainer["model"])
        interpret = INTERPRET_DIR.format(**wildcards)
        done = all(
            Path(interpret, name).exists()
            for name in ("explanations.parquet", "detection.parquet")
        )
        if explainer.get("check_key", True) and not done:
            check_explainer(
                explainer
            )  # once per process: an endpoint check is one request
        return []

    return files


def trains_head_only(run):
    return not training_settings(config, run.sweep)["train_backbone"]


def final_state_layers(backbone):
    """Layers whose final-token states the frozen-backbone reward models of this backbone read."""
    runs = [r for r in table_runs() if r.backbone == backbone and trains_head_only(r)]
    return sorted({r.layer for r in runs})


def token_state_layers(backbone):
    """Layers whose per-token states the models of this backbone that train their top N layers start from."""
    starts = {
        top_layers_start(config, run)
        for run in table_runs()
        if run.backbone == backbone
    }
    return sorted(starts - {None})


def cached_token_layers(wildcards):
    """Per-token layers of a dataset's cache: the models train and are evaluated from those of the
    preferences and RewardBench 2; the RM-Bench cache holds the steered model's."""
    if wildcards.dataset != "rmbench":
        return token_state_layers(wildcards.backbone)
    run = experiment_run(config, config["steering"]["experiment"])
    start = top_layers_start(config, run)
    return [] if start is None or run.backbone != wildcards.backbone else [start]


def cache_settings(wildcards):
    """The reward_model keys that change a dataset's cache; the storage dtype only where it stores tokens."""
    keys = ["max_length", "date_string"]
    if cached_token_layers(wildcards):
        keys.append("token_states_dtype")
    return only(config, "reward_model", keys)


def local_data(name):
    """A dataset of the config as an input when it is a local file or folder (hub ids are not files)."""
    source = config["data"][name]["source"]
    sources = source if isinstance(source, list) else [source]
    return [path for path in sources if Path(path).exists()] + downloaded(
        "dataset", name
    )


def cached_data(dataset):
    """The `data` param of cache_states: `data.<dataset>`, plus `steering.domains` for rmbench, whose
    cache holds only the steering domains' pairs. The domains ride in this param, not in one of their own:
    Snakemake would record that one for the other datasets too (as None), so their caches, and every model
    trained on them, built before it existed would rerun."""
    spec = config["data"][dataset]
    if dataset == "rmbench":
        return {**spec, "steering_domains": config["steering"]["domains"]}
    return spec


def sampling_parts():
    return range(config["sampling"]["parts"])


# Activations live under sampling.activation_root (a scratch file system at paper scale: ~TBs).
ACTIVATIONS_AT = activations_at(config["sampling"]["activation_root"])


def activations_output(level="{level}"):
    """The sampling output; temp() deletes it once its SAEs are trained if sampling.delete_after_sae."""
    output = directory(fill(ACTIVATIONS_AT, level=level))
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


# Levels that sampling.share_levels samples in one forward pass (rule sample_activations_levels).
SHARED_LEVELS = ("sequence", "token")


def shares_levels(backbone):
    return config["sampling"]["share_levels"] and all(
        sae_layers(backbone, level) for level in SHARED_LEVELS
    )


def sampled_layers(backbone, level, layer):
    """The `layer` wildcard of the sampling jobs that hold this layer: the layer alone, or with
    sampling.group_layers all layers of this backbone and level from one forward pass ("8-11-15"); with
    sampling.share_levels too, the sequence and token levels both take the layers of both.
    """
    if not config["sampling"]["group_layers"]:
        return str(layer)
    levels = (
        SHARED_LEVELS if level in SHARED_LEVELS and shares_levels(backbone) else [level]
    )
    layers = {index for each in levels for index in sae_layers(backbone, each)}
    return "-".join(str(index) for index in sorted(layers))


def shared_sampling_jobs():
    """(backbone, layer wildcard) of the sampling jobs that write both SHARED_LEVELS in one pass."""
    jobs = set()
    for backbone in config["backbones"]:
        if shares_levels(backbone):
            both = [set(sae_layers(backbone, level)) for level in SHARED_LEVELS]
            layers = (
                set.union(*both)
                if config["sampling"]["group_layers"]
                else set.intersection(*both)
            )
            jobs |= {
                (backbone, sampled_layers(backbone, "sequence", layer))
                for layer in layers
            }
    return sorted(jobs)


def shared_sampling_backbone():
    """Constraint of the `backbone` wildcard of sample_activations_levels: a backbone followed, in the
    path, by one of its shared layer wildcards. Snakemake constrains each wildcard on its own, so the
    (backbone, layers) pair is tied together by a lookahead; no shared job: a regex that never matches.
    """
    pairs = [
        rf"{re.escape(backbone)}/activations/(?:{'|'.join(SHARED_LEVELS)})/layer{re.escape(layers)}/"
        for backbone, layers in shared_sampling_jobs()
    ]
    return rf"(?=(?:{'|'.join(pairs)}))[A-Za-z0-9._-]+" if pairs else "(?!)"


def activation_parts(wildcards):
    return expand(
        ACTIVATIONS_AT,
        backbone=wildcards.backbone,
        level=wildcards.level,
        layer=sampled_layers(wildcards.backbone, wildcards.level, wildcards.layer),
        part=sampling_parts(),
    )


def reward_model_inputs(wildcards):
    """A SARM reads its pretrained SAE; a model that trains its head only, or its top N layers, reads the
    dataset's cached states."""
    inputs = {}
    encoder = getattr(wildcards, "encoder", "vanilla")
    if encoder not in ("vanilla", "random"):
        # `random` (the paper's ablation) is a linear layer of M outputs and needs no SAE; `random_topk`
        # copies the shape and input scale of the sequence-level SAE.
        level = "sequence" if encoder == "random_topk" else encoder
        inputs["sae"] = f"{SAE_DIR.format(**wildcards, level=level)}/sae.safetensors"
    cached = CACHED_STATES.format(backbone=wildcards.backbone, dataset="preferences")
    if frozen_backbone(wildcards):
        inputs["states"] = cached
    elif token_states_layer(wildcards) is not None:
        inputs["backbone"] = backbone_files(wildcards)
        inputs["token_states"] = cached
    else:
        inputs["backbone"] = backbone_files(wildcards)
        inputs["data"] = local_data("preferences")
    return inputs


def evaluation_inputs(wildcards):
    inputs = {"model": f"{REWARD_MODEL_DIR.format(**wildcards)}/reward_model.json"}
    cached = CACHED_STATES.format(backbone=wildcards.backbone, dataset="rewardbench2")
    if frozen_backbone(wildcards):
        inputs["states"] = cached
    elif token_states_layer(wildcards) is not None:
        inputs["backbone"] = backbone_files(wildcards)
        inputs["token_states"] = cached
    else:
        inputs["backbone"] = backbone_files(wildcards)
        inputs["data"] = local_data("rewardbench2")
    return inputs


def steering_inputs(wildcards):
    """A head-only or top-N model reads the cached states of its source backbone (no backbone pass); a model
    that trained every layer runs its backbone over the texts."""
    inputs = {"model": f"{REWARD_MODEL_DIR.format(**wildcards)}/reward_model.json"}
    from_rmbench = config["steering"]["source"] == "rmbench_safety"
    if frozen_backbone(wildcards) or token_states_layer(wildcards) is not None:
        if not frozen_backbone(wildcards):
            inputs["backbone"] = backbone_files(wildcards)
        for dataset in ["rewardbench2"] + (["rmbench"] if from_rmbench else []):
            inputs[f"{dataset}_states"] = CACHED_STATES.format(
                backbone=wildcards.backbone, dataset=dataset
            )
    else:
        inputs["backbone"] = backbone_files(wildcards)
        inputs["rewardbench2"] = local_data("rewardbench2")
        if from_rmbench:
            inputs["rmbench"] = local_data("rmbench")
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
    targets["comparisons"] = [f"{COMPARISONS}.md"]
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
            f"{seeded.directory}/rewardbench2.json"
            for run in table2
            if run.encoder == encoder
            for seeded in [run, *further_seed_runs(config, run)]
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
    """Rows of a results table: our label, our result files, and the paper row shown beside it."""
    return table_rows(config, table)


def result_files(table):
    """Every file a results table reads: scores, per-completion rewards, SAE metrics."""
    return input_files(result_rows(table))


def comparison_files():
    """The scores and rewards of both sides of every comparison."""
    keys = ("scores_a", "rewards_a", "scores_b", "rewards_b")
    return list(
        dict.fromkeys(row[key] for row in comparison_rows(config) for key in keys)
    )
