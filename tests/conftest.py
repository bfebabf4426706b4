import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# One intra-op thread (set before torch is imported): the tests' tiny models gain nothing from more, and
# while another process kept the 2-core machine busy, 2 threads made 90 forward passes of the tiny Llama
# take 33.6 s instead of 1.4 s. Workflow jobs set their own threads (torch.set_num_threads in scripts/).
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> Path:
    """A random tiny Llama with a ChatML tokenizer, as a Hugging Face folder."""
    from tests.tiny_llama import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama")


def snakemake_command(*args: str) -> list[str]:
    return [str(VENV_BIN / "snakemake"), *args]


def dry_run_of_paper_dag() -> str:
    result = subprocess.run(
        snakemake_command("-n", "--profile", "slurm", "all"),
        cwd=REPO,
        capture_output=True,
        text=True,
        # a dry run never calls the explainer endpoint, but the DAG checks that a key is set
        env={
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "OPENAI_API_KEY": "unused-dry-run",
        },
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:] + result.stdout[-4000:]
    return result.stdout + result.stderr


@pytest.fixture(scope="session")
def paper_dag(tmp_path_factory, worker_id) -> str:
    """The dry run of the paper's DAG (config/config.yaml, ~520 jobs) through the SLURM profile, as printed.

    Built once per test run, also under pytest-xdist (whose workers each have their own session: the
    first to need it writes it beside their temporary directories, the others read it). The tests that
    read it check the experiments, the job counts and the paths, that the SLURM profile accepts the
    workflow, the download jobs (test_download.py), the plan's jobs (test_plan.py), the explainers'
    resources (test_profiles.py), and they take from it the outputs to mark as built
    (test_rerun_planning.py).
    """
    if worker_id == "master":  # no xdist: this session is the whole run
        return dry_run_of_paper_dag()
    run_directory = tmp_path_factory.getbasetemp().parent  # this run's, shared by its workers
    with open(run_directory / "paper_dag.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        printed = run_directory / "paper_dag.txt"
        if not printed.exists():
            printed.write_text(dry_run_of_paper_dag())
        return printed.read_text()
