"""The real workflow, end to end, on the tiny Llama and a slice of the bundled demo data."""

import json
import os
import re
import subprocess

import pandas as pd
import pytest

from .conftest import snakemake_command
from .slurm_utils import needs_slurm, run_on_slurm
from .tiny_workflow import make_workdir, tiny_config, workflow_args

pytestmark = pytest.mark.slow
SARM_DIR = "results/tiny/layer2/rm/sarm_sequence_m128_k4"
OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def snakemake(workdir, config_path, *args, timeout=900):
    command = snakemake_command(*workflow_args(workdir, config_path), "--cores", "2", *args)
    result = subprocess.run(command, capture_output=True, text=True, env=OFFLINE, timeout=timeout)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def tiny_run(tiny_backbone, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("workflow")
    config_path = make_workdir(workdir, tiny_backbone)
    snakemake(workdir, config_path, "all")
    return workdir, config_path


def test_all_builds_every_table_figure_and_card(tiny_run):
    workdir, _ = tiny_run
    for name in ["table1", "table2", "table3", "table4"]:
        for suffix in (".md", ".csv", ".tex"):
            assert (workdir / "results/tables" / f"{name}{suffix}").stat().st_size > 0
    for kind in ("layer", "latents", "k"):
        assert (workdir / f"results/figures/table3_{kind}.png").stat().st_size > 0
    assert (workdir / SARM_DIR / "interpret/feature_cards.md").read_text().strip()
    for figure in ("figure3a.png", "figure3b.png"):
        assert (workdir / SARM_DIR / "steering" / figure).stat().st_size > 0


def test_sae_metrics_and_reward_model_scores_are_measured(tiny_run):
    workdir, _ = tiny_run
    metrics = json.loads((workdir / "results/tiny/layer2/sequence/sae_m128_k4/metrics.json").read_text())
    assert 0 <= metrics["fvu"] <= 1.5
    scores = json.loads((workdir / SARM_DIR / "rewardbench2.json").read_text())
    assert set(scores["subsets"]) == {"Factuality", "Precise IF", "Math", "Safety", "Focus", "Ties"}
    rewards = pd.read_parquet(workdir / SARM_DIR / "rewards.parquet")
    assert len(rewards) == rewards["id"].nunique() + (rewards["completion_index"] > 0).sum()
    assert rewards["reward"].notna().all()


def test_steering_leaves_rewards_of_inactive_samples_unchanged(tiny_run):
    workdir, _ = tiny_run
    rewards = pd.read_parquet(workdir / SARM_DIR / "steering/rewards.parquet")
    summary = json.loads((workdir / SARM_DIR / "steering/steering.json").read_text())
    inactive = rewards[rewards["feature_activation"] == 0]
    assert (inactive["reward_before"] == inactive["reward_after"]).all()
    assert summary["head_edit"] == {"feature": summary["feature"], "scale": 10.0}


def test_table_cells_come_from_result_files(tiny_run):
    workdir, config_path = tiny_run
    result_file = workdir / SARM_DIR / "rewardbench2.json"
    original = result_file.read_text()
    scores = json.loads(original)
    scores["subsets"] = dict.fromkeys(scores["subsets"], 0.123)
    scores["overall"] = 0.123
    try:
        result_file.write_text(json.dumps(scores))
        snakemake(workdir, config_path, "results/tables/table1.csv")
        table = pd.read_csv(workdir / "results/tables/table1.csv")
        ours = table[(table["Model"] == "SARM") & (table["Source"] == "reproduced")]
        assert ours["Overall"].round(1).tolist() == [12.3]
        assert (ours[["Factuality", "Ties"]].round(1) == 12.3).all(axis=None)
    finally:
        result_file.write_text(original)
        snakemake(workdir, config_path, "results/tables/table1.csv")


def test_a_second_run_has_nothing_to_do(tiny_run):
    workdir, config_path = tiny_run
    output = snakemake(workdir, config_path, "-n", "all")
    assert "Nothing to be done" in output


def test_papers_training_mode_trains_the_backbone(tiny_backbone, tmp_path):
    """train_backbone: true (the paper): layers 0..l-1 and the head train on tokenized pairs."""
    config = tiny_config(tiny_backbone)
    config["reward_model"].update(train_backbone=True, epochs=1, micro_batch=8)
    config_path = make_workdir(tmp_path, tiny_backbone, config)
    target = "results/tiny/layer2/rm/vanilla/rewardbench2.json"
    snakemake(tmp_path, config_path, target)
    saved = json.loads((tmp_path / "results/tiny/layer2/rm/vanilla/reward_model.json").read_text())
    assert "backbone" in saved["trained"]
    assert json.loads((tmp_path / target).read_text())["overall"] >= 0


@needs_slurm
def test_sae_stage_runs_as_slurm_jobs(tiny_backbone, tmp_path):
    config_path = make_workdir(tmp_path, tiny_backbone)
    target = "results/tiny/layer2/sequence/sae_m128_k4/sae.safetensors"
    run = run_on_slurm(tmp_path, *workflow_args(tmp_path, config_path), target, timeout=900)
    assert run.returncode == 0, run.summary()
    assert len(run.job_ids) >= 4, run.summary()  # split_sentences, 2 x sample_activations, train_sae
    logs = list((tmp_path / "results/logs").rglob("*.log"))
    job_ids_in_logs = {m for log in logs for m in re.findall(r"SLURM_JOB_ID=(\d+)", log.read_text())}
    assert {str(job) for job in run.job_ids} <= job_ids_in_logs


def test_report_holds_the_tables_and_figures(tiny_run):
    workdir, config_path = tiny_run
    snakemake(workdir, config_path, "--report", "report.html")
    report = (workdir / "report.html").read_text(errors="replace")
    for name in ("table1.md", "table4.md", "table3_layer.png", "figure3a.png", "feature_cards.md"):
        assert name in report
