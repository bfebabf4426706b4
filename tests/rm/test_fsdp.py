"""FSDP2 sharding (`reward_model.sharding: fsdp`) on CPU: two gloo processes under torchrun, each holding
half of every weight, gradient and AdamW moment, train the same reward model as one process does; a
SIGTERM checkpoints the sharded state and a second run resumes from it."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from sarm.backbone import load_tokenizer
from sarm.rm.bradley_terry import BTTrainConfig, train_reward_model
from sarm.rm.models import build_sarm
from sarm.rm.pairs import tokenize_pairs
from sarm.sae.model import SAEConfig, TopKSAE

from .test_distributed import CONFIG, pairs

# Same reward model, data and hyperparameters as the DDP test, sharded instead, with activation checkpointing.
SHARDED = {**CONFIG, "sharding": "fsdp", "activation_checkpointing": True, "checkpoint_every": 1}
# Agreement of 2 sharded processes with 1 process (float32 on CPU): per-step loss and final weights.
LOSS_TOLERANCE = 1e-5
WEIGHT_ATOL, WEIGHT_RTOL = 1e-5, 1e-4

DRIVER = textwrap.dedent(
    """
    import json, logging, os, signal, sys
    import torch
    sys.path.insert(0, {tests!r})
    from sarm.backbone import load_tokenizer
    from sarm.rm.bradley_terry import BTTrainConfig, train_reward_model
    from sarm.rm.models import build_sarm
    from sarm.rm.pairs import tokenize_pairs
    from sarm.runtime import Preempted
    from sarm.sae.model import SAEConfig, TopKSAE
    from rm.test_distributed import pairs

    logging.basicConfig(level=logging.INFO)
    source, out_dir, config, stop_at = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
    torch.manual_seed(0)
    model = build_sarm(source, 2, TopKSAE(32, SAEConfig(64, 4), seed=0))

    def on_step(step):  # a scheduler's SIGTERM, delivered to one process only
        if step == stop_at and os.environ["RANK"] == "1":
            os.kill(os.getpid(), signal.SIGTERM)

    try:
        train_reward_model(
            model, tokenize_pairs(load_tokenizer(source), pairs()), BTTrainConfig(**config), out_dir, on_step=on_step
        )
    except Preempted as stop:
        print(f"preempted: {{stop!r}}", flush=True)
        sys.exit(3)
    """
)


def torchrun(tmp_path, source, out_dir, config, stop_at=0):
    driver = tmp_path / "fsdp_driver.py"
    driver.write_text(DRIVER.format(tests=os.path.dirname(os.path.dirname(__file__))))
    command = [
        os.path.join(os.path.dirname(sys.executable), "torchrun"),
        "--standalone",
        "--nproc_per_node",
        "2",
    ]
    command += [str(driver), source, str(out_dir), json.dumps(config), str(stop_at)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def losses(out_dir) -> list[float]:
    with open(out_dir / "train_log.csv") as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def one_process(tiny_backbone, tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    source = str(tiny_backbone)
    torch.manual_seed(0)
    model = build_sarm(source, 2, TopKSAE(32, SAEConfig(64, 4), seed=0))
    train_reward_model(model, tokenize_pairs(load_tokenizer(source), pairs()), BTTrainConfig(**SHARDED), out)
    return out


def assert_same_model(one, two):
    a, b = load_file(one / "reward_model.safetensors"), load_file(two / "reward_model.safetensors")
    assert set(a) == set(b) and "decoder.layers.0.self_attn.q_proj.weight" in a
    for name in a:
        assert torch.allclose(a[name], b[name], atol=WEIGHT_ATOL, rtol=WEIGHT_RTOL), name


def test_two_sharded_gloo_processes_follow_the_loss_curve_of_one_process(
    tiny_backbone, tmp_path, one_process
):
    result = torchrun(tmp_path, str(tiny_backbone), tmp_path / "two", SHARDED)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "2 process(es)" in result.stderr
    one, two = losses(one_process), losses(tmp_path / "two")
    assert len(one) == len(two) == 6  # 3 steps x 2 epochs
    assert max(abs(a - b) for a, b in zip(one, two, strict=True)) < LOSS_TOLERANCE, (one, two)
    assert_same_model(one_process, tmp_path / "two")
    saved = json.loads((tmp_path / "two" / "reward_model.json").read_text())
    assert "backbone" in saved["trained"]
    assert not (tmp_path / "two" / "checkpoint.pt").exists()


def test_sharded_run_resumes_after_sigterm(tiny_backbone, tmp_path, one_process):
    out = tmp_path / "resumed"
    first = torchrun(tmp_path, str(tiny_backbone), out, SHARDED, stop_at=2)
    assert first.returncode != 0 and "preempted" in first.stdout, first.stderr[-4000:]
    assert (out / "checkpoint.pt").exists() and not (out / "reward_model.safetensors").exists()
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["step"] == 2 and state["optimizer"]["format"] == "full"
    second = torchrun(tmp_path, str(tiny_backbone), out, SHARDED)
    assert second.returncode == 0, second.stderr[-4000:]
    assert "resumed from" in second.stderr
    assert max(abs(a - b) for a, b in zip(losses(one_process), losses(out), strict=True)) < LOSS_TOLERANCE
    assert_same_model(one_process, out)
