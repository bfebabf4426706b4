"""No rerun that changes nothing: on the paper DAG, marked as built with `--touch`, a config change plans
only the jobs whose result it changes (rules pass only such keys as params, sarm.params).

The paper's corpus is sampled in 64 parts (448 sampling jobs of the 521); here it is sampled in 2, so that
`--touch` records 87 jobs instead of 521 (each costs Snakemake the same bookkeeping), while every rule and
every param of the paper's config is kept."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from .conftest import REPO, snakemake_command

# The explainer check wants an API key for the paper's GPT-4o explainer; nothing is sent in a dry run.
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OPENAI_API_KEY": "unused-dry-run"}


def snakemake(workdir: Path, *args: str) -> str:
    command = snakemake_command("--snakefile", str(REPO / "workflow" / "Snakefile"), "--cores", "1", *args)
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, env=ENV, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def planned(workdir: Path, config: dict) -> dict[str, int]:
    """Jobs a dry run plans for `all` with this config: {rule: count} (empty when nothing is to be done)."""
    path = workdir / "config" / "changed.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))  # key order as written: params compare by it
    text = snakemake(workdir, "all", "-n", "--configfile", str(path))
    counts = {rule: int(n) for rule, n in re.findall(r"(?m)^(\w+)\s+(\d+)$", text)}
    counts.pop("total", None)
    return counts


def dag_outputs(dry_run: str) -> list[tuple[str, str]]:
    """(rule, output path) of every job a dry run printed, as `snakemake --summary` lists them."""
    outputs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", dry_run):
        rule = re.match(r"(?:local)?rule (\w+):", block)
        output = re.search(r"(?m)^    output: (.+)$", block)
        if rule and output:
            outputs += [(rule.group(1), path) for path in output.group(1).split(", ")]
    return outputs


@pytest.fixture(scope="module")
def built_paper(paper_dag, tmp_path_factory) -> Path:
    """A work directory in which every output of the paper DAG exists and is recorded as up to date.

    The outputs come from the session's dry run of the paper DAG (conftest.paper_dag), which saves
    building the DAG once more for `--summary`; those of sampling parts 2-63 are made too and never read."""
    workdir = tmp_path_factory.mktemp("paper")
    (workdir / "config").mkdir()
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(paper_config(), sort_keys=False))
    shutil.copytree(REPO / "resources" / "paper", workdir / "resources" / "paper")
    outputs = [(rule, path) for rule, path in dag_outputs(paper_dag) if path.startswith("results/")]
    assert outputs, paper_dag[-3000:]
    for rule, name in outputs:
        path = workdir / name
        if rule == "sample_activations":  # a directory output
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    # --forceall: every job, whatever the mtimes the files got above, so that each records its params
    snakemake(workdir, "--touch", "--forceall", "all")
    check = snakemake(workdir, "all", "-n")
    assert "Nothing to be done" in check
    assert "missing provenance" not in check, check[-3000:]  # else a changed param could rerun nothing
    return workdir


SAMPLING_PARTS = 2


def paper_config() -> dict:
    """config/config.yaml with the corpus sampled in SAMPLING_PARTS parts (see the module docstring)."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["sampling"]["parts"] = SAMPLING_PARTS
    return config


def test_bookkeeping_keys_plan_nothing(built_paper):
    config = paper_config()
    config.setdefault("sae", {})["checkpoint_every"] = 7
    config["reward_model"]["checkpoint_every"] = 11
    config["reward_model"]["batch_tokens"] = 1234
    config.setdefault("sampling", {})["batch_tokens"] = 4321
    assert planned(built_paper, config) == {}


def test_a_new_k_plans_its_sae_its_sarm_and_the_tables(built_paper):
    config = paper_config()
    config["tables"]["table3"]["k"].append(288)
    assert planned(built_paper, config) == {
        "train_sae": 1,
        "train_sarm": 1,
        "evaluate_rewardbench2": 1,
        "results_table": 1,  # Table 3
        "compute_table": 1,  # Table 4
        "sweep_plot": 3,  # the three plots are drawn from Table 3
        "all": 1,
    }


def test_a_new_layer_plans_only_its_own_sampling_and_runs(built_paper):
    config = paper_config()
    config["tables"]["table3"]["layer"].append(3)
    parts = config["sampling"]["parts"]
    assert planned(built_paper, config) == {
        "sample_activations": parts,  # layer 3 only: activations are sampled per layer
        "train_sae": 1,
        "train_sarm": 1,
        "evaluate_rewardbench2": 1,
        "results_table": 1,
        "compute_table": 1,
        "sweep_plot": 3,
        "all": 1,
    }


def test_another_explainer_plans_only_explanations_and_what_reads_them(built_paper):
    config = paper_config()
    config["interpret"]["explainer"]["model"] = "gpt-4.1"
    assert planned(built_paper, config) == {
        "explain_features": 1,
        "detection_scores": 1,
        "feature_cards": 1,
        "compute_table": 1,  # Table 4 counts the interpretation jobs' hours
        "all": 1,
    }


def test_more_seeds_plan_only_the_further_seeds_and_the_tables_that_read_them(built_paper):
    """The first seed keeps its folder and params: none of its jobs is planned again."""
    config = paper_config()
    config["tables"]["seeds"] = 3
    assert planned(built_paper, config) == {
        "train_sarm": 2 * 5,  # seeds 1 and 2 of SARM-2B, -3B, -4B and Table 2's two ablations
        "train_vanilla_rm": 2 * 2,
        "evaluate_rewardbench2": 2 * 7,
        "results_table": 2,  # Tables 1 and 2; Table 3 and the comparisons read first seeds only
        "compute_table": 1,
        "all": 1,
    }
