"""Validate the workflow config against its JSON schema and resolve experiments into concrete runs."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from sarm.paths import REWARD_MODEL_DIR, SAE_DIR, SARM_VARIANT, SWEEP_SUFFIX, VANILLA_VARIANT, seed_suffix
from sarm.rm.train_layers import ALL, check_train_layers, token_states_layer


class ConfigError(ValueError):
    """The config has a wrong key or value; the message names the key."""


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _with_defaults(validator_class):
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema:
                    instance.setdefault(name, subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _explain(error: jsonschema.ValidationError) -> str:
    key = _key(error.absolute_path)
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        allowed = ", ".join(sorted(error.schema.get("properties", {}))) or "none"
        where = f"under `{key}`" if error.absolute_path else "at the top level"
        return f"unknown config key `{'`, `'.join(extra)}` {where} (allowed: {allowed})"
    if error.validator == "required":
        return f"config key `{key}` is missing a required entry: {error.message}"
    if error.validator in ("oneOf", "anyOf"):
        wanted = _lower_first(error.schema.get("description", "")) or " or ".join(
            s.get("type", "?") if isinstance(s.get("type"), str) else str(s)
            for s in error.schema[error.validator]
        )
        return f"config key `{key}` has an invalid value {error.instance!r}: expected {wanted}"
    return f"config key `{key}` has an invalid value {error.instance!r}: {error.message}"


_BOOLEAN_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def _coerce_booleans(instance: Any, schema: dict, root: dict) -> None:
    """`--config "interpret={'explainer': {'check_endpoint': true}}"` passes the string 'true': make it a bool."""
    if "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    if not isinstance(instance, dict):
        return
    for name, value in instance.items():
        sub = schema.get("properties", {}).get(name)
        if sub is None and isinstance(schema.get("additionalProperties"), dict):
            sub = schema["additionalProperties"]
        if sub is None:
            continue
        if sub.get("type") == "boolean" and isinstance(value, str) and value.lower() in _BOOLEAN_WORDS:
            instance[name] = _BOOLEAN_WORDS[value.lower()]
        else:
            _coerce_booleans(value, sub, root)


def validate_config(
    config: dict[str, Any], schema_path: str | Path, base_dir: str | Path | None = None
) -> dict[str, Any]:
    """Check the config against the schema (filling defaults in place), for cross-references, and that
    every local file or folder it names exists (relative paths are read from `base_dir`, default: cwd)."""
    # libyaml's loader where PyYAML has it: the pure-Python one takes ~0.2 s of every DAG build on this schema
    schema = yaml.load(Path(schema_path).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    _coerce_booleans(config, schema, schema)
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    errors = sorted(
        validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(e.absolute_path))
    )
    if errors:
        raise ConfigError(_explain(jsonschema.exceptions.best_match(errors, key=lambda e: -len(e.path))))
    _check_references(config)
    _check_sweep_training(config, schema)
    for sweep in (False, True):
        rm = training_settings(config, sweep)
        try:
            check_train_layers(rm["train_layers"], rm["train_backbone"], rm["recon_tokens"])
        except ValueError as err:
            where = " (with tables.table3.reward_model)" if sweep else ""
            raise ConfigError(f"{err}{where}") from None
    check_local_sources(config, base_dir)
    return config


def training_settings(config: dict[str, Any], sweep: bool = False) -> dict[str, Any]:
    """The `reward_model` section a model trains with: Table 3's sweep models (`sweep`) take the keys of
    `tables.table3.reward_model` instead of the section's own."""
    overrides = config["tables"]["table3"].get("reward_model", {}) if sweep else {}
    if overrides.get("train_backbone") is False and "train_layers" not in overrides:
        overrides = {**overrides, "train_layers": ALL}  # no layer trains: reward_model's N does not apply
    return {**config["reward_model"], **overrides}


def top_layers_start(config: dict[str, Any], run: RewardModelRun) -> int | None:
    """The layer whose cached per-token states `run` trains from (train_layers N); None when it trains its
    head only or every layer."""
    rm = training_settings(config, run.sweep)
    return token_states_layer(run.layer, rm["train_layers"], rm["train_backbone"])


def sweeps_train_apart(config: dict[str, Any]) -> bool:
    """Table 3's models have training settings of their own (`tables.table3.reward_model` not empty)."""
    return bool(config["tables"]["table3"].get("reward_model"))


