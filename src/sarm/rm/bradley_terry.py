"""Bradley-Terry training of a reward model: minimise -log sigmoid(r_chosen - r_rejected) over preference pairs.

Two data paths share one loop: tokenized pairs (train the first l layers + head) and cached final-token
states (frozen backbone: only the head, in seconds). One global batch per optimizer step, gradient
accumulation in micro-batches, DDP under torchrun (gloo on CPU, nccl on GPU), checkpoint + resume, and a
SIGTERM handler that checkpoints and exits so a preempted job continues where it stopped.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from transformers import get_scheduler

from sarm.batching import pad_right
from sarm.data.chat import DEFAULT_MAX_LENGTH
from sarm.rm.models import SARM, RewardModel, save_reward_model
from sarm.rm.pairs import CachedPairs, Pairs
from sarm.runtime import (
    Preempted,
    TerminationFlag,
    atomic_write,
    check_resumable,
    module_device,
    write_csv_atomic,
)

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
LOG_FILE = "train_log.csv"
LOG_COLUMNS = (
    "step",
    "epoch",
    "lr",
    "loss",
    "recon_loss",
    "train_accuracy",
    "heldout_loss",
    "heldout_accuracy",
)
RESUMABLE_CHANGES = ("checkpoint_every", "eval_every")  # the only config keys that may change on resume
SCHEDULES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(r_chosen - r_rejected), averaged over pairs."""
    return -F.logsigmoid(r_chosen - r_rejected).mean()


