"""Validate the workflow config against its JSON schema and resolve experiments into concrete runs."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from sarm.paths import REWARD_MODEL_DIR, SARM_VARIANT, VANILLA_VARIANT


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


def validate_config(config: dict[str, Any], schema_path: str | Path) -> dict[str, Any]:
    """Check the config against the schema (filling defaults in place) and for cross-references."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    errors = sorted(
        validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(e.absolute_path))
    )
    if errors:
        raise ConfigError(_explain(jsonschema.exceptions.best_match(errors, key=lambda e: -len(e.path))))
    _check_references(config)
    return config


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
    encoder: str = "sequence"  # sequence | token (pretrained SAE of that level) | random | vanilla
    latents: int = 0
    k: int = 0

    @property
    def variant(self) -> str:
        if self.encoder == "vanilla":
            return VANILLA_VARIANT
        return SARM_VARIANT.format(encoder=self.encoder, latents=self.latents, k=self.k)

    def path(self, pattern: str = REWARD_MODEL_DIR) -> str:
        """A reward-model pattern of `sarm.paths` filled in for this run (its folder by default)."""
        return pattern.format(backbone=self.backbone, layer=self.layer, variant=self.variant)

    @property
    def directory(self) -> str:
        return self.path(REWARD_MODEL_DIR)

    @property
    def sae_level(self) -> str | None:
        return self.encoder if self.encoder in ("sequence", "token") else None


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
    encoder = "random" if spec.get("encoder") == "random" else spec.get("level", "sequence")
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
    """Table 3: (sweep kind, value label, run) for every layer / latents / k value."""
    table3 = config["tables"]["table3"]
    rows = []
    for kind in ("layer", "latents", "k"):
        for value in table3.get(kind, []):
            rows.append((kind, str(value), experiment_run(config, table3["base"], **{kind: value})))
    return rows


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
    for spec in tables["table1"].get("vanilla", []):
        if spec["backbone"] not in config["backbones"]:
            raise ConfigError(
                f"config key `tables.table1.vanilla` names backbone {spec['backbone']!r}, not in `backbones`"
            )
        vanilla_run(config, spec)
    sweep_runs(config)
