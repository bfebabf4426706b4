"""Bradley-Terry training of a reward model: minimise -log sigmoid(r_chosen - r_rejected) over preference pairs.

Three data paths share one loop: tokenized pairs (train the first l layers + head), per-token states cached
at layer l-N (train the top N layers + head, `train_layers: N`) and cached final-token states (frozen
backbone: only the head, in seconds). One global batch per optimizer step, gradient
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

from sarm.backbone import last_token_index
from sarm.batching import pad_right
from sarm.data.chat import DEFAULT_MAX_LENGTH
from sarm.rm.models import SARM, RewardModel, save_reward_model
from sarm.rm.pairs import CachedPairs, Pairs, TokenStatePairs
from sarm.rm.train_layers import ALL, check_train_layers, token_states_layer
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
# Config keys that may change between a checkpoint and its resumption: they change how, not what, is trained.
RESUMABLE_CHANGES = ("checkpoint_every", "eval_every", "sharding", "activation_checkpointing")
SHARDINGS = ("ddp", "fsdp")
RECON_TOKENS = ("final", "assistant_turn")
MIXED_PRECISIONS = ("bf16", "fp32")
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
    # "all" (the paper) or N: only decoder layers l-N..l-1 train (with per-token states cached at l-N).
    train_layers: int | str = ALL
    recon_coef: float = 0.0  # > 0 adds the SAE reconstruction loss and unfreezes the SAE (upstream: 1.0)
    # Tokens the reconstruction loss averages over: "final" (the reward token) or "assistant_turn" (every
    # token of the last assistant turn, masked normalised MSE: the authors' mode 3 with a token-level SAE).
    recon_tokens: str = "final"
    checkpoint_every: int = 50  # optimizer steps
    eval_every: int = 50  # optimizer steps between held-out evaluations (and at the end)
    max_length: int = DEFAULT_MAX_LENGTH  # for tokenize_pairs / final_token_states (left truncation)
    sharding: str = "fsdp"
    """How a multi-process job spreads the model: "ddp" replicates it (16 bytes per trainable parameter on
    every GPU: fp32 weights, gradients, AdamW); "fsdp" shards weights, gradients and optimizer state (torch
    FSDP2 `fully_shard`, one unit per decoder layer). A single process never shards."""
    mixed_precision: str = "bf16"
    """With "bf16", on GPU: bfloat16 matmuls over fp32 master weights and optimizer state; "fp32": float32
    throughout. CPU runs are always fp32."""
    activation_checkpointing: bool = True
    """Recompute each decoder layer's activations in the backward pass instead of storing them (backbone
    training only)."""

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
        if self.sharding not in SHARDINGS:
            raise ValueError(f"training config `sharding` must be one of {SHARDINGS}, got {self.sharding!r}")
        if self.mixed_precision not in MIXED_PRECISIONS:
            raise ValueError(
                f"training config `mixed_precision` must be one of {MIXED_PRECISIONS}, got {self.mixed_precision!r}"
            )
        if self.recon_coef < 0 or self.weight_decay < 0:
            raise ValueError("training config `recon_coef` and `weight_decay` must not be negative")
        if self.recon_tokens not in RECON_TOKENS:
            raise ValueError(
                f"training config `recon_tokens` must be one of {RECON_TOKENS}, got {self.recon_tokens!r}"
            )
        check_train_layers(self.train_layers, self.train_backbone, self.recon_tokens)

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

    def __init__(self, model: RewardModel, recon: bool, start: int | None = None):
        super().__init__()
        self.model, self.recon = model, recon
        self.start = start  # the layer of cached per-token states (TokenStatePairs), else None

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if "features" in batch:  # EncodedPairs: the frozen encoder already ran, and there is no recon loss
            rewards = self.model.rewards_from_features(batch["features"])
            return rewards, rewards.new_zeros(())
        hidden = None
        if "states" in batch:
            states = batch["states"]
        elif "hidden" in batch:
            states = self.model.final_states_from(batch["hidden"], batch["attention_mask"], self.start)
        elif self.recon and "turn_mask" in batch:  # reconstruction over the last assistant turn
            hidden = self.model.residual(batch["input_ids"], batch["attention_mask"])
            rows = torch.arange(hidden.shape[0], device=hidden.device)
            states = hidden[rows, last_token_index(batch["attention_mask"])]
        else:
            states = self.model.final_states(batch["input_ids"], batch["attention_mask"])
        rewards = self.model.rewards_from_states(states)
        if not self.recon:
            recon = rewards.new_zeros(())
        elif hidden is not None:
            recon = self.model.reconstruction_loss(hidden, batch["turn_mask"])
        else:
            recon = self.model.reconstruction_loss(states)
        return rewards, recon


def _micro_batch(data: Pairs, indices: list[int], device: torch.device) -> dict[str, torch.Tensor]:
    """Chosen rows first, then rejected: one forward pass scores both sides."""
    if isinstance(data, EncodedPairs):
        index = torch.as_tensor(indices)
        return {"features": torch.cat([data.chosen[index], data.rejected[index]]).to(device)}
    if isinstance(data, CachedPairs):
        index = torch.as_tensor(indices)
        return {"states": torch.cat([data.chosen[index], data.rejected[index]]).to(device)}
    if isinstance(data, TokenStatePairs):
        hidden, mask = data.states.padded(
            [data.chosen[i] for i in indices] + [data.rejected[i] for i in indices]
        )
        return {"hidden": hidden.to(device), "attention_mask": mask.to(device)}
    sequences = [data.chosen[i] for i in indices] + [data.rejected[i] for i in indices]
    input_ids, attention_mask = pad_right(sequences, data.pad_id)
    batch = {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}
    if data.chosen_starts is not None:  # the last assistant turn of each conversation, up to its last token
        starts = torch.tensor(
            [data.chosen_starts[i] for i in indices] + [data.rejected_starts[i] for i in indices]
        )
        positions = torch.arange(input_ids.shape[1])
        batch["turn_mask"] = ((positions >= starts[:, None]) & attention_mask.bool()).to(device)
    return batch


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


class EncodedPairs(CachedPairs):
    """Cached states already through a frozen SAE encoder: the (N, M) features the head reads."""


# Above this, dense features of every cached state would not fit comfortably in host memory.
MAX_ENCODED_BYTES = 4 * 2**30


@torch.no_grad()
def encoded_once(model: RewardModel, data: Pairs | None, device: torch.device, rows: int = 1024):
    """With only the head of a SARM training on cached states, the encoder's output never changes: encode
    every state once (instead of once per epoch) and train the head on the features."""
    if not (isinstance(model, SARM) and model.trained_parts == {"head"} and type(data) is CachedPairs):
        return data
    size = 2 * len(data) * model.sae.latents * 4
    if size > MAX_ENCODED_BYTES:
        log.info("features of %d pairs would take %.1f GB: encoding per step instead", len(data), size / 1e9)
        return data

    def encode(states: torch.Tensor) -> torch.Tensor:
        return torch.cat([model.features(part.to(device)).cpu() for part in states.split(rows)])

    return EncodedPairs(chosen=encode(data.chosen), rejected=encode(data.rejected))


def _set_trainable(model: RewardModel, cfg: BTTrainConfig, data: Pairs) -> None:
    if isinstance(data, CachedPairs) and cfg.train_backbone:
        raise ValueError("cached final-token states cannot train the backbone: set `train_backbone: false`")
    first = token_states_layer(model.layer, cfg.train_layers, cfg.train_backbone)
    if isinstance(data, TokenStatePairs) and data.layer != first:
        raise ValueError(
            f"per-token states of layer {data.layer} cannot train a model reading layer {model.layer} with "
            f"`reward_model.train_layers: {cfg.train_layers}` (it needs the states of layer {first})"
        )
    if cfg.recon_coef > 0 and not isinstance(model, SARM):
        raise ValueError("`recon_coef` > 0 needs a SARM (there is no SAE in a vanilla reward model)")
    if (
        cfg.recon_coef > 0
        and cfg.recon_tokens == "assistant_turn"
        and getattr(data, "chosen_starts", None) is None
    ):
        raise ValueError(
            "`recon_tokens: assistant_turn` needs tokenized pairs with their last-turn starts "
            "(tokenize_pairs(..., last_turns=True)); cached final-token states have one token per conversation"
        )
    model.requires_grad_(False)
    model.head.requires_grad_(True)
    model.trained_parts = {"head"}
    if getattr(model, "trains_encoder", False):  # the paper's random-init ablation: nn.Linear(d, M) trained
        model.sae.requires_grad_(True)
        model.trained_parts.add("encoder")
    if cfg.train_backbone:
        if model.decoder is None:
            raise ValueError("train_backbone is set but the model was built without its backbone")
        if first is None:
            model.decoder.requires_grad_(True)
        else:  # frozen below: their output never changes, so it can be cached once (TokenStatePairs)
            model.decoder.layers[first:].requires_grad_(True)
        model.first_trained_layer = first
        if hasattr(model, "final_norm"):
            model.final_norm.requires_grad_(True)
        model.trained_parts.add("backbone")
        if cfg.activation_checkpointing:
            # Non-reentrant checkpointing: works with FSDP2 (re-gathers a layer for its recomputation).
            if hasattr(model.decoder, "activation_checkpointing_enable"):  # transformers >= 5.x
                model.decoder.activation_checkpointing_enable({"use_reentrant": False})
            else:
                model.decoder.gradient_checkpointing_enable({"use_reentrant": False})
    if cfg.recon_coef > 0:
        model.sae.requires_grad_(True)
        model.trained_parts.add("sae")


@torch.no_grad()
def pairwise_accuracy(
    model: RewardModel,
    data: Pairs,
    batch_size: int,
    ctx: _Dist | None = None,
    mixed_precision: str = "bf16",
    scorer: _PairScorer | None = None,
) -> tuple[float, float]:
    """(mean BT loss, fraction with r_chosen > r_rejected) over `data`, sharded across processes."""
    ctx = ctx or _Dist(0, 1, module_device(model))
    was_training = model.training
    model.eval()
    if scorer is None:  # a sharded model is only run through its FSDP root, the training scorer
        scorer = _PairScorer(model, recon=False, start=getattr(data, "layer", None))
    recon, scorer.recon = scorer.recon, False
    loss_sum = correct = 0.0
    indices = list(range(ctx.rank, len(data), ctx.world))
    # Every process runs the same number of forward passes (FSDP gathers weights collectively): a process
    # with fewer pairs repeats pair 0 and does not count it.
    batches = math.ceil(math.ceil(len(data) / ctx.world) / batch_size)
    for b in range(batches):
        chunk = indices[b * batch_size : (b + 1) * batch_size]
        counted = len(chunk)
        chunk = chunk or [0]
        with _autocast(ctx.device, mixed_precision):
            rewards, _ = scorer(_micro_batch(data, chunk, ctx.device))
        r_chosen, r_rejected = rewards.float().split(len(chunk))
        if counted:
            loss_sum += bradley_terry_loss(r_chosen, r_rejected).item() * counted
            correct += (r_chosen > r_rejected).sum().item()
    model.train(was_training)
    scorer.recon = recon
    loss_sum, correct = _all_sum([loss_sum, correct], ctx)
    return loss_sum / max(len(data), 1), correct / max(len(data), 1)


def _autocast(device: torch.device, mixed_precision: str = "bf16"):
    """bf16 autocast on GPU (the paper's precision) unless `mixed_precision: fp32`; plain float32 on CPU."""
    if device.type == "cuda" and mixed_precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def _shard(scorer: _PairScorer, cfg: BTTrainConfig, ctx: _Dist) -> None:
    """FSDP2: one unit per decoder layer, then the root: the scorer, whose forward every pass goes through
    (it gathers the embeddings, SAE and head). Parameters become DTensors sharded over the processes."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy()
    if ctx.device.type == "cuda" and cfg.mixed_precision == "bf16":
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    if scorer.model.decoder is not None:
        for layer in _decoder_layers(scorer.model.decoder):
            fully_shard(layer, mp_policy=policy)
    fully_shard(scorer, mp_policy=policy)


def _decoder_layers(decoder: nn.Module) -> list[nn.Module]:
    inner = getattr(decoder, "model", decoder)
    return list(getattr(inner, "layers", []))


def _sharded(model: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def _reshard(root: nn.Module) -> None:
    """Put every FSDP unit back in its sharded state: the root stays unsharded after a no-grad forward (the
    held-out evaluation), its parameters then being views of an all-gather buffer that is freed later."""
    from torch.distributed.fsdp import FSDPModule

    for module in root.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def _gather_full_parameters(model: nn.Module, keep: bool) -> None:
    """Replace every sharded parameter by its full tensor (collective); `keep` False frees them instead.

    After training, so that the main process saves plain tensors with save_reward_model.
    """
    from torch.distributed.tensor import DTensor

    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if isinstance(param, DTensor):
                full = param.full_tensor().detach().cpu()
                module._parameters[name] = nn.Parameter(full if keep else full[:0], param.requires_grad)


def _read_log(path: Path, upto_step: int) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as f:
        return [row for row in csv.DictReader(f) if int(row["step"]) <= upto_step]


def _trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def _save_checkpoint(
    path: Path, step: int, model, optimizer, scheduler, cfg, world: int, main: bool = True
) -> None:
    """Called by every process (gathering a sharded state is collective); the main process writes."""
    if _sharded(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_state, optimizer_state = get_state_dict(model, optimizer, options=options)
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        trainable_state = {n: v for n, v in model_state.items() if n in trainable}
        optimizer_state = {"format": "full", "state": optimizer_state}
    elif main:
        trainable_state, optimizer_state = _trainable_state(model), optimizer.state_dict()
    if not main:
        return
    state = {
        "step": step,
        "trainable": trainable_state,
        "optimizer": optimizer_state,
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
    if _sharded(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        if state["optimizer"].get("format") != "full":
            raise ValueError(f"{path} was written without sharding: resume it with `sharding: ddp`")
        set_state_dict(
            model,
            optimizer,
            model_state_dict=state["trainable"],
            optim_state_dict=state["optimizer"]["state"],
            options=StateDictOptions(full_state_dict=True, strict=False),
        )
    else:
        if state["optimizer"].get("format") == "full":
            raise ValueError(f"{path} was written by a sharded run: resume it with `sharding: fsdp`")
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
        # DDP reduces gradients once per global batch; FSDP reduce-scatters every micro-batch (sharded sums).
        sync = j == len(micro) - 1 or ctx.world == 1 or not hasattr(scorer, "no_sync")
        with nullcontext() if sync else scorer.no_sync(), _autocast(ctx.device, cfg.mixed_precision):
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
    if isinstance(train, TokenStatePairs) and ctx.world > 1:
        raise ValueError(
            "training from cached per-token states (`reward_model.train_layers: N`) runs in one process"
        )
    torch.manual_seed(cfg.seed)
    _set_trainable(model, cfg, train)
    model.to(ctx.device).train()
    train, heldout = encoded_once(model, train, ctx.device), encoded_once(model, heldout, ctx.device)
    scorer = _PairScorer(model, recon=cfg.recon_coef > 0, start=getattr(train, "layer", None))
    if ctx.world > 1 and cfg.sharding == "fsdp":
        _shard(scorer, cfg, ctx)
    elif ctx.world > 1:
        scorer = DistributedDataParallel(
            scorer, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
        )
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr)
    per_epoch = steps_per_epoch(len(train), cfg.global_batch, ctx.world)
    total_steps = per_epoch * cfg.epochs
    from transformers import get_scheduler

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
                _save_checkpoint(checkpoint, step, model, optimizer, scheduler, cfg, ctx.world, ctx.main)
                if ctx.main:
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
                    model,
                    heldout,
                    2 * cfg.micro_batch,
                    ctx,
                    cfg.mixed_precision,
                    scorer if _sharded(model) else None,
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
                _save_checkpoint(checkpoint, step, model, optimizer, scheduler, cfg, ctx.world, ctx.main)
            if on_step is not None:
                on_step(step)

    if _sharded(model):
        del optimizer
        _reshard(scorer)
        _gather_full_parameters(model, keep=ctx.main)
    if ctx.main:
        save_reward_model(model, out_dir)
        checkpoint.unlink(missing_ok=True)
    if ctx.world > 1:
        dist.barrier()
    return model
