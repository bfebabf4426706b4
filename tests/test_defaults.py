"""One source of defaults: the workflow schema and the library's dataclasses give the same value for every
key that maps to a field, so a library caller (benchmark, test, notebook) trains the model the workflow
trains, and every choice the schema offers is one the code accepts."""

import dataclasses
import inspect
import re

import pytest
import torch
import yaml

from sarm.backbone import DEFAULT_INFERENCE_DTYPE, DTYPES
from sarm.data.chat import DEFAULT_DATE_STRING
from sarm.data.corpus import iter_sentences
from sarm.interpret.contrastive import MARKER_CHOICES
from sarm.interpret.detection import JUDGES, DetectionConfig
from sarm.interpret.explainers import EXPLAINER_KINDS, ExplainerConfig
from sarm.interpret.steering import SOURCES, SteeringConfig
from sarm.report.bootstrap import BootstrapConfig
from sarm.rm.bradley_terry import SCHEDULES as RM_SCHEDULES
from sarm.rm.bradley_terry import BTTrainConfig
from sarm.rm.launch import MODEL_DEFAULTS
from sarm.rm.models import HEAD_INITS, HEAD_INPUTS
from sarm.sae.model import SAEConfig
from sarm.sae.sampling import LEVELS, sample_activations
from sarm.sae.train import B_PRE_INITS, LOSSES, SCHEDULES, SAETrainConfig
from tests.conftest import REPO

SCHEMA_PATH = REPO / "workflow" / "schemas" / "config.schema.yaml"
SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text())
PROPERTIES = SCHEMA["properties"]


def field_defaults(cls) -> dict:
    defaults = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            defaults[f.name] = f.default_factory()
    return defaults


def schema_defaults(section: str) -> dict:
    return {k: v["default"] for k, v in PROPERTIES[section]["properties"].items() if "default" in v}


def normalise(value):
    return list(value) if isinstance(value, tuple) else value


def compare(section: str, library: dict, skip=()) -> list[str]:
    schema = schema_defaults(section)
    shared = sorted((set(schema) & set(library)) - set(skip))
    assert shared, f"no key of `{section}` maps to the library"
    return [
        f"{section}.{key}: schema {schema[key]!r}, library {library[key]!r}"
        for key in shared
        if normalise(schema[key]) != normalise(library[key])
    ]


def test_sae_schema_defaults_equal_the_training_and_model_dataclasses():
    library = {**field_defaults(SAETrainConfig), **field_defaults(SAEConfig)}
    assert compare("sae", library) == []


def test_reward_model_schema_defaults_equal_the_training_dataclass_and_the_model_defaults():
    library = {**field_defaults(BTTrainConfig), **MODEL_DEFAULTS}
    assert compare("reward_model", library) == []
    assert MODEL_DEFAULTS["date_string"] == DEFAULT_DATE_STRING


def test_steering_and_sampling_schema_defaults_equal_the_library():
    assert compare("steering", field_defaults(SteeringConfig)) == []
    signature = inspect.signature(sample_activations).parameters
    sampling = {name: p.default for name, p in signature.items() if p.default is not inspect.Parameter.empty}
    sampling["storage_dtype"] = str(sampling["storage_dtype"]).removeprefix("torch.")
    assert compare("sampling", sampling) == []


def test_explainer_and_detection_judge_schema_defaults_equal_the_library():
    explainer = PROPERTIES["interpret"]["properties"]["explainer"]["properties"]
    schema = {key: spec["default"] for key, spec in explainer.items() if "default" in spec}
    library = field_defaults(ExplainerConfig)
    assert schema == {key: library[key] for key in schema}
    assert {"kind", "max_terms", "min_contexts", "min_g2", "markers"} <= set(schema)
    assert PROPERTIES["interpret"]["properties"]["detection_judge"]["default"] == DetectionConfig().judge
    assert sorted(explainer["kind"]["enum"]) == sorted(EXPLAINER_KINDS)
    assert sorted(explainer["markers"]["enum"]) == sorted(MARKER_CHOICES)
    assert sorted(PROPERTIES["interpret"]["properties"]["detection_judge"]["enum"]) == sorted(JUDGES)