@dataclass
class BTTrainConfig:
    """Stage-2 hyperparameters. Defaults are the paper's (lr 4e-6, 3 epochs, global batch 512).

    The paper names no schedule, warmup or weight decay, so the defaults take none of them (constant lr).
    Upstream's recipe: lr=2e-6, schedule="cosine", warmup_ratio=0.03, weight_decay=0.001.
    """

    lr: float = 4e-6
    epochs: int = 3
    global_batch: int = 512
    micro_batch: int = 4
    schedule: str = "constant"  # constant | linear (to 0) | cosine (to 0), each after `warmup_ratio` warmup
    warmup_ratio: float = 0.0
    # AdamW decay on matrices only; biases and norm gains are not decayed, as in HF Trainer.
    weight_decay: float = 0.0
    max_grad_norm: float | None = None
    seed: int = 0
    train_backbone: bool = True
    recon_coef: float = 0.0  # > 0 adds the SAE reconstruction loss and unfreezes the SAE (upstream: 1.0)
    checkpoint_every: int = 50  # optimizer steps
    eval_every: int = 50  # optimizer steps between held-out evaluations (and at the end)
    max_length: int = DEFAULT_MAX_LENGTH  # for tokenize_pairs / final_token_states (left truncation)
    gradient_checkpointing: bool = False

    def __post_init__(self):
        positive = (
            "lr",
            "epochs",
            "global_batch",
            "micro_batch",
            "checkpoint_every",
            "eval_every",
            "max_length",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"training config `{name}` must be a positive number, got {value!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"training config `schedule` must be one of {sorted(SCHEDULES)}, got {self.schedule!r}"
            )
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"training config `warmup_ratio` must be in [0, 1), got {self.warmup_ratio!r}")
        if self.recon_coef < 0 or self.weight_decay < 0:
            raise ValueError("training config `recon_coef` and `weight_decay` must not be negative")

    @classmethod
    def from_mapping(cls, values: dict, where: str = "training") -> BTTrainConfig:
        """Build from a config section, naming any unknown key."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown config key(s) {', '.join(f'`{where}.{k}`' for k in unknown)} (allowed: {', '.join(sorted(known))})"
            )
        return cls(**values)


class _PairScorer(nn.Module):
    """Rewards (and summed reconstruction loss) of a micro-batch; the module DDP wraps."""

    def __init__(self, model: RewardModel, recon: bool):
        super().__init__()
        self.model, self.recon = model, recon

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if "states" in batch:
            states = batch["states"]
        else:
            states = self.model.final_states(batch["input_ids"], batch["attention_mask"])
        rewards = self.model.rewards_from_states(states)
        recon = self.model.reconstruction_loss(states) if self.recon else rewards.new_zeros(())
        return rewards, recon


def _micro_batch(data: Pairs, indices: list[int], device: torch.device) -> dict[str, torch.Tensor]:
    """Chosen rows first, then rejected: one forward pass scores both sides."""
    if isinstance(data, CachedPairs):
        index = torch.as_tensor(indices)
        return {"states": torch.cat([data.chosen[index], data.rejected[index]]).to(device)}
    sequences = [data.chosen[i] for i in indices] + [data.rejected[i] for i in indices]
    input_ids, attention_mask = pad_right(sequences, data.pad_id)
    return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}


@dataclass(frozen=True)
class _Dist:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def _distributed() -> _Dist:
    """Join the torchrun process group if there is one (nccl on GPU, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return _Dist(rank=dist.get_rank() if world > 1 else 0, world=world, device=device)


def _all_sum(values: list[float], ctx: _Dist) -> list[float]:
    if ctx.world == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def steps_per_epoch(num_pairs: int, global_batch: int, world: int) -> int:
    """Full global batches, plus the remainder if at least one pair per process is left."""
    return num_pairs // global_batch + (1 if num_pairs % global_batch >= world else 0)


def global_batch_indices(num_pairs: int, cfg: BTTrainConfig, step: int, world: int) -> list[int]:
    """Pair indices of one optimizer step: a fixed shuffle per epoch, so any world size sees the same batches.

    A short last batch is trimmed to a multiple of the world size so that every process takes part.
    """
    epoch, position = divmod(step, steps_per_epoch(num_pairs, cfg.global_batch, world))
    order = torch.randperm(num_pairs, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
    chosen = order[position * cfg.global_batch : (position + 1) * cfg.global_batch].tolist()
    return chosen[: len(chosen) - len(chosen) % world]


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _set_trainable(model: RewardModel, cfg: BTTrainConfig, data: Pairs) -> None:
    if isinstance(data, CachedPairs) and cfg.train_backbone:
        raise ValueError("cached final-token states cannot train the backbone: set `train_backbone: false`")
    if cfg.recon_coef > 0 and not isinstance(model, SARM):
        raise ValueError("`recon_coef` > 0 needs a SARM (there is no SAE in a vanilla reward model)")
    model.requires_grad_(False)
    model.head.requires_grad_(True)
    model.trained_parts = {"head"}
    if cfg.train_backbone:
        if model.decoder is None:
            raise ValueError("train_backbone is set but the model was built without its backbone")
        model.decoder.requires_grad_(True)
        if hasattr(model, "final_norm"):
            model.final_norm.requires_grad_(True)
        model.trained_parts.add("backbone")
        if cfg.gradient_checkpointing:
            model.decoder.gradient_checkpointing_enable()
    if cfg.recon_coef > 0:
        model.sae.requires_grad_(True)
        model.trained_parts.add("sae")


@torch.no_grad()
def pairwise_accuracy(
    model: RewardModel, data: Pairs, batch_size: int, ctx: _Dist | None = None
) -> tuple[float, float]:
    """(mean BT loss, fraction with r_chosen > r_rejected) over `data`, sharded across processes."""
    ctx = ctx or _Dist(0, 1, module_device(model))
    was_training = model.training
    model.eval()
    scorer = _PairScorer(model, recon=False)
    loss_sum = correct = 0.0
    indices = list(range(ctx.rank, len(data), ctx.world))
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        with _autocast(ctx.device):
            rewards, _ = scorer(_micro_batch(data, chunk, ctx.device))
        r_chosen, r_rejected = rewards.float().split(len(chunk))
        loss_sum += bradley_terry_loss(r_chosen, r_rejected).item() * len(chunk)
        correct += (r_chosen > r_rejected).sum().item()
    model.train(was_training)
    loss_sum, correct = _all_sum([loss_sum, correct], ctx)
    return loss_sum / max(len(data), 1), correct / max(len(data), 1)


def _autocast(device: torch.device):
    """bf16 autocast on GPU (the paper's precision); plain float32 on CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def _read_log(path: Path, upto_step: int) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as f:
        return [row for row in csv.DictReader(f) if int(row["step"]) <= upto_step]


def _trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def _save_checkpoint(path: Path, step: int, model, optimizer, scheduler, cfg, world: int) -> None:
    state = {
        "step": step,
        "trainable": _trainable_state(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "config": dataclasses.asdict(cfg),
        "world_size": world,
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def _load_checkpoint(path: Path, model, optimizer, scheduler, cfg, ctx: _Dist) -> int:
    state = torch.load(path, map_location=ctx.device, weights_only=True)
    check_resumable(state["config"], dataclasses.asdict(cfg), path, may_change=RESUMABLE_CHANGES)
    if state["world_size"] != ctx.world:
        log.warning("resuming a %d-process run with %d processes", state["world_size"], ctx.world)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state["trainable"].items():
            params[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    log.info("resumed from %s at step %d", path, state["step"])
    return state["step"]


def _accumulate_gradients(
    scorer: nn.Module, data: Pairs, batch: list[int], cfg: BTTrainConfig, ctx: _Dist, term: TerminationFlag
) -> list[float] | None:
    """Backward over this process's share of one global batch, in micro-batches; None if SIGTERM came first.

    The signal is checked before every micro-batch (agreed across processes), so a preempted job stops
    within one micro-batch rather than one global batch, well inside a scheduler's grace period.
    """
    mine = batch[ctx.rank :: ctx.world]
    micro = [mine[i : i + cfg.micro_batch] for i in range(0, len(mine), cfg.micro_batch)]
    totals = [0.0, 0.0, 0.0]  # BT loss sum, reconstruction loss sum, correct pairs
    for j, indices in enumerate(micro):
        if _all_sum([float(term.requested)], ctx)[0] > 0:
            return None
        sync = j == len(micro) - 1 or ctx.world == 1
        with nullcontext() if sync else scorer.no_sync(), _autocast(ctx.device):
            rewards, recon = scorer(_micro_batch(data, indices, ctx.device))
            r_chosen, r_rejected = rewards.float().split(len(indices))
            bt_sum = bradley_terry_loss(r_chosen, r_rejected) * len(indices)
            # DDP averages gradients over processes, so scale sums by world / global batch size.
            loss = (bt_sum + cfg.recon_coef * recon / 2) * ctx.world / len(batch)
        loss.backward()
        totals[0] += bt_sum.item()
        totals[1] += recon.item()
        totals[2] += (r_chosen > r_rejected).sum().item()
    return totals


def train_reward_model(
    model: RewardModel,
    train: Pairs,
    cfg: BTTrainConfig,
    out_dir: str | Path,
    heldout: Pairs | None = None,
    on_step: Callable[[int], None] | None = None,
) -> RewardModel:
    """Bradley-Terry training into `out_dir` (model, train_log.csv); resumes from out_dir/checkpoint.pt.

    Works alone and under torchrun (each process passes the same data; every global batch is split across
    processes). `on_step(step)` is called after each optimizer step.
    """
    ctx = _distributed()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if len(train) < ctx.world:
        raise ValueError(f"{len(train)} training pairs cannot be split over {ctx.world} processes")
    torch.manual_seed(cfg.seed)
    _set_trainable(model, cfg, train)
    model.to(ctx.device).train()
    scorer = _PairScorer(model, recon=cfg.recon_coef > 0)
    if ctx.world > 1:
        scorer = DistributedDataParallel(
            scorer, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
        )
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr)
    per_epoch = steps_per_epoch(len(train), cfg.global_batch, ctx.world)
    total_steps = per_epoch * cfg.epochs
    scheduler = get_scheduler(
        SCHEDULES[cfg.schedule],
        optimizer,
        num_warmup_steps=math.ceil(cfg.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    checkpoint, log_path = out_dir / CHECKPOINT_FILE, out_dir / LOG_FILE
    step = _load_checkpoint(checkpoint, model, optimizer, scheduler, cfg, ctx) if checkpoint.exists() else 0
    rows = _read_log(log_path, step)
    log.info(
        "training %s: %d pairs, %d steps (%d per epoch), %d process(es)",
        sorted(model.trained_parts),
        len(train),
        total_steps,
        per_epoch,
        ctx.world,
    )

    with TerminationFlag() as term:
        while step < total_steps:
            batch = global_batch_indices(len(train), cfg, step, ctx.world)
            totals = _accumulate_gradients(scorer, train, batch, cfg, ctx, term)
            if totals is None:  # SIGTERM: the parameters are still those after `step` steps
                optimizer.zero_grad(set_to_none=True)
                if ctx.main:
                    _save_checkpoint(checkpoint, step, model, optimizer, scheduler, cfg, ctx.world)
                    log.warning("SIGTERM: checkpointed at step %d; run again to resume", step)
                if ctx.world > 1:
                    dist.barrier()  # no process may exit (and make torchrun kill the rest) before the save
                raise Preempted(step)
            if cfg.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(
                    [p for p in model.parameters() if p.requires_grad], cfg.max_grad_norm
                )
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            bt_sum, recon_sum, correct = _all_sum(totals, ctx)
            row = {
                "step": step,
                "epoch": (step - 1) // per_epoch + 1,
                "lr": lr,
                "loss": bt_sum / len(batch),
                "recon_loss": recon_sum / (2 * len(batch)),
                "train_accuracy": correct / len(batch),
                "heldout_loss": "",
                "heldout_accuracy": "",
            }
            if heldout is not None and (step % cfg.eval_every == 0 or step == total_steps):
                row["heldout_loss"], row["heldout_accuracy"] = pairwise_accuracy(
                    model, heldout, 2 * cfg.micro_batch, ctx
                )
            rows.append(row)
            if ctx.main:
                write_csv_atomic(rows, log_path, LOG_COLUMNS)
                log.info(
                    "step %d/%d loss %.4f train acc %.3f",
                    step,
                    total_steps,
                    row["loss"],
                    row["train_accuracy"],
                )
                if step % cfg.checkpoint_every == 0 and step < total_steps:
                    _save_checkpoint(checkpoint, step, model, optimizer, scheduler, cfg, ctx.world)
            if on_step is not None:
                on_step(step)

    if ctx.main:
        save_reward_model(model, out_dir)
        checkpoint.unlink(missing_ok=True)
    if ctx.world > 1:
        dist.barrier()
    return model