def _check_sweep_training(config: dict[str, Any], schema: dict[str, Any]) -> None:
    """`tables.table3.reward_model` merged over `reward_model` must be a valid `reward_model` section."""
    if not sweeps_train_apart(config):
        return
    validator = jsonschema.Draft202012Validator(schema["properties"]["reward_model"])
    for error in validator.iter_errors(training_settings(config, sweep=True)):
        key = _key(["tables", "table3", "reward_model", *error.absolute_path])
        raise ConfigError(f"config key `{key}` has an invalid value {error.instance!r}: {error.message}")


# A data source is a local path, not a hub id (`org/name`), when it says so: a leading `.`, `/` or `~`, a data
# file suffix, or more than one `/`.
DATA_SUFFIXES = (".json", ".jsonl", ".parquet")
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst")


def looks_like_local_path(source: str) -> bool:
    """True when `source` can only be meant as a local file or folder (so a missing one is a typo)."""
    name = source.lower()
    for compression in COMPRESSION_SUFFIXES:
        name = name.removesuffix(compression)
    return source.startswith((".", "/", "~")) or name.endswith(DATA_SUFFIXES) or source.count("/") > 1


def check_local_sources(config: dict[str, Any], base_dir: str | Path | None = None) -> None:
    """ConfigError naming the key and the path when a local data file/folder or backbone folder is missing."""
    base = Path(base_dir) if base_dir is not None else Path.cwd()

    def exists(path: str) -> bool:
        expanded = Path(os.path.expanduser(path))
        return (expanded if expanded.is_absolute() else base / expanded).exists()

    for name, spec in config.get("data", {}).items():
        sources = spec["source"] if isinstance(spec.get("source"), list) else [spec.get("source")]
        for source in sources:
            is_list = isinstance(spec["source"], list)
            if isinstance(source, str) and (is_list or looks_like_local_path(source)) and not exists(source):
                raise ConfigError(
                    f"config key `data.{name}.source` names {source!r}, which does not exist "
                    f"(relative paths are read from {base}): fix the path, or give a Hugging Face hub id"
                )
    for name, backbone in config.get("backbones", {}).items():
        source = backbone["source"]
        if source.startswith((".", "/", "~")) and not exists(source):
            raise ConfigError(
                f"config key `backbones.{name}.source` names the folder {source!r}, which does not exist "
                f"(relative paths are read from {base})"
            )


OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"


def check_explainer(
    explainer: Mapping[str, Any], environ: Mapping[str, str] | None = None, timeout: float = 20.0
) -> None:
    """Before the DAG runs: an `openai` explainer needs its key in the environment, and with
    `check_endpoint: true` one tiny request must get an OpenAI chat completion back. The key is read from
    the environment here and never written anywhere; errors name the variable, not its value."""
    if explainer.get("kind", "openai") != "openai":
        return
    environ = os.environ if environ is None else environ
    variable = explainer.get("api_key_env", "OPENAI_API_KEY")
    key = environ.get(variable)
    if not key:
        raise ConfigError(
            f"config key `interpret.explainer.kind` is openai but the environment variable {variable} is "
            "empty or not set: export your API key in it, or set `interpret.explainer.kind` to local or "
            "contrastive "
            "(or `interpret.explainer.check_key: false` if every answer is already cached)"
        )
    if explainer.get("check_endpoint"):
        check_endpoint(explainer, key, timeout)


def check_endpoint(explainer: Mapping[str, Any], key: str, timeout: float = 20.0) -> None:
    """One chat request of one token; ConfigError saying what is wrong with the endpoint if it fails."""
    base_url = (explainer.get("base_url") or OPENAI_DEFAULT_BASE_URL).rstrip("/")
    url = f"{base_url}/chat/completions"
    body = {
        "model": explainer.get("model", "gpt-4o"),
        "messages": [{"role": "user", "content": "Reply with OK."}],
        "max_tokens": 1,
        "temperature": 0,
    }
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    where = f"the explainer endpoint {url} (interpret.explainer.base_url)"
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, payload = response.status, response.read(65536)
    except urllib.error.HTTPError as err:
        detail = err.read(300).decode("utf-8", "replace")
        hint = {
            401: f"the key in {explainer.get('api_key_env', 'OPENAI_API_KEY')} was refused",
            403: f"the key in {explainer.get('api_key_env', 'OPENAI_API_KEY')} may not use this model",
            404: "no such route or model: base_url should be the OpenAI-compatible root (often ending in /v1)",
        }.get(err.code, "the server refused the test request")
        raise ConfigError(f"{where} answered HTTP {err.code} ({hint}): {detail[:200]!r}") from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise ConfigError(f"cannot reach {where}: {reason}; check the address and the network") from err
    try:
        answer = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(
            f"{where} answered HTTP {status} with a body that is not JSON (first bytes: {payload[:120]!r}): "
            "is base_url an OpenAI-compatible API root, not a web page or proxy?"
        ) from err
    if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
        raise ConfigError(
            f"{where} answered HTTP {status} with JSON that is not a chat completion (no `choices`; first "
            f"bytes: {payload[:120]!r}): is it an OpenAI-compatible endpoint?"
        )


