import copy
import re

import pytest
import yaml

from sarm.config import ConfigError, validate_config
from sarm.report.rows import comparison_rows, input_files, result_rows
from tests.conftest import REPO

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


@pytest.fixture(scope="module")
def paper():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    return validate_config(config, SCHEMA, base_dir=REPO)


def by_label(rows):
    return {row["label"]: row for row in rows}


def test_each_row_reads_the_sae_its_encoder_is(paper):
    rows = by_label(result_rows(paper, "table2"))
    assert (
        rows["SARM-4B"]["sae_metrics"] == "results/llama-3.1-8b/layer16/sequence/sae_m65536_k192/metrics.json"
    )
    assert (
        rows["SARM-4B token-level SAE"]["sae_metrics"]
        == "results/llama-3.1-8b/layer16/token/sae_m65536_k192/metrics.json"
    )
    assert rows["SARM-4B random-init encoder"]["sae_metrics"] is None  # a trained linear layer, no SAE
    vanilla = [row for row in result_rows(paper, "table1") if row["label"].startswith("Vanilla RM")]
    assert len(vanilla) == 2 and all(row["sae_metrics"] is None for row in vanilla)


def test_every_sweep_row_reads_the_sae_of_its_own_layer_width_and_k(paper):
    rows = result_rows(paper, "table3")
    assert len(rows) == 15
    for row in rows:
        layer, latents, k = re.search(r"layer(\d+)/rm/sarm_sequence_m(\d+)_k(\d+)/", row["path"]).groups()
        assert (
            row["sae_metrics"]
            == f"results/llama-3.2-3b/layer{layer}/sequence/sae_m{latents}_k{k}/metrics.json"
        )
        assert row["rewards"] == row["path"].replace("rewardbench2.json", "rewards.parquet")


def test_sweep_rows_with_their_own_training_read_their_own_folders_and_say_how_they_trained(paper):
    demo = validate_config(yaml.safe_load((REPO / "config" / "demo.yaml").read_text()), SCHEMA, base_dir=REPO)
    rows = result_rows(demo, "table3")
    assert len(rows) == 15
    assert all(
        "/rm/sarm_sequence_" in row["path"] and "_sweep/rewardbench2.json" in row["path"] for row in rows
    )
    assert all(row["label"].endswith(" (head only)") for row in rows)
    table1 = by_label(result_rows(demo, "table1"))["SARM half depth"]
    assert table1["path"] == "results/smollm2-135m/layer15/rm/sarm_sequence_m9216_k27/rewardbench2.json"
    top_layers = copy.deepcopy(demo)
    top_layers["tables"]["table3"]["reward_model"] = {"epochs": 5}
    assert result_rows(top_layers, "table3")[0]["label"].endswith(" (top layer)")
    assert not any(row["label"].endswith(")") for row in result_rows(paper, "table3"))


def test_the_rule_inputs_are_every_file_the_rows_read(paper):
    rows = result_rows(paper, "table2")
    files = input_files(rows)
    assert "results/llama-3.1-8b/layer16/token/sae_m65536_k192/metrics.json" in files
    assert "results/llama-3.1-8b/layer16/rm/sarm_random_m65536_k192/rewards.parquet" in files
    assert None not in files and len(files) == 3 + 3 + 2


def test_the_paper_compares_sarm_with_its_three_baselines(paper):
    pairs = {row["name"]: row for row in comparison_rows(paper)}
    sarm = "results/llama-3.1-8b/layer16/rm/sarm_sequence_m65536_k192/rewards.parquet"
    assert {name: (row["rewards_a"], row["rewards_b"]) for name, row in pairs.items()} == {
        "SARM vs vanilla RM (same layer)": (sarm, "results/llama-3.1-8b/layer16/rm/vanilla/rewards.parquet"),
        "SARM vs random-init encoder": (
            sarm,
            "results/llama-3.1-8b/layer16/rm/sarm_random_m65536_k192/rewards.parquet",
        ),
        "sequence-level vs token-level SAE": (
            sarm,
            "results/llama-3.1-8b/layer16/rm/sarm_token_m65536_k192/rewards.parquet",
        ),
    }
    assert pairs["SARM vs vanilla RM (same layer)"]["label_b"] == "Vanilla RM (llama-3.1-8b, layer 16)"


def test_the_demo_compares_the_same_three_pairs():
    demo = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    validate_config(demo, SCHEMA, base_dir=REPO)
    names = [row["name"] for row in comparison_rows(demo)]
    assert names == [
        "SARM vs vanilla RM (same layer)",
        "SARM vs random-init encoder",
        "sequence-level vs token-level SAE",
    ]
    assert comparison_rows(demo)[0]["rewards_b"] == "results/smollm2-135m/layer15/rm/vanilla/rewards.parquet"


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ({"a": "SARM-9B", "b": "SARM-4B"}, "`tables.comparisons\\[0\\].a` names 'SARM-9B', which is not in"),
        (
            {"a": "SARM-4B", "b": {"backbone": "llama-3.1-8b", "layer": 8}},
            "`tables.comparisons\\[0\\].b` names results/llama-3.1-8b/layer8/rm/vanilla, which is no row",
        ),
        ({"a": "SARM-4B", "b": "SARM-4B"}, "compares .* with itself"),
    ],
)
def test_a_bad_comparison_names_its_config_key(paper, pair, message):
    config = copy.deepcopy(paper)
    config["tables"]["comparisons"] = [pair]
    with pytest.raises(ConfigError, match=message):
        validate_config(config, SCHEMA, base_dir=REPO)


def test_with_three_seeds_each_table1_and_table2_row_reads_its_two_further_seeds(paper):
    config = copy.deepcopy(paper)
    config["tables"]["seeds"] = 3
    for table in ("table1", "table2"):
        for row in result_rows(config, table):
            folder = row["path"].removesuffix("/rewardbench2.json")
            assert row["further_seeds"] == [f"{folder}_seed{seed}/rewardbench2.json" for seed in (1, 2)]
            assert set(row["further_seeds"]) <= set(input_files([row]))
    assert not any("further_seeds" in row for row in result_rows(config, "table3"))


def test_with_one_seed_the_rows_are_as_before_seeds_existed(paper):
    """The rows are the results_table rule's params: an unchanged row reruns no table."""
    for table in ("table1", "table2", "table3"):
        assert not any("further_seeds" in row for row in result_rows(paper, table))
