"""The workflow as a whole: the paper's DAG, lint, formatting, environment pins, config errors."""

import os
import re
import subprocess

import pytest
import yaml

from sarm.config import (
    experiment_run,
    further_seed_runs,
    row_runs,
    sweep_runs,
    table_entries,
    validate_config,
    vanilla_run,
)
from sarm.paths import INTERPRET_DIR, SAE_DIR, STEERING_DIR

from .conftest import REPO, VENV_BIN, snakemake_command

OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def run(*args, **kwargs):
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, env=OFFLINE, timeout=300, **kwargs)


def test_paper_dag_holds_every_experiment(paper_dag):
    expected = [
        # Table 1: SARM-2B, SARM-3B, SARM-4B and the vanilla RMs beside them
        "results/llama-3.2-3b/layer14/rm/sarm_sequence_m49152_k144/rewardbench2.json",
        "results/llama-3.2-3b/layer21/rm/sarm_sequence_m49152_k144/rewardbench2.json",
        "results/llama-3.1-8b/layer16/rm/sarm_sequence_m65536_k192/rewardbench2.json",
        "results/llama-3.1-8b/layer16/rm/vanilla/rewardbench2.json",
        "results/llama-3.1-8b/layer32/rm/vanilla/rewardbench2.json",
        # Table 2: random-init encoder and token-level SAE
        "results/llama-3.1-8b/layer16/rm/sarm_random_m65536_k192/rewardbench2.json",
        "results/llama-3.1-8b/layer16/rm/sarm_token_m65536_k192/rewardbench2.json",
        "results/llama-3.1-8b/layer16/token/sae_m65536_k192/sae.safetensors",
        # Figure 3 and the feature cards on SARM-4B
        "results/llama-3.1-8b/layer16/rm/sarm_sequence_m65536_k192/steering/figure3a.png",
        "results/llama-3.1-8b/layer16/rm/sarm_sequence_m65536_k192/interpret/feature_cards.md",
    ]
    expected += [
        f"results/llama-3.2-3b/layer{layer}/rm/sarm_sequence_m49152_k144/rewardbench2.json"
        for layer in (7, 10, 28)
    ]
    expected += [
        f"results/llama-3.2-3b/layer14/rm/sarm_sequence_m{3072 * m}_k144/rewardbench2.json"
        for m in (8, 12, 24, 32)
    ]
    expected += [
        f"results/llama-3.2-3b/layer14/rm/sarm_sequence_m49152_k{k}/rewardbench2.json"
        for k in (48, 96, 196, 240)
    ]
    expected += [f"results/tables/table{n}.md" for n in (1, 2, 3, 4)]
    expected.append("results/tables/comparisons.md")
    missing = [path for path in expected if path not in paper_dag]
    assert not missing


def test_paper_tables_read_the_rewards_and_sae_metrics_of_their_rows(paper_dag):
    jobs = re.findall(
        r"^rule results_table:\n    input: (.*)\n    output: results/tables/(table\d)", paper_dag, re.M
    )
    inputs = {table: line.split(", ") for line, table in jobs}
    assert "results/llama-3.1-8b/layer16/token/sae_m65536_k192/metrics.json" in inputs["table2"]
    assert "results/llama-3.1-8b/layer16/rm/sarm_random_m65536_k192/rewards.parquet" in inputs["table2"]
    assert sum(path.endswith("/metrics.json") for path in inputs["table3"]) == 13  # one SAE per sweep run


def test_paper_dag_job_counts(paper_dag):
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", paper_dag, flags=re.MULTILINE))
    # 13 distinct sweep/table SARMs on the 3B + 3 on the 8B; 2 vanilla RMs; 64 sampling parts per
    # (backbone, level, layer): 3B sequence at layers 7, 10, 14, 21, 28; 8B sequence and token at 16.
    assert int(counts["train_sarm"]) == 16
    assert int(counts["train_vanilla_rm"]) == 2
    assert int(counts["evaluate_rewardbench2"]) == 18
    assert int(counts["sample_activations"]) == 7 * 64
    assert int(counts["train_sae"]) == 15