def resolve_size(value: int | str, hidden_size: int, key: str) -> int:
    """65536 stays; "16x" -> 16 d; "3/64x" -> 3/64 d (rounded to an integer)."""
    if isinstance(value, int):
        return value
    size = round(Fraction(value.removesuffix("x")) * hidden_size)
    if size < 1:
        raise ConfigError(f"config key `{key}` = {value!r} resolves to {size} for hidden size {hidden_size}")
    return size


def resolve_layer(layer: int | float, num_layers: int) -> int:
    """An index (int) stays as is; a fraction of depth (0 < f <= 1) becomes round(f * num_layers)."""
    if isinstance(layer, bool):
        raise ValueError(f"layer must be an index or a fraction of depth, got {layer!r}")
    if isinstance(layer, float) and 0 < layer <= 1:
        index = max(1, round(layer * num_layers))
    elif isinstance(layer, int) or (isinstance(layer, float) and layer.is_integer()):
        index = int(layer)
    else:
        raise ValueError(f"layer must be an integer index or a fraction in (0, 1], got {layer!r}")
    if not 1 <= index <= num_layers:
        raise ValueError(f"layer {layer!r} resolves to {index}, outside 1..{num_layers} of this backbone")
    return index


@dataclass(frozen=True)
class RewardModelRun:
    """One trained reward model: where its files live follows from these fields."""

    backbone: str
    layer: int
    # sequence | token | sequence_punct (pretrained SAE of that level) | random | random_topk | vanilla
    encoder: str = "sequence"
    latents: int = 0
    k: int = 0
    # None: trained with reward_model.seed (the folder without a suffix); n: a further seed of tables.seeds
    seed: int | None = None
    # True: a Table 3 model trained with `tables.table3.reward_model` (the folder ends in `_sweep`)
    sweep: bool = False

    @property
    def variant(self) -> str:
        if self.encoder == "vanilla":
            model = VANILLA_VARIANT
        else:
            model = SARM_VARIANT.format(encoder=self.encoder, latents=self.latents, k=self.k)
        return model + (SWEEP_SUFFIX if self.sweep else "") + seed_suffix(self.seed)

    def path(self, pattern: str = REWARD_MODEL_DIR) -> str:
        """A reward-model pattern of `sarm.paths` filled in for this run (its folder by default)."""
        return pattern.format(backbone=self.backbone, layer=self.layer, variant=self.variant)

    @property
    def directory(self) -> str:
        return self.path(REWARD_MODEL_DIR)

    @property
    def sae_level(self) -> str | None:
        return self.encoder if self.encoder in ("sequence", "token", "sequence_punct") else None

    @property
    def sae_directory(self) -> str | None:
        """Folder of the pretrained SAE that is this model's encoder; None for a vanilla RM or a random
        encoder (`random_topk` copies only the shape and input scale of an SAE, not its weights)."""
        if self.sae_level is None:
            return None
        return SAE_DIR.format(
            backbone=self.backbone, layer=self.layer, level=self.sae_level, latents=self.latents, k=self.k
        )


