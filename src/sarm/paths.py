"""Where every result lives: each path pattern of the workflow, once.

A pattern is a string with Snakemake wildcards (`{backbone}`, `{layer}`, ...): rules use it as is in
`output:` and fill it with `.format` or `expand` in input functions; the package fills it for a concrete
run (`RewardModelRun.directory`). Standard library only: the Snakefile imports this module while it
builds the DAG.
"""

from __future__ import annotations

# A backbone `source` of the form `gguf:package/file.gguf` is a GGUF file shipped in a Python package.
GGUF_PREFIX = "gguf:"

# Backbones: a packaged GGUF file de-quantised into a Hugging Face folder.
CONVERTED_BACKBONE = "results/backbones/{backbone}"

# Sentences and residual-stream activations, one of each per sampling part.
SENTENCES = "results/{backbone}/sentences/part{part}.parquet"
# One job per layer and part, so adding a layer reruns nothing. The folder holding `{backbone}/...` is
# the config's sampling.activation_root (`results` by default; a scratch file system at paper scale).
ACTIVATIONS_NAME = "{backbone}/activations/{level}/layer{layer}/part{part}"
ACTIVATIONS = f"results/{ACTIVATIONS_NAME}"

# A TopK SAE: sae.safetensors, sae.json, metrics.json, loss.csv, loss.png. Its name also names the log
# and benchmark of its training job.
SAE_NAME = "{backbone}/layer{layer}/{level}/sae_m{latents}_k{k}"
SAE_DIR = f"results/{SAE_NAME}"

# One backbone pass over every conversation of a dataset: final-token states at each layer a frozen-backbone
# reward model reads, and every token's state at the first trained layer of each model that trains only
# its top N layers (train_layers N).
CACHED_STATES = "results/{backbone}/cached_states/{dataset}.safetensors"

# A reward model: its weights, training curve, RewardBench 2 scores, interpretation and steering.
# `{variant}` is `vanilla` or a SARM variant, followed for a Table 3 model trained with its own settings
# (`tables.table3.reward_model`) by `_sweep`, and for a further training seed of a Table 1 / 2 model
# (tables.seeds > 1) by its seed: `vanilla_seed1`; the first seed (reward_model.seed) has no suffix. Its
# name (no `rm/`) names the logs and benchmarks of the jobs on it.
SARM_VARIANT = "sarm_{encoder}_m{latents}_k{k}"
VANILLA_VARIANT = "vanilla"
SWEEP_SUFFIX = "_sweep"
SEED_SUFFIX = "_seed{seed}"
REWARD_MODEL_NAME = "{backbone}/layer{layer}/{variant}"
REWARD_MODEL_DIR = "results/{backbone}/layer{layer}/rm/{variant}"
INTERPRET_DIR = f"{REWARD_MODEL_DIR}/interpret"
STEERING_DIR = f"{REWARD_MODEL_DIR}/steering"

# The paper's tables (this stem + .md, .csv or .tex) and the Table 3 sweep plots.
TABLE = "results/tables/table{n}"
# Paired bootstrap differences between configured pairs of reproduced rows (this stem + .md, .csv, .tex).
COMPARISONS = "results/tables/comparisons"
SWEEP_PLOT = "results/figures/table3_{kind}.png"

# Answers of the explainer / judge model, reused across runs.
EXPLAINER_CACHE = "results/cache/explainer"

# One log and one benchmark file per job, in a folder per rule (the compute table reads BENCHMARKS).
LOGS = "results/logs"
BENCHMARKS = "results/benchmarks"
LOG = f"{LOGS}/{{rule}}/{{job}}.log"
BENCHMARK = f"{BENCHMARKS}/{{rule}}/{{job}}.tsv"


class _KeepMissing(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def fill(pattern: str, **values: object) -> str:
    """Fill some wildcards of a pattern and keep the others for Snakemake: fill(SAE_DIR, level="token")."""
    return pattern.format_map(_KeepMissing(values))


# The reward-model folders as the two training rules write them; `{sweep}` is `_sweep` or empty, `{seed_suffix}`
# is empty for the first seed.
SARM_DIR = fill(REWARD_MODEL_DIR, variant=SARM_VARIANT + "{sweep}{seed_suffix}")
SARM_NAME = fill(REWARD_MODEL_NAME, variant=SARM_VARIANT + "{sweep}{seed_suffix}")
VANILLA_DIR = fill(REWARD_MODEL_DIR, variant=VANILLA_VARIANT + "{seed_suffix}")


def seed_suffix(seed: int | None) -> str:
    """The folder suffix of a further training seed (`_seed2`); none for the first seed (None)."""
    return "" if seed is None else SEED_SUFFIX.format(seed=seed)


def suffix_seed(suffix: str) -> int | None:
    """The seed a `{seed_suffix}` wildcard names; None for the first seed (an empty suffix)."""
    return int(suffix.removeprefix("_seed")) if suffix else None


def sweep_variant(variant: str) -> bool:
    """Whether a `{variant}` (or `{sweep}{seed_suffix}`) names a Table 3 model with its own training settings."""
    return variant.split("_seed")[0].endswith(SWEEP_SUFFIX)


def activations_at(root: str) -> str:
    """The activations pattern under another root folder (sampling.activation_root)."""
    return f"{root.rstrip('/')}/{ACTIVATIONS_NAME}"


def log_path(rule: str, job: str) -> str:
    """Log file of a rule's job; `job` is a pattern of the rule's wildcards, e.g. "{backbone}/{dataset}"."""
    return LOG.format(rule=rule, job=job)


def benchmark_path(rule: str, job: str) -> str:
    """Benchmark file of a rule's job, beside the benchmarks of the rule's other jobs."""
    return BENCHMARK.format(rule=rule, job=job)


def converted_backbone(name: str, source: str) -> str | None:
    """The folder a GGUF backbone is converted to; None for a hub id or folder, which load as they are."""
    return CONVERTED_BACKBONE.format(backbone=name) if source.startswith(GGUF_PREFIX) else None
