"""The reward-model job through its real entry points, in real processes: `python -m sarm.rm.launch job.json`
alone, and the torchrun command `launch()` builds for several GPUs, run here with 2 gloo processes on CPU.

Preemption is a SIGTERM from outside, between micro-batches; the job run again must end with the weights
and the training log of an uninterrupted run.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from unittest import mock

import pytest
import torch
from safetensors.torch import load_file

from sarm.rm.launch import RewardModelJob, launch
from sarm.runtime import PREEMPTED_EXIT_CODE
from tests.conftest import REPO

# 40 pairs, 8 held out: 4 global batches of 8 pairs per epoch, 3 epochs; one pair per micro-batch, so a
# step of one process has 8 micro-batches, and 4 in each of 2 processes.
PAIRS, STEPS = 40, 12
REWARD_MODEL = {
    "train_backbone": True,
    "epochs": 3,
    "global_batch": 8,
    "micro_batch": 1,
    "lr": 0.01,
    "weight_decay": 0.01,
    "max_length": 96,
    "checkpoint_every": 100,  # only the SIGTERM checkpoint
    "eval_every": 3,
    "heldout_fraction": 0.2,
}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def make_job(backbone: Path, out_dir: Path) -> RewardModelJob:
    return RewardModelJob(
        backbone=str(backbone),
        layer=2,
        encoder="vanilla",
        out_dir=str(out_dir),
        preferences={"source": str(REPO / "resources" / "demo" / "preference_train.jsonl"), "limit": PAIRS},
        reward_model=dict(REWARD_MODEL),
    )


def one_process_command(job: RewardModelJob) -> list[str]:
    """What a single-GPU SLURM job runs: the job file handed to `python -m sarm.rm.launch`."""
    spec = Path(job.out_dir) / "job.json"
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps(asdict(job)))
    return [sys.executable, "-m", "sarm.rm.launch", str(spec)]


def two_process_command(job: RewardModelJob) -> list[str]:
    """The torchrun command `launch` runs for 2 GPUs (it writes the job file; here it runs nothing)."""
    with mock.patch("sarm.rm.launch.subprocess.run") as run:
        launch(job, gpus=2)
    ((command,), _) = run.call_args
    assert command[1:3] == ["-m", "torch.distributed.run"] and "--nproc_per_node=2" in command
    return command


def run(command: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def log_rows(out_dir: Path) -> list[dict]:
    path = out_dir / "train_log.csv"
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def weights(out_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(out_dir / "reward_model.safetensors")


def child_pids(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def preempt(command: list[str], out_dir: Path, workers: int) -> subprocess.CompletedProcess:
    """Start the job, and once it has logged a step, send SIGTERM (to torchrun, which passes it on to the
    workers) while the workers are held in the middle of the next step's micro-batches."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.monotonic() + 300
    while not log_rows(out_dir):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no training step logged within 300 s"
        time.sleep(0.01)
    held = child_pids(process.pid) if workers > 1 else [process.pid]
    assert len(held) == workers, held
    for pid in held:
        os.kill(pid, signal.SIGSTOP)
    assert not (out_dir / "reward_model.json").exists(), "training ended before it could be interrupted"
    process.send_signal(signal.SIGTERM)
    for pid in held:
        os.kill(pid, signal.SIGCONT)
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def one_process(tiny_backbone, tmp_path_factory) -> Path:
    job = make_job(tiny_backbone, tmp_path_factory.mktemp("one"))
    run(one_process_command(job))
    return Path(job.out_dir)


@pytest.fixture(scope="module")
def two_processes(tiny_backbone, tmp_path_factory) -> Path:
    job = make_job(tiny_backbone, tmp_path_factory.mktemp("two"))
    result = run(two_process_command(job))
    assert "2 process(es)" in result.stderr
    return Path(job.out_dir)


def test_two_gloo_processes_train_the_model_of_one_process_and_shard_the_heldout_set(
    one_process, two_processes
):
    one, two = weights(one_process), weights(two_processes)
    assert set(one) == set(two) and "decoder.layers.0.self_attn.q_proj.weight" in one
    # Adam moves every weight by about lr = 0.01 per step whatever the gradient's size, so the rounding
    # of a sum over 2 processes grows to ~1e-4 in 12 steps; a batch split wrongly moves weights by ~lr.
    for name in one:
        assert torch.allclose(one[name], two[name], atol=1e-3, rtol=0), name
    one_log, two_log = log_rows(one_process), log_rows(two_processes)
    steps = [*range(1, STEPS + 1)]
    assert [int(row["step"]) for row in one_log] == [int(row["step"]) for row in two_log] == steps
    assert [int(row["step"]) for row in one_log if row["heldout_accuracy"]] == [3, 6, 9, 12]
    for a, b in zip(one_log, two_log, strict=True):
        assert (a["heldout_accuracy"], a["train_accuracy"]) == (b["heldout_accuracy"], b["train_accuracy"])
        for column in ("loss", "heldout_loss"):
            if a[column] or b[column]:
                assert float(a[column]) == pytest.approx(float(b[column]), abs=1e-3), (a["step"], column)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_job_stopped_by_sigterm_between_micro_batches_resumes_to_the_uninterrupted_result(
    tiny_backbone, tmp_path, one_process, two_processes, workers
):
    job = make_job(tiny_backbone, tmp_path / "preempted")
    command = one_process_command(job) if workers == 1 else two_process_command(job)
    out_dir = Path(job.out_dir)
    stopped = preempt(command, out_dir, workers)
    if workers == 1:
        assert stopped.returncode == PREEMPTED_EXIT_CODE, stopped.stderr[-3000:]
    else:
        assert stopped.returncode != 0, stopped.stderr[-3000:]
    assert "SIGTERM: checkpointed at step" in stopped.stderr, stopped.stderr[-3000:]
    checkpoint = torch.load(out_dir / "checkpoint.pt", weights_only=True)
    assert 0 < checkpoint["step"] < STEPS and checkpoint["world_size"] == workers
    assert len(log_rows(out_dir)) == checkpoint["step"]  # the half-done step was dropped, not logged
    assert not (out_dir / "reward_model.safetensors").exists()

    resumed = run(command)
    assert f"at step {checkpoint['step']}" in resumed.stderr
    reference = one_process if workers == 1 else two_processes
    expected, got = weights(reference), weights(out_dir)
    assert set(expected) == set(got)
    for name in expected:
        assert torch.equal(got[name], expected[name]), name
    assert log_rows(out_dir) == log_rows(reference)
    assert not (out_dir / "checkpoint.pt").exists()