def experiment_run(config: dict[str, Any], name: str, **overrides) -> RewardModelRun:
    """The run of a named experiment, optionally with a layer/latents/k changed (sweeps)."""
    spec = {**config["experiments"][name], **overrides}
    backbone = config["backbones"][spec["backbone"]]
    where = f"experiments.{name}"
    latents = resolve_size(
        spec.get("latents", config["sae"]["latents"]), backbone["hidden_size"], f"{where}.latents"
    )
    k = resolve_size(spec.get("k", config["sae"]["k"]), backbone["hidden_size"], f"{where}.k")
    if k > latents:
        raise ConfigError(f"config key `{where}.k` resolves to {k}, more than its {latents} latents")
    try:
        layer = resolve_layer(spec["layer"], backbone["num_layers"])
    except ValueError as err:
        raise ConfigError(f"config key `{where}.layer`: {err}") from err
    # `random`: the paper's trained random linear layer; `random_topk`: a frozen random TopK SAE
    encoder = spec.get("encoder", "pretrained")
    encoder = spec.get("level", "sequence") if encoder == "pretrained" else encoder
    return RewardModelRun(spec["backbone"], layer, encoder, latents, k)


def vanilla_run(config: dict[str, Any], spec: dict[str, Any]) -> RewardModelRun:
    backbone = config["backbones"][spec["backbone"]]
    try:
        layer = resolve_layer(spec["layer"], backbone["num_layers"])
    except ValueError as err:
        raise ConfigError(f"config key `tables.table1.vanilla`: {err}") from err
    return RewardModelRun(spec["backbone"], layer, "vanilla")


def table_entries(config: dict[str, Any], table: str) -> list[tuple[str, str | None]]:
    """(experiment name, paper row shown beside it) for each row of Table 1 or 2."""
    entries = []
    for entry in config["tables"][table]["experiments"]:
        name = entry if isinstance(entry, str) else entry["experiment"]
        default = config["experiments"].get(name, {}).get("reported_as")
        entries.append((name, default if isinstance(entry, str) else entry.get("reported_as", default)))
    return entries


def sweep_runs(config: dict[str, Any]) -> list[tuple[str, str, RewardModelRun]]:
    """Table 3: (sweep kind, value label, run) for every layer / latents / k value; with training settings
    of their own (`tables.table3.reward_model`) the runs are `sweep` runs."""
    table3 = config["tables"]["table3"]
    apart = sweeps_train_apart(config)
    rows = []
    for kind in ("layer", "latents", "k"):
        for value in table3.get(kind, []):
            run = experiment_run(config, table3["base"], **{kind: value})
            rows.append((kind, str(value), replace(run, sweep=apart)))
    return rows


def row_runs(config: dict[str, Any], table: str) -> list[RewardModelRun]:
    """The reward model of each row of Table 1 or 2, in row order (Table 1: experiments, then vanilla RMs)."""
    runs = [experiment_run(config, name) for name, _ in table_entries(config, table)]
    if table == "table1":
        runs += [vanilla_run(config, spec) for spec in config["tables"]["table1"].get("vanilla", [])]
    return runs


def table_runs(config: dict[str, Any]) -> list[RewardModelRun]:
    """Every reward model that is a row of Table 1, 2 or 3, each once (first seeds only)."""
    runs = row_runs(config, "table1") + row_runs(config, "table2")
    runs += [run for _, _, run in sweep_runs(config)]
    return list(dict.fromkeys(runs))


def further_seeds(config: dict[str, Any]) -> range:
    """The training seeds of each Table 1 / 2 model after the first (reward_model.seed): tables.seeds in all."""
    first = config["reward_model"].get("seed", 0)
    return range(first + 1, first + config["tables"].get("seeds", 1))


def further_seed_runs(config: dict[str, Any], run: RewardModelRun) -> list[RewardModelRun]:
    """`run` trained with each further seed, each in its own folder (`run` itself is the first seed)."""
    return [replace(run, seed=seed) for seed in further_seeds(config)]


def all_further_seed_runs(config: dict[str, Any]) -> list[RewardModelRun]:
    """The further seeds of every Table 1 and 2 model, each once (Table 3's sweeps train one seed)."""
    rows = dict.fromkeys(row_runs(config, "table1") + row_runs(config, "table2"))
    return [seeded for run in rows for seeded in further_seed_runs(config, run)]


def workflow_runs(config: dict[str, Any]) -> list[RewardModelRun]:
    """Every reward model the workflow trains, each once: the rows of Tables 1-3, the interpreted and the
    steered experiment, and the further training seeds of the Table 1 and 2 models. The DAG
    (workflow/rules/common.smk) and `sarm plan` both read this list."""
    names = [name for t in ("table1", "table2") for name, _ in table_entries(config, t)]
    names += [config[stage]["experiment"] for stage in ("interpret", "steering") if stage in config]
    runs = [experiment_run(config, name) for name in names]
    runs += [vanilla_run(config, spec) for spec in config["tables"]["table1"].get("vanilla", [])]
    runs += [run for _, _, run in sweep_runs(config)]
    runs += all_further_seed_runs(config)
    return list(dict.fromkeys(runs))