def test_package_paths_are_the_rules_outputs(paper_dag):
    """The folders the package computes for a run (sarm.paths) are the ones the rules write."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validate_config(config, REPO / "workflow" / "schemas" / "config.schema.yaml")
    names = [name for table in ("table1", "table2") for name, _ in table_entries(config, table)]
    runs = [experiment_run(config, name) for name in names]
    runs += [vanilla_run(config, spec) for spec in config["tables"]["table1"]["vanilla"]]
    runs += [run for _, _, run in sweep_runs(config)]
    expected = [f"{run.directory}/rewardbench2.json" for run in runs]
    expected += [f"{run.directory}/reward_model.json" for run in runs]
    expected += [
        f"{SAE_DIR.format(**vars(run), level=run.sae_level)}/sae.safetensors" for run in runs if run.sae_level
    ]
    expected.append(
        f"{experiment_run(config, config['interpret']['experiment']).path(INTERPRET_DIR)}/feature_cards.md"
    )
    expected.append(
        f"{experiment_run(config, config['steering']['experiment']).path(STEERING_DIR)}/steering.json"
    )
    missing = [path for path in expected if path not in paper_dag]
    assert not missing


def test_slurm_profile_builds_the_paper_dag(paper_dag):
    assert "Using profile slurm" in paper_dag
    assert "results/tables/table4.md" in paper_dag


def test_snakemake_lint_is_clean():
    result = run(*snakemake_command("--lint", "--cores", "1"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations" in result.stdout + result.stderr


def test_snakefiles_are_formatted():
    result = run(str(VENV_BIN / "snakefmt"), "--check", "workflow")
    assert result.returncode == 0, result.stderr


def test_python_is_linted():
    result = run(str(VENV_BIN / "ruff"), "check", "src", "scripts", "tests", "benchmarks")
    assert result.returncode == 0, result.stdout


def test_bad_config_stops_the_run_with_one_sentence():
    result = run(*snakemake_command("-n", "--cores", "1", "--config", "sae={'k': 'abc'}"))
    assert result.returncode != 0
    assert "config key `sae.k` has an invalid value 'abc'" in result.stderr + result.stdout


def test_every_rule_has_log_and_conda():
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        for rule in re.split(r"^rule ", smk.read_text(), flags=re.MULTILINE)[1:]:
            name = rule.split(":")[0]
            assert "    log:" in rule, f"rule {name} in {smk.name} has no log"
            assert "    conda:" in rule, f"rule {name} in {smk.name} has no conda env"


def dry_run(*args: str) -> str:
    env = {**OFFLINE, "OPENAI_API_KEY": "unused-dry-run"}  # the paper DAG checks that a key is set
    command = snakemake_command("-n", *args)
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def demo_dag() -> str:
    """The dry run of the demo's `all` (a few seconds), shared by the tests that read it."""
    return dry_run("--profile", "profiles/demo", "all")


def sampling_jobs(dag: str) -> list[tuple[str, str]]:
    """(rule, outputs) of every sampling job of a dry run."""
    return sorted(re.findall(r"^rule (sample_activations\w*):\n.*\n\s+output: (.*)$", dag, re.MULTILINE))


def test_shared_levels_sample_sequence_and_token_in_one_job_per_part(demo_dag, tmp_path):
    # demo: group_layers and share_levels, sequence SAEs at 8, 11, 15, 22, 30 and a token SAE at 15
    jobs = sampling_jobs(demo_dag)
    root = "results/smollm2-135m/activations"
    assert jobs == [
        (
            "sample_activations_levels",
            f"{root}/sequence/layer8-11-15-22-30/part{p}, {root}/token/layer8-11-15-22-30/part{p}",
        )
        for p in (0, 1)
    ]
    # paper config, one job per layer: only the 8B's layer 16 has both levels
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["sampling"]["share_levels"] = True
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    jobs = sampling_jobs(dry_run("--configfile", str(tmp_path / "config.yaml"), "--", "all"))
    shared = [outputs for rule, outputs in jobs if rule == "sample_activations_levels"]
    assert len(jobs) == 6 * 64 and len(shared) == 64
    assert all("llama-3.1-8b/activations/sequence/layer16/" in outputs for outputs in shared)
    assert not any("llama-3.1-8b" in outputs for rule, outputs in jobs if rule == "sample_activations")


