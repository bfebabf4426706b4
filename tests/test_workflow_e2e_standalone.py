"""End-to-end runs of the real workflow that build their own work directory instead of reading the shared
tiny run of test_workflow_e2e.py: a file of their own, so that pytest-xdist (`make test`) runs them
beside that run."""

import re

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from sarm.data.rewardbench2 import load_rewardbench2

from .conftest import REPO
from .slurm_utils import needs_slurm, run_on_slurm
from .tiny_workflow import (
    make_workdir,
    rewards_one_by_one,
    snakemake,
    tiny_config,
    workflow_args,
)

pytestmark = pytest.mark.slow


def test_top_layers_mode_trains_and_evaluates_from_per_token_states(tiny_backbone, tmp_path):
    """train_layers: 1 on the layer-2 vanilla RM: layer 1 trains on states cached at layer 1, only it is
    stored, and the RewardBench 2 rewards scored from the cache equal scoring text with the loaded model."""
    config = tiny_config(tiny_backbone)
    config["reward_model"].update(train_backbone=True, train_layers=1, epochs=1, micro_batch=8, lr=0.01)
    config_path = make_workdir(tmp_path, tiny_backbone, config)
    model_dir = tmp_path / "results/tiny/layer2/rm/vanilla"
    snakemake(tmp_path, config_path, str(model_dir.relative_to(tmp_path) / "rewardbench2.json"))
    for dataset in ("preferences", "rewardbench2"):
        cached = load_file(tmp_path / f"results/tiny/cached_states/{dataset}.safetensors")
        assert {"tokens1", "offsets"} <= set(cached)
    source = load_file(tiny_backbone / "model.safetensors")
    stored = load_file(model_dir / "reward_model.safetensors")
    decoder = {name.removeprefix("decoder."): v for name, v in stored.items() if name.startswith("decoder.")}
    assert decoder and all(name.startswith("layers.1.") for name in decoder)
    name = "layers.1.mlp.up_proj.weight"
    assert not torch.equal(decoder[name], source[f"model.{name}"])
    prompts = load_rewardbench2(str(REPO / "resources/demo/rewardbench2.jsonl"))
    written = pd.read_parquet(model_dir / "rewards.parquet")["reward"].tolist()
    assert written == pytest.approx(rewards_one_by_one(model_dir, tiny_backbone, prompts), abs=1e-4)


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
