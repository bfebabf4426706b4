"""`sarm plan` / `snakemake plan`: the paper's jobs fit the GPUs the SLURM profile asks for."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from sarm.cli import main as sarm_main
from sarm.plan import KNOWN_ARCHS, build_plan, load_config, paper_totals, totals

from .conftest import REPO

PROFILE = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())


@pytest.fixture(scope="module")
def paper():
    return load_config(REPO / "config" / "config.yaml")


def test_parameter_counts_match_the_published_models():
    llama3b, llama8b = (KNOWN_ARCHS[f"meta-llama/Llama-3.{v}-Instruct"] for v in ("2-3B", "1-8B"))
    embedding, layers = llama3b.params_up_to(28)
    assert abs(embedding + layers - 3.21e9) < 0.01e9  # tied embeddings
    embedding, layers = llama8b.params_up_to(32)
    assert abs(2 * embedding + layers - 8.03e9) < 0.01e9  # plus the LM head the reward model drops


def test_every_paper_job_fits_the_gpu_memory_the_slurm_profile_requests(paper):
    jobs = build_plan(paper, PROFILE)
    gpu_jobs = [job for job in jobs if job.gpus]
    assert {job.rule for job in gpu_jobs} >= {
        "sample_activations",
        "train_sae",
        "train_sarm",
        "train_vanilla_rm",
    }
    for job in gpu_jobs:
        requested_gb = PROFILE["set-resources"][job.rule]["gpu_mem_mb"] / 1000
        # Room to spare: at most 80% of the requested GPU memory.
        assert job.peak_gpu_gb <= 0.8 * requested_gb, (job.rule, job.job, job.peak_gpu_gb)
        assert not job.notes, (job.rule, job.job, job.notes)
    full_8b = next(j for j in jobs if j.rule == "train_vanilla_rm" and "layer 32" in j.job)
    assert full_8b.params_trainable > 7e9 and full_8b.gpus == 4


def test_replicated_fp32_training_does_not_fit_and_the_plan_says_so(paper):
    """The issue's arithmetic: DDP with fp32 AdamW needs ~16 bytes per parameter on every GPU."""
    config = copy.deepcopy(paper)
    config["reward_model"].update(sharding="ddp", activation_checkpointing=False)
    jobs = {(j.rule, j.job): j for j in build_plan(config, PROFILE)}
    sarm_4b = jobs[("train_sarm", "llama-3.1-8b layer 16 sarm_sequence_m65536_k192")]
    assert sarm_4b.peak_gpu_gb > 64
    assert any("GPU memory below plan" in note for note in sarm_4b.notes)


def test_the_plan_flags_a_profile_that_asks_for_too_little(paper):
    profile = copy.deepcopy(PROFILE)
    profile["set-resources"]["train_vanilla_rm"].update(runtime=30, gpu_mem_mb=24000, mem_mb=1000)
    profile["retries"] = 0
    (job,) = [j for j in build_plan(paper, profile) if j.rule == "train_vanilla_rm" and "layer 32" in j.job]
    notes = " ".join(job.notes)
    assert "GPU memory below plan" in notes and "runtime below plan" in notes and "host memory" in notes


def test_totals_stand_beside_the_papers_table_4(paper, tmp_path):
    jobs = build_plan(paper, PROFILE)
    planned = totals(jobs, 0.4)
    reported = paper_totals(REPO / "resources" / "paper" / "paper_compute.csv")
    assert set(reported) <= set(planned)
    assert 9 < planned["SAE training"]["disk_gb"] / 1000 < 11  # ~10 TB of float16 activations
    out = tmp_path / "plan"
    assert (
        sarm_main(
            [
                "plan",
                str(REPO / "config" / "config.yaml"),
                "--profile",
                str(REPO / "profiles" / "slurm" / "config.yaml"),
                "--reported",
                str(REPO / "resources" / "paper" / "paper_compute.csv"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    markdown = (tmp_path / "plan.md").read_text()
    assert "Totals beside the paper's Table 4" in markdown and "40 GPU-h on NVIDIA RTX 3090" in markdown
    assert (tmp_path / "plan.csv").read_text().count("\n") == 1 + len(jobs)


def test_the_plan_prices_every_gpu_job_of_the_dag(paper, paper_dag):
    """Same jobs as the dry run of `all` plans, rule by rule (the plan mirrors the DAG, not a guess of it)."""
    dag = {rule: int(n) for rule, n in re.findall(r"(?m)^(\w+)\s+(\d+)$", paper_dag)}
    planned: dict[str, int] = {}
    for job in build_plan(paper, PROFILE):
        planned[job.rule] = planned.get(job.rule, 0) + job.count
    for rule, count in planned.items():
        assert dag[rule] == count, (rule, dag[rule], count)
    assert set(dag) - set(planned) <= {
        "all",
        "download",
        "split_sentences",
        "explain_features",
        "detection_scores",
        "feature_cards",
        "results_table",
        "comparisons_table",
        "compute_table",
        "sweep_plot",
        "total",
    }  # CPU-only or local jobs (the explainer here is the API), and the job total


def test_further_seeds_add_their_training_and_evaluation_to_the_plan_and_nothing_else(paper):
    config = copy.deepcopy(paper)
    config["tables"]["seeds"] = 3
    one_seed = [(job.rule, job.job) for job in build_plan(paper, PROFILE)]
    added = [(job.rule, job.job) for job in build_plan(config, PROFILE)]
    for job in one_seed:
        added.remove(job)
    # 5 SARMs and 2 vanilla RMs in Tables 1 and 2, each trained and evaluated with seeds 1 and 2
    assert sorted({rule for rule, _ in added}) == ["evaluate_rewardbench2", "train_sarm", "train_vanilla_rm"]
    assert len(added) == 2 * 7 * 2
    assert all(name.endswith(("_seed1", "_seed2")) for _, name in added)