def test_bootstrap_schema_defaults_equal_the_library():
    schema = PROPERTIES["tables"]["properties"]["bootstrap"]["properties"]
    assert {key: value["default"] for key, value in schema.items()} == field_defaults(BootstrapConfig)
    BootstrapConfig(resamples=schema["resamples"]["minimum"])


def test_inference_dtype_schema_default_and_choices_equal_the_library():
    schema = PROPERTIES["inference_dtype"]
    assert schema["default"] == DEFAULT_INFERENCE_DTYPE
    assert set(schema["enum"]) == {"auto", *DTYPES}


def test_corpus_schema_defaults_equal_the_sentence_filter():
    schema = PROPERTIES["data"]["properties"]["corpus"]["properties"]
    signature = inspect.signature(iter_sentences).parameters
    shared = {"split", "text_column", "splitter", "min_tokens", "max_tokens", "min_counts_special_tokens"}
    assert {key: schema[key]["default"] for key in shared} == {key: signature[key].default for key in shared}


@pytest.mark.parametrize(
    ("section", "key", "allowed"),
    [
        ("sae", "loss", LOSSES),
        ("sae", "schedule", SCHEDULES),
        ("sae", "init_b_pre", B_PRE_INITS),
        ("reward_model", "schedule", tuple(RM_SCHEDULES)),
        ("reward_model", "head_input", HEAD_INPUTS),
        ("reward_model", "head_init", HEAD_INITS),
        ("steering", "source", SOURCES),
    ],
)
def test_every_choice_the_schema_offers_is_one_the_code_accepts_and_vice_versa(section, key, allowed):
    assert sorted(PROPERTIES[section]["properties"][key]["enum"]) == sorted(allowed)


def test_experiment_levels_are_the_samplers_levels():
    assert sorted(SCHEMA["$defs"]["experiment"]["properties"]["level"]["enum"]) == sorted(LEVELS)


def test_schema_minimums_are_what_the_code_accepts():
    """e.g. `normalize_decoder_every: 0` (never) is valid in the code, so the schema must accept it."""
    minimum = PROPERTIES["sae"]["properties"]["normalize_decoder_every"]["minimum"]
    SAETrainConfig(normalize_decoder_every=minimum)
    SAETrainConfig(heldout_rows=PROPERTIES["sae"]["properties"]["heldout_rows"]["minimum"])
    for key in ("batch_size", "epochs", "shuffle_buffer", "checkpoint_every"):
        with pytest.raises(ValueError):
            SAETrainConfig(**{key: PROPERTIES["sae"]["properties"][key]["minimum"] - 1})
    share = PROPERTIES["steering"]["properties"]["min_active_fraction"]
    for bound in (share["minimum"], share["maximum"]):
        SteeringConfig(min_active_fraction=bound)
    for outside in (share["minimum"] - 0.01, share["maximum"] + 0.01):
        with pytest.raises(ValueError, match="steering.min_active_fraction"):
            SteeringConfig(min_active_fraction=outside)
    for dtype in PROPERTIES["sampling"]["properties"]["storage_dtype"]["enum"]:
        assert isinstance(getattr(torch, dtype), torch.dtype)


def test_the_schema_cites_only_documents_that_are_in_the_repository():
    text = SCHEMA_PATH.read_text()
    assert "DESIGN.md" not in text
    for name in set(re.findall(r"[\w./-]+\.(?:md|yaml|csv|py)\b", text)):
        if "/" in name:
            assert (REPO / name).exists(), f"the schema cites {name}, which is not in the repository"


def test_the_paper_preset_records_its_choices_explicitly():
    """config/config.yaml is the paper: the attention-sink token is kept at token level, which the per-token
    standardisation makes harmless (as in the authors' code); the head starts at zero; every pair is used."""
    paper = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert paper["sampling"]["skip_first_tokens"] == 0 and paper["sae"]["standardize_input"] is True
    assert paper["reward_model"]["head_init"] == "zero" and paper["reward_model"]["heldout_fraction"] == 0
    assert paper["experiments"]["SARM-4B random-init encoder"]["encoder"] == "random"
    assert paper["steering"]["source"] == "rmbench_safety"
    assert paper["steering"]["min_active_fraction"] == 0  # the paper's rule: highest s_i among w_i > 0