def _inputs_of(dag: str, rule: str) -> list[str]:
    """The input files of the first job of `rule` in a dry run's printout."""
    match = re.search(rf"^rule {rule}:\n\s+input: (.*)$", dag, flags=re.MULTILINE)
    assert match, f"no {rule} job in the dry run"
    return match.group(1).split(", ")


def test_steering_reads_cached_states_unless_every_layer_trained(paper_dag):
    """Paper (train_layers: all): the trained model runs its own backbone, so no cached states. Demo (the
    steered model trains its top layer): the states cached for evaluation, plus RM-Bench's when it is the
    source of the safety pairs, and the backbone for the layers below the trained one's weights; with a
    frozen backbone, the cached states alone."""
    paper = _inputs_of(paper_dag, "steer_feature")
    assert "results/downloads/backbone/llama-3.1-8b.json" in paper
    assert not [path for path in paper if "cached_states" in path]

    def demo(*config):
        result = run(*snakemake_command("-n", "--profile", "profiles/demo", "steering", *config))
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    states = "results/smollm2-135m/cached_states/{}.safetensors"
    backbone = "results/backbones/smollm2-135m"
    rmbench = _inputs_of(demo(), "steer_feature")
    assert rmbench[1:] == [backbone, states.format("rewardbench2"), states.format("rmbench")]
    rewardbench2 = demo("--config", "steering={'source': 'rewardbench2_safety'}")
    assert _inputs_of(rewardbench2, "steer_feature")[1:] == [backbone, states.format("rewardbench2")]
    assert states.format("rmbench") not in rewardbench2  # no job caches RM-Bench then
    frozen = demo("--config", "reward_model={'train_backbone': False, 'train_layers': 'all'}")
    assert _inputs_of(frozen, "steer_feature")[1:] == [
        states.format("rewardbench2"),
        states.format("rmbench"),
    ]


def test_the_demos_three_seeds_train_and_evaluate_every_table1_and_table2_model_twice_more(demo_dag):
    """Demo (tables.seeds: 3): seeds 1 and 2 of each Table 1 / 2 model, in folders beside the first
    seed's and read by Tables 1 and 2 only; no further seed of a Table 3 sweep point."""
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    validate_config(config, REPO / "workflow" / "schemas" / "config.schema.yaml", base_dir=REPO)
    assert config["tables"]["seeds"] == 3 and config["reward_model"]["seed"] == 0
    further = {
        table: {
            seeded.directory for run in row_runs(config, table) for seeded in further_seed_runs(config, run)
        }
        for table in ("table1", "table2")
    }
    expected = further["table1"] | further["table2"]
    assert len(expected) == 2 * 6  # 4 SARMs (one in both tables) and 2 vanilla RMs
    jobs = re.findall(r"^rule (\w+):\n    input: .*\n    output: (\S+)/[^/,]+,", demo_dag, re.M)
    folders = {
        rule: {folder for name, folder in jobs if name == rule and "_seed" in folder} for rule, _ in jobs
    }
    assert folders["evaluate_rewardbench2"] == expected
    assert folders["train_sarm"] | folders["train_vanilla_rm"] == expected
    assert all("/vanilla_seed" in folder for folder in folders["train_vanilla_rm"])
    tables = re.findall(
        r"^rule \w+_table:\n    input: (.*)\n    output: results/tables/(\w+)\.md", demo_dag, re.M
    )
    for inputs, table in tables:
        seeded = {path.removesuffix("/rewardbench2.json") for path in inputs.split(", ") if "_seed" in path}
        wanted = {**further, "table4": expected}.get(table, set())  # Table 4 counts their compute
        assert seeded == wanted, table
