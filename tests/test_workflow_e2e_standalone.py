"""End-to-end runs of the real workflow that build their own work directory instead of reading the shared
tiny run of test_workflow_e2e.py: a file of their own, so that pytest-xdist (`make test`) runs them
beside that run."""

import re

import pytest

from .slurm_utils import needs_slurm, run_on_slurm
from .tiny_workflow import (
    make_workdir,
    workflow_args,
)

pytestmark = pytest.mark.slow


@needs_slurm
def test_a_rule_of_the_workflow_runs_as_a_slurm_job(tiny_backbone, tmp_path):
    """The real Snakefile through the SLURM profile, on one cheap rule: the computation itself is covered
    by the local runs above, the profile's resources by tests/test_slurm_cluster.py."""
    config_path = make_workdir(tmp_path, tiny_backbone)
    target = "results/tiny/sentences/part0.parquet"
    run = run_on_slurm(tmp_path, *workflow_args(tmp_path, config_path), target, timeout=300)
    assert run.returncode == 0, run.summary()
    assert len(run.job_ids) == 1, run.summary()  # split_sentences, which writes every part at once
    assert (tmp_path / target).stat().st_size > 0
    log = (tmp_path / "results/logs/split_sentences/tiny.log").read_text()
    assert re.findall(r"SLURM_JOB_ID=(\d+)", log) == [str(run.job_ids[0])], log[-2000:]
