"""The SLURM profile: consistent with the workflow and its CI overlay, and submitting real jobs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from .conftest import REPO
from .slurm_utils import (
    CI_OVERLAY_PROFILE,
    CLUSTER_PROFILE,
    NO_SLURM_REASON,
    REQUIRE_ENV,
    SlurmRun,
    needs_slurm,
    run_on_slurm,
    slurm_available,
    slurm_job_ids,
)

# Rules named after rules of profiles/slurm, so the profile's resources (with the CI overlay's gpu: 0)
# apply to them, all run by one `snakemake` on SLURM (one round of queueing and status polling for both
# tests below): two dependent rules, each job recording its SLURM job id and allocation in its log, and
# the sampling rule's three parts, which the profile submits as one SLURM array job (slurm-array-jobs).
SNAKEFILE = """
rule all:
    input: "second.txt", expand("part{part}.txt", part=range(3))

rule train_sae:
    output: "first.txt"
    log: "logs/first.log"
    shell: "echo SLURM_JOB_ID=$SLURM_JOB_ID > {log}; scontrol show job $SLURM_JOB_ID >> {log}; echo first > {output}"

rule train_sarm:
    input: "first.txt"
    output: "second.txt"
    log: "logs/second.log"
    shell: "echo SLURM_JOB_ID=$SLURM_JOB_ID > {log}; scontrol show job $SLURM_JOB_ID >> {log}; (cat {input}; echo second) > {output}"

rule sample_activations:
    output: "part{part}.txt"
    log: "logs/part{part}.log"
    shell: "echo SLURM_ARRAY_JOB_ID=$SLURM_ARRAY_JOB_ID SLURM_ARRAY_TASK_ID=$SLURM_ARRAY_TASK_ID > {log}; echo {wildcards.part} > {output}"
"""
# train_sae, train_sarm, and one array job for the three sampling parts
SUBMISSIONS = 3


def profile(path) -> dict:
    return yaml.safe_load((path / "config.yaml").read_text())


def workflow_rules() -> set[str]:
    sources = [REPO / "workflow" / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
    return {name for source in sources for name in re.findall(r"(?m)^rule (\w+):", source.read_text())}


def allocation(log_text: str) -> tuple[int, str]:
    """(SLURM job id, TRES allocation such as `cpu=1,mem=2000M,node=1`) from a job's log."""
    job_id = re.search(r"^SLURM_JOB_ID=(\d+)$", log_text, re.MULTILINE)
    tres = re.search(r"^\s+TRES=(\S+)$", log_text, re.MULTILINE)
    assert job_id and tres, f"job log lacks SLURM_JOB_ID or scontrol's TRES line:\n{log_text}"
    return int(job_id.group(1)), tres.group(1)


def test_slurm_profile_is_reachable_as_dot_slash_slurm_from_the_repo_root():
    assert (REPO / "slurm").resolve() == CLUSTER_PROFILE.resolve()
    assert (REPO / "slurm" / "config.yaml").is_file()


def test_cluster_profile_names_only_rules_of_the_workflow():
    rules = workflow_rules()
    cluster = profile(CLUSTER_PROFILE)
    for key in ("set-resources", "set-threads"):
        unknown = set(cluster[key]) - rules
        assert not unknown, (
            f"profiles/slurm `{key}` names rules the workflow does not have: {sorted(unknown)}"
        )


def test_ci_overlay_replaces_every_rule_of_the_cluster_profile_with_a_cpu_only_one():
    cluster, overlay = profile(CLUSTER_PROFILE), profile(CI_OVERLAY_PROFILE)
    for key in ("set-resources", "set-threads"):
        assert set(overlay[key]) == set(cluster[key]), (
            f"profiles/slurm-ci `{key}` must list the rules of profiles/slurm"
        )
    assert any(resources.get("gpu", 0) > 0 for resources in cluster["set-resources"].values())
    for rule, resources in overlay["set-resources"].items():
        assert resources.get("gpu") == 0 and "gres" not in resources, f"profiles/slurm-ci gives {rule} a GPU"
    assert overlay["slurm-status-command"] == "squeue"  # the CI cluster has no slurmdbd for sacct


def test_slurm_job_ids_reads_single_and_array_submissions_in_order():
    log = (
        "Job 2 has been submitted with SLURM jobid 17 (log: .snakemake/slurm_logs/rule_a/17.log).\n"
        "Finished jobid: 2 (Rule: a)\n"
        "Submitted array job with Snakemake IDs 3,4 and SLURM job ID 18. The individual task IDs are 1-2.\n"
    )
    assert slurm_job_ids(log) == [17, 18]
    assert slurm_job_ids("Building DAG of jobs...\nNothing to be done.") == []


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory) -> tuple[Path, SlurmRun]:
    """SNAKEFILE run on SLURM with the cluster profile and its CI overlay: (work directory, the run)."""
    if not slurm_available():  # reached only with SARM_REQUIRE_SLURM=1: the tests are skipped otherwise
        pytest.fail(f"{REQUIRE_ENV}=1 but {NO_SLURM_REASON}")
    workdir = tmp_path_factory.mktemp("slurm")
    (workdir / "Snakefile").write_text(SNAKEFILE)
    run = run_on_slurm(workdir, "--snakefile", str(workdir / "Snakefile"), "all", timeout=300)
    assert run.returncode == 0, run.summary()
    return workdir, run


@needs_slurm
def test_each_rule_runs_as_its_own_slurm_job_with_the_profile_resources(slurm_run):
    workdir, run = slurm_run
    submitted = run.job_ids
    first_id, first_tres = allocation((workdir / "logs" / "first.log").read_text())
    second_id, second_tres = allocation((workdir / "logs" / "second.log").read_text())
    # A job each, in dependency order, and each rule ran inside the job Snakemake submitted for it.
    assert len(submitted) == SUBMISSIONS, run.summary()
    assert first_id in submitted and second_id in submitted, run.summary()
    assert submitted.index(first_id) < submitted.index(second_id), run.summary()
    assert first_id < second_id
    assert (workdir / "second.txt").read_text() == "first\nsecond\n"

    overlay = profile(CI_OVERLAY_PROFILE)
    for rule, tres in (("train_sae", first_tres), ("train_sarm", second_tres)):
        threads, mem_mb = overlay["set-threads"][rule], overlay["set-resources"][rule]["mem_mb"]
        assert tres.startswith(f"cpu={threads},mem={mem_mb}M,"), f"{rule}: SLURM allocated {tres}"
        assert "gpu" not in tres, f"{rule}: SLURM allocated {tres}"


@needs_slurm
def test_sampling_parts_run_as_one_slurm_array_job(slurm_run):
    workdir, run = slurm_run
    assert "Submitted array job" in run.text, run.summary()
    assert len(run.job_ids) == SUBMISSIONS, run.summary()  # three parts, one sbatch
    array_ids = set()
    for part in range(3):
        assert (workdir / f"part{part}.txt").read_text().strip() == str(part)
        log = (workdir / "logs" / f"part{part}.log").read_text()
        array_ids.add(int(re.search(r"SLURM_ARRAY_JOB_ID=(\d+)", log).group(1)))
    assert len(array_ids) == 1 and array_ids < set(run.job_ids), (array_ids, run.summary())