def compared_run(config: dict[str, Any], side: str | dict[str, Any], key: str) -> RewardModelRun:
    """The reward model one side of a comparison names: an experiment, or {backbone, layer} for a vanilla RM."""
    if isinstance(side, str):
        if side not in config["experiments"]:
            raise ConfigError(f"config key `{key}` names {side!r}, which is not in `experiments`")
        run = experiment_run(config, side)
    else:
        if side["backbone"] not in config["backbones"]:
            raise ConfigError(f"config key `{key}` names backbone {side['backbone']!r}, not in `backbones`")
        run = vanilla_run(config, side)
    if run not in table_runs(config):
        raise ConfigError(
            f"config key `{key}` names {run.directory}, which is no row of Tables 1-3: only reproduced rows "
            "can be compared (add it to `tables.table1` / `table2` / `table3`)"
        )
    return run


@dataclass(frozen=True)
class Comparison:
    """One `tables.comparisons` entry: the comparisons table shows A - B."""

    name: str
    label_a: str
    run_a: RewardModelRun
    label_b: str
    run_b: RewardModelRun


def comparisons(config: dict[str, Any]) -> list[Comparison]:
    pairs = []
    for index, entry in enumerate(config["tables"].get("comparisons", [])):
        key = f"tables.comparisons[{index}]"
        run_a = compared_run(config, entry["a"], f"{key}.a")
        run_b = compared_run(config, entry["b"], f"{key}.b")
        if run_a == run_b:
            raise ConfigError(f"config key `{key}` compares {run_a.directory} with itself")
        label_a, label_b = run_label(entry["a"], run_a), run_label(entry["b"], run_b)
        pairs.append(Comparison(entry.get("name", f"{label_a} vs {label_b}"), label_a, run_a, label_b, run_b))
    return pairs


def run_label(name: str | dict[str, Any], run: RewardModelRun) -> str:
    """A row's label: the experiment's name, or for a vanilla RM its backbone and resolved layer."""
    return name if isinstance(name, str) else f"Vanilla RM ({run.backbone}, layer {run.layer})"


def _check_references(config: dict[str, Any]) -> None:
    for name, spec in config["experiments"].items():
        if spec["backbone"] not in config["backbones"]:
            known = ", ".join(config["backbones"])
            raise ConfigError(
                f"config key `experiments.{name}.backbone` = {spec['backbone']!r} is not a backbone ({known})"
            )
        experiment_run(config, name)
    tables = config["tables"]
    named = [
        (f"tables.{t}.experiments", n) for t in ("table1", "table2") for n, _ in table_entries(config, t)
    ]
    named += [("tables.table3.base", tables["table3"]["base"])]
    for stage in ("interpret", "steering"):
        if stage in config:
            named.append((f"{stage}.experiment", config[stage]["experiment"]))
    for key, name in named:
        if name not in config["experiments"]:
            raise ConfigError(f"config key `{key}` names {name!r}, which is not in `experiments`")
    interpret = config.get("interpret", {})
    if interpret.get("detection_judge") == "explainer" and interpret["explainer"]["kind"] == "contrastive":
        raise ConfigError(
            "config key `interpret.detection_judge` is explainer, but `interpret.explainer.kind` contrastive "
            "has no chat model to judge with: set `interpret.detection_judge: lexical`"
        )
    for spec in tables["table1"].get("vanilla", []):
        if spec["backbone"] not in config["backbones"]:
            raise ConfigError(
                f"config key `tables.table1.vanilla` names backbone {spec['backbone']!r}, not in `backbones`"
            )
        vanilla_run(config, spec)
    sweep_runs(config)
    comparisons(config)


_CHECKED_EXPLAINERS: set[str] = set()


def check_explainer_once(explainer: Mapping[str, Any]) -> None:
    """`check_explainer` once per explainer setting and process (the DAG asks once per interpreted model)."""
    marker = json.dumps(dict(explainer), sort_keys=True, default=str)
    if marker not in _CHECKED_EXPLAINERS:
        check_explainer(explainer)
        _CHECKED_EXPLAINERS.add(marker)
