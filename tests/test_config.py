import copy
from dataclasses import replace

import pytest
import yaml

from sarm.config import (
    ConfigError,
    RewardModelRun,
    all_further_seed_runs,
    experiment_run,
    resolve_layer,
    resolve_size,
    sweep_runs,
    training_settings,
    validate_config,
    workflow_runs,
)
from sarm.data.sources import BadRows

from .conftest import REPO

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def paper_config():
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def demo_config():
    return yaml.safe_load((REPO / "config" / "demo.yaml").read_text())


def test_paper_config_resolves_the_papers_models():
    config = validate_config(paper_config(), SCHEMA)
    sarm_2b = experiment_run(config, "SARM-2B")
    assert (sarm_2b.layer, sarm_2b.latents, sarm_2b.k) == (14, 49152, 144)
    sarm_4b = experiment_run(config, "SARM-4B")
    assert (sarm_4b.backbone, sarm_4b.layer, sarm_4b.latents, sarm_4b.k) == ("llama-3.1-8b", 16, 65536, 192)
    assert experiment_run(config, "SARM-4B random-init encoder").encoder == "random"
    assert experiment_run(config, "SARM-4B token-level SAE").encoder == "token"


def test_sweeps_share_the_base_run():
    config = validate_config(paper_config(), SCHEMA)
    runs = sweep_runs(config)
    assert len(runs) == 15
    base = experiment_run(config, "SARM-2B")
    assert sum(run == base for _, _, run in runs) == 3  # layer 14, 16x, k=144 coincide
    assert {run.latents for kind, _, run in runs if kind == "latents"} == {
        3072 * m for m in (8, 12, 16, 24, 32)
    }


def test_demo_layers_are_fractions_of_depth():
    config = validate_config(demo_config(), SCHEMA)
    layers = [run.layer for kind, _, run in sweep_runs(config) if kind == "layer"]
    assert layers == [8, 11, 15, 22, 30]


def test_the_demo_trains_tables_1_and_2_top_layer_and_table_3_head_only_in_folders_of_their_own():
    config = validate_config(demo_config(), SCHEMA)
    tables = training_settings(config)
    assert (tables["train_backbone"], tables["train_layers"]) == (True, 1)
    sweeps = training_settings(config, sweep=True)
    assert (sweeps["train_backbone"], sweeps["train_layers"], sweeps["lr"]) == (False, "all", 0.01)
    assert sweeps["max_length"] == tables["max_length"]  # keys the override does not set are shared
    runs = sweep_runs(config)
    assert len(runs) == 15 and all(run.sweep and run.variant.endswith("_sweep") for _, _, run in runs)
    base = experiment_run(config, "SARM half depth")
    assert replace(base, sweep=True) in [run for _, _, run in runs] and not base.sweep
    assert base in workflow_runs(config)  # Table 1's model, apart from its Table 3 twin
    assert len(workflow_runs(config)) == 6 * 3 + 13  # Tables 1-2 with 3 seeds; 13 distinct sweep points


def test_the_paper_sweeps_share_the_table_models_training():
    config = validate_config(paper_config(), SCHEMA)
    assert training_settings(config, sweep=True) == training_settings(config)
    assert not any(run.sweep for _, _, run in sweep_runs(config))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lr": -1}, "config key `tables.table3.reward_model.lr` has an invalid value -1"),
        ({"seed": 3}, "config key `tables.table3.reward_model`"),
        ({"train_layers": 2}, "`reward_model.train_layers: 2` trains backbone layers"),
    ],
)
def test_bad_sweep_training_names_the_key(overrides, message):
    config = copy.deepcopy(demo_config())
    config["reward_model"].update(train_backbone=False, train_layers="all")
    config["tables"]["table3"]["reward_model"] = overrides
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        validate_config(config, SCHEMA, base_dir=REPO)


def test_further_seeds_follow_reward_model_seed_for_every_table1_and_table2_model():
    config = validate_config(paper_config(), SCHEMA)
    assert config["tables"]["seeds"] == 1 and all_further_seed_runs(config) == []
    config["tables"]["seeds"], config["reward_model"]["seed"] = 3, 4
    runs = all_further_seed_runs(config)
    rows = {
        experiment_run(config, name)
        for name in (
            "SARM-2B",
            "SARM-3B",
            "SARM-4B",
            "SARM-4B random-init encoder",
            "SARM-4B token-level SAE",
        )
    }
    rows |= {RewardModelRun("llama-3.1-8b", layer, "vanilla") for layer in (16, 32)}
    assert sorted(runs, key=repr) == sorted(
        (replace(run, seed=seed) for run in rows for seed in (5, 6)), key=repr
    )  # SARM-4B, a row of both tables, once


def test_defaults_are_filled_in():
    config = paper_config()
    del config["sae"]
    validate_config(config, SCHEMA)
    assert config["sae"]["lr"] == 0.0005 and config["sae"]["normalize_decoder_every"] == 10


def test_layer_as_index_or_fraction_of_depth():
    assert resolve_layer(14, 28) == 14
    assert resolve_layer(0.5, 28) == 14
    assert resolve_layer(1.0, 30) == 30
    assert resolve_layer(0.25, 30) == 8
    with pytest.raises(ValueError, match="outside 1..28"):
        resolve_layer(29, 28)
    with pytest.raises(ValueError):
        resolve_layer(1.5, 28)


def test_sizes_as_multiples_of_hidden_size():
    assert resolve_size("16x", 3072, "sae.latents") == 49152
    assert resolve_size("3/64x", 4096, "sae.k") == 192
    assert resolve_size(96, 4096, "sae.k") == 96


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c["sae"].update(k="abc"), "config key `sae.k` has an invalid value 'abc'"),
        (lambda c: c.update(colour="blue"), "unknown config key `colour` at the top level"),
        (lambda c: c["sae"].update(learning_rate=1), "unknown config key `learning_rate` under `sae`"),
        (lambda c: c["reward_model"].update(lr=-1), "config key `reward_model.lr`"),
        (lambda c: c["experiments"]["SARM-2B"].update(layer=99), "`experiments.SARM-2B.layer`"),
        (lambda c: c["experiments"]["SARM-2B"].update(backbone="gpt5"), "`experiments.SARM-2B.backbone`"),
        (
            lambda c: c["experiments"]["SARM-2B"].update(k=100000),
            "`experiments.SARM-2B.k` resolves to 100000",
        ),
        (
            lambda c: c["tables"]["table2"]["experiments"].append("SARM-9B"),
            "`tables.table2.experiments` names 'SARM-9B'",
        ),
        (lambda c: c["interpret"]["explainer"].update(kind="magic"), "config key `interpret.explainer.kind`"),
        (
            lambda c: c["interpret"]["explainer"].update(
                kind="contrastive"
            ),  # the paper's judge is the explainer
            "config key `interpret.detection_judge` is explainer, but `interpret.explainer.kind` contrastive",
        ),
        (
            lambda c: c["interpret"]["explainer"].update(max_terms=0),
            "config key `interpret.explainer.max_terms`",
        ),
        (
            lambda c: c["interpret"]["explainer"].update(markers="remove"),
            "config key `interpret.explainer.markers`",
        ),
        (lambda c: c["tables"].update(seeds=0), "config key `tables.seeds` has an invalid value 0"),
        (lambda c: c["steering"].update(domains=[]), "config key `steering.domains` has an invalid value []"),
        (
            lambda c: c["reward_model"].update(seed=-1),
            "config key `reward_model.seed` has an invalid value -1",
        ),
    ],
)
def test_bad_config_names_the_key(mutate, message):
    config = copy.deepcopy(paper_config())
    mutate(config)
    with pytest.raises(ConfigError) as error:
        validate_config(config, SCHEMA)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


# Local paths are checked when the config is validated --------------------------------------------------


def test_a_missing_local_data_path_is_one_sentence_naming_key_and_path(tmp_path):
    config = demo_config()
    config["data"]["preferences"]["source"] = "resources/demo/preference_trian.jsonl"
    with pytest.raises(ConfigError) as caught:
        validate_config(config, SCHEMA, base_dir=REPO)
    message = str(caught.value)
    assert message.startswith(
        "config key `data.preferences.source` names 'resources/demo/preference_trian.jsonl'"
    )
    assert "does not exist" in message and "\n" not in message


@pytest.mark.parametrize(
    "source",
    ["./mine", "/no/such/dir", "~/no-such-file.jsonl", "data.jsonl.gz", "a/b/c", "x.parquet"],
)
def test_path_looking_sources_must_exist(source):
    config = demo_config()
    config["data"]["rmbench"]["source"] = source
    with pytest.raises(ConfigError, match=r"`data.rmbench.source` names .* which does not exist"):
        validate_config(config, SCHEMA, base_dir=REPO)


def test_hub_ids_and_existing_paths_pass(tmp_path):
    config = demo_config()
    config["data"]["rmbench"]["source"] = "THU-KEG/RM-Bench"  # a hub id: not checked here
    (tmp_path / "resources").symlink_to(REPO / "resources")
    validate_config(config, SCHEMA, base_dir=tmp_path)
    config = demo_config()
    config["data"]["rmbench"]["source"] = ["resources/demo/rmbench.jsonl", "resources/demo/nope.json"]
    with pytest.raises(ConfigError, match="'resources/demo/nope.json', which does not exist"):
        validate_config(config, SCHEMA, base_dir=REPO)


def test_a_missing_local_backbone_folder_is_named():
    config = demo_config()
    config["backbones"]["smollm2-135m"]["source"] = "./models/smollm2"
    with pytest.raises(
        ConfigError, match=r"`backbones.smollm2-135m.source` names the folder './models/smollm2'"
    ):
        validate_config(config, SCHEMA, base_dir=REPO)


def test_bad_rows_policy_and_switches_have_defaults_and_accept_command_line_strings():
    config = demo_config()
    config["data"]["preferences"]["bad_rows"] = "skip"
    config["interpret"]["explainer"] = {"kind": "openai", "check_endpoint": "true"}  # --config gives strings
    config = validate_config(config, SCHEMA, base_dir=REPO)
    assert config["data"]["preferences"]["bad_rows"] == "skip"
    assert config["interpret"]["explainer"]["check_endpoint"] is True
    # Not filled in: the loader and the check apply the defaults, so the params of jobs already run stay.
    assert (
        "bad_rows" not in config["data"]["rewardbench2"]
        and "check_key" not in config["interpret"]["explainer"]
    )
    assert BadRows.from_spec("rewardbench2", config["data"]["rewardbench2"]) == BadRows(
        "error", 0.01, switch="`data.rewardbench2.bad_rows: skip`"
    )
    bad = demo_config()
    bad["data"]["preferences"]["bad_rows"] = "ignore"
    with pytest.raises(ConfigError, match="`data.preferences.bad_rows` has an invalid value 'ignore'"):
        validate_config(bad, SCHEMA, base_dir=REPO)
