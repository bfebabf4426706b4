"""Train a TopKSAE on cached activations: streaming, deterministic, checkpointed, resumable after a kill.

Which switch reproduces which source (defaults are the paper's; workflow/schemas/config.schema.yaml holds the
same defaults, and tests/sae/test_train.py checks that they agree):
- paper (arXiv 2508.08746): loss="mse", schedule="constant", relu=True, per-token standardised input
  (SAEConfig.standardize_input, "normalised as recommended in Gao et al."), decoder renormalised every 10
  steps, Adam(0.9, 0.999), lr 5e-4. The paper gives no batch size; 4096 rows here.
- upstream code (schrieffer-z/sae): loss="normalized_mse", schedule="warmup_decay" (their LinearWarmupLR:
  5% warmup from 0, constant, then a linear decay over the last 20% that starts at ~0.2 and reaches 0 at
  N - warmup), SAEConfig(relu=False), batch 64, 1 epoch.
- field improvements, off by default: auxk_alpha > 0 (AuxK loss on dead latents, Gao et al. 2024,
  "Scaling and evaluating sparse autoencoders", alpha 1/32 there), init_b_pre="geometric_median" or "mean"
  (Bricken et al. 2023 / Gao et al.), remove_parallel_grad=True (Gao et al.; decoder steps keep unit norm).

FVU, L0 and dead latents in metrics.json are measured on `heldout_rows` rows that training never sees (the
last rows of the sampled activations, see `ActivationReader(holdout=...)`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import torch
from tqdm import tqdm

from sarm.runtime import (
    Preempted,
    TerminationFlag,
    atomic_write,
    check_resumable,
    write_csv_atomic,
    write_text_atomic,
)
from sarm.sae.model import SAEConfig, TopKSAE
from sarm.sae.reader import ActivationReader

CHECKPOINT_FILE = "checkpoint.pt"
LOSSES = ("mse", "normalized_mse")
SCHEDULES = ("constant", "warmup_decay")
B_PRE_INITS = ("zeros", "geometric_median", "mean")
GEMM_DTYPES = ("float32", "bfloat16")
CSV_COLUMNS = ("step", "samples", "lr", "loss", "fvu", "l0", "dead_fraction")
RESUMABLE_CHANGES = ("checkpoint_every", "eval_rows")  # config keys that do not change the trajectory
HELDOUT_ROWS = 4096


@dataclass
class SAETrainConfig:
    """How to train the SAE; defaults are the paper's choices (see the module docstring for the others)."""

    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    batch_size: int = 4096
    """Rows per step; the paper does not say, upstream uses 64 sentences."""
    epochs: int = 1
    max_samples: int | None = None
    """Stop after this many rows instead of `epochs`."""
    seed: int = 0
    shuffle_buffer: int = 1048576
    """Rows shuffled together (ActivationReader); must be at least `batch_size`."""
    normalize_decoder_every: int = 10
    """Steps between decoder renormalisations (paper: 10); 0 = never."""
    loss: str = "mse"
    schedule: str = "constant"
    warmup_fraction: float = 0.05
    decay_fraction: float = 0.2
    auxk_alpha: float = 0.0
    auxk_k: int | None = None
    """Latents in the AuxK reconstruction; default d_model // 2."""
    dead_window: int = 1_000_000
    """A latent is dead when it has not fired in this many rows."""
    init_b_pre: str = "zeros"
    init_rows: int = 16384
    """Rows used to fit the input scale and b_pre."""
    remove_parallel_grad: bool = False
    gemm_dtype: str = "float32"
    """With "bfloat16" the encoder GEMM runs in bf16 (upstream trains all in bf16)."""
    checkpoint_every: int = 1000
    """Steps between checkpoints."""
    log_every: int = 10
    """Steps per row of loss.csv."""
    heldout_rows: int = HELDOUT_ROWS
    """Rows held out of training (the last ones of the sampled activations) for FVU, L0 and dead latents;
    0 measures them on a sample of the training rows instead."""
    eval_rows: int = 16384
    """Rows of the training stream the final metrics use when nothing is held out."""
    sae: SAEConfig | None = None
    """The SAE's own config when built from the workflow config; `train_sae` checks the SAE matches it."""

    def __post_init__(self):
        self.betas = tuple(self.betas)
        choices = {
            "loss": LOSSES,
            "schedule": SCHEDULES,
            "init_b_pre": B_PRE_INITS,
            "gemm_dtype": GEMM_DTYPES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"SAE training config `{name}` must be one of {allowed}, got {getattr(self, name)!r}"
                )
        positive = ("batch_size", "epochs", "shuffle_buffer", "dead_window", "init_rows", "checkpoint_every")
        for name in (*positive, "log_every", "eval_rows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SAE training config `{name}` must be a positive integer, got {value!r}")
        if self.max_samples is not None and (not isinstance(self.max_samples, int) or self.max_samples < 1):
            raise ValueError(
                f"SAE training config `max_samples` must be a positive integer, got {self.max_samples!r}"
            )
        if not self.lr > 0 or len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(
                f"SAE training config: need lr > 0 and two betas in [0, 1), got {self.lr}, {self.betas}"
            )
        if self.normalize_decoder_every < 0 or self.auxk_alpha < 0 or self.heldout_rows < 0:
            raise ValueError(
                "SAE training config `normalize_decoder_every`, `auxk_alpha` and `heldout_rows` must be >= 0"
            )
        if not (
            0 <= self.warmup_fraction
            and 0 <= self.decay_fraction
            and self.warmup_fraction + self.decay_fraction <= 1
        ):
            raise ValueError("SAE training config: warmup_fraction + decay_fraction must be within [0, 1]")

    @classmethod
    def from_config(cls, section: dict, latents: int, k: int) -> SAETrainConfig:
        """The workflow config's `sae` section, its size keys resolved to this run's `latents` and `k`."""
        shape = {f.name for f in dataclasses.fields(SAEConfig)}
        training = {key: value for key, value in section.items() if key not in shape}
        switches = {key: value for key, value in section.items() if key in shape - {"latents", "k"}}
        return cls.from_dict({**training, "sae": SAEConfig(latents=latents, k=k, **switches)})

    @classmethod
    def from_dict(cls, values: dict) -> SAETrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown SAE training config key(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    def make_reader(self, dirs, layer: int) -> ActivationReader:
        """The shuffled reader this config trains on (without the `heldout_rows` last rows)."""
        return ActivationReader(
            dirs, layer, self.batch_size, self.shuffle_buffer, self.seed, holdout=self.heldout_rows
        )

    def make_heldout_reader(self, dirs, layer: int) -> ActivationReader | None:
        """The `heldout_rows` rows training never sees, in storage order; None when nothing is held out."""
        if not self.heldout_rows:
            return None
        return ActivationReader(
            dirs,
            layer,
            self.batch_size,
            max(self.batch_size, self.heldout_rows),
            self.seed,
            shuffle=False,
            holdout=self.heldout_rows,
            heldout=True,
        )


def lr_factor(cfg: SAETrainConfig, step: int, total_steps: int) -> float:
    """Multiplier of cfg.lr at `step` (0-based): constant (paper) or upstream's LinearWarmupLR.

    Upstream (schrieffer-z/sae `LinearWarmupLR`, N steps, W = int(0.05 N) warmup, D = N // 5 decay steps):
    step / W during the warmup (the first step has lr 0), 1 until N - D, then (N - step - W) / (N - W - D),
    so the lr drops to ~0.2 when the decay starts and reaches 0 at step N - W, not at N.
    """
    if cfg.schedule == "constant":
        return 1.0
    warmup = int(total_steps * cfg.warmup_fraction)
    decay = math.floor(Fraction(str(cfg.decay_fraction)) * total_steps)  # upstream: N // 5
    if step < warmup:
        return step / max(1, warmup)
    if step < total_steps - decay:
        return 1.0
    return max(0.0, (total_steps - step - warmup) / max(1, total_steps - warmup - decay))


def total_steps(cfg: SAETrainConfig, reader: ActivationReader) -> int:
    if cfg.max_samples is None:
        return cfg.epochs * len(reader)
    full_epochs, rest = divmod(cfg.max_samples, reader.rows)
    return full_epochs * len(reader) + math.ceil(rest / reader.batch_size)


def reconstruction_loss(kind: str, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Paper: ||x - x^||^2 per row; upstream: mean_d (x^ - x)^2 / mean_d x^2 per row; both averaged over rows."""
    squared_error = (x_hat - x).pow(2).sum(dim=-1)
    if kind == "normalized_mse":
        return (squared_error / x.pow(2).sum(dim=-1)).mean()
    return squared_error.mean()


def auxk_loss(residual: torch.Tensor, residual_hat: torch.Tensor) -> torch.Tensor:
    """AuxK (Gao et al.): dead latents reconstruct the residual error, normalised by its variance."""
    variance = (residual - residual.mean(dim=0)).pow(2).sum()
    return (residual_hat - residual).pow(2).sum() / variance.clamp_min(torch.finfo(residual.dtype).tiny)


def geometric_median(points: torch.Tensor, iterations: int = 200, tolerance: float = 1e-6) -> torch.Tensor:
    """Weiszfeld's algorithm."""
    median = points.mean(dim=0)
    for _ in range(iterations):
        weights = 1 / (points - median).norm(dim=1).clamp_min(1e-8)
        updated = (weights[:, None] * points).sum(dim=0) / weights.sum()
        moved = (updated - median).norm()
        median = updated
        if moved <= tolerance * median.norm().clamp_min(1.0):
            break
    return median


@dataclass
class _Progress:
    step: int = 0
    samples: int = 0
    seconds: float = 0.0
    rows_since_fired: torch.Tensor | None = None
    history: list = field(default_factory=list)
    interval: dict = field(default_factory=lambda: dict.fromkeys(("steps", "loss", "err", "var", "l0"), 0.0))


def train_sae(
    reader: ActivationReader,
    sae: TopKSAE,
    cfg: SAETrainConfig,
    out_dir: str | Path,
    log: logging.Logger | None = None,
    eval_reader: ActivationReader | None = None,
) -> dict:
    """Train `sae` on `reader`'s batches; write sae.safetensors/json, metrics.json, loss.csv, loss.png.

    A checkpoint (model, optimiser, reader position, dead-latent counters, history) is written atomically
    every `cfg.checkpoint_every` steps and on SIGTERM (then the process exits with 143); calling again with
    the same arguments resumes from it and ends with the same weights as an uninterrupted run.
    Final metrics (FVU, L0, dead latents) use `eval_reader` if given (the workflow passes the held-out rows
    of `cfg.make_heldout_reader`), else the first `cfg.eval_rows` rows of the shuffled training stream;
    `metrics["eval_split"]` says which. A latent counts as active when its selected value is non-zero, so
    negative latents count too when `relu` is off (as upstream counts them).
    """
    log = log or logging.getLogger(__name__)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if reader.batch_size != cfg.batch_size:
        raise ValueError(f"reader batch size {reader.batch_size} differs from the config's {cfg.batch_size}")
    if reader.d_model != sae.d_model:
        raise ValueError(f"activations have d_model {reader.d_model}, the SAE expects {sae.d_model}")
    if cfg.sae is not None and cfg.sae != sae.cfg:
        raise ValueError(f"the SAE to train has config {sae.cfg}, the training config says {cfg.sae}")
    # fused Adam: 13 ms vs 59 ms per CPU step (benchmarks/README.md)
    fused = sae.b_pre.device.type in ("cpu", "cuda")
    optimizer = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=cfg.betas, fused=fused)
    progress = _Progress(rows_since_fired=torch.zeros(sae.latents, dtype=torch.long))
    checkpoint = out_dir / CHECKPOINT_FILE
    if checkpoint.is_file():
        _load_checkpoint(checkpoint, sae, optimizer, reader, progress, cfg)
        log.info("resumed SAE training from %s at step %d", checkpoint, progress.step)
    else:
        _initialise(sae, reader, cfg, log)
    steps = total_steps(cfg, reader)
    log.info(
        "training SAE d=%d M=%d k=%d for %d steps of %d rows",
        sae.d_model,
        sae.latents,
        sae.k,
        steps,
        cfg.batch_size,
    )

    previous_gemm, sae.gemm_dtype = sae.gemm_dtype, getattr(torch, cfg.gemm_dtype)
    try:
        _train_loop(sae, optimizer, reader, cfg, progress, steps, checkpoint, log)
    finally:
        sae.gemm_dtype = previous_gemm
    if cfg.normalize_decoder_every:
        sae.normalize_decoder_()
    metrics = _final_metrics(sae, reader, eval_reader, cfg, progress)
    sae.save(out_dir, info={"layer": reader.layer, "train_config": _config_dict(cfg), "metrics": metrics})
    _write_outputs(out_dir, progress, metrics)
    checkpoint.unlink(missing_ok=True)
    log.info(
        "SAE trained: %s FVU %.4f, L0 %.1f, dead %.3f",
        metrics["eval_split"],
        metrics["fvu"],
        metrics["l0"],
        metrics["dead_fraction"],
    )
    return metrics


def _train_loop(
    sae, optimizer, reader, cfg: SAETrainConfig, progress: _Progress, steps: int, checkpoint, log
):
    """Steps until `steps`, logging every cfg.log_every and checkpointing every cfg.checkpoint_every steps."""
    k_aux = cfg.auxk_k or sae.d_model // 2
    bar = tqdm(total=steps, initial=progress.step, unit="step", desc="SAE", mininterval=10)
    started = time.perf_counter()
    with TerminationFlag() as terminated:
        while progress.step < steps:
            for batch in reader:
                _train_step(sae, optimizer, batch, cfg, progress, lr_factor(cfg, progress.step, steps), k_aux)
                bar.update(1)
                done = progress.step >= steps
                if progress.step % cfg.log_every == 0 or done:
                    _log_interval(progress, cfg, log)
                if progress.step % cfg.checkpoint_every == 0 or terminated.requested:
                    progress.seconds += time.perf_counter() - started
                    started = time.perf_counter()
                    _save_checkpoint(checkpoint, sae, optimizer, reader, progress, cfg)
                    if terminated.requested:
                        log.warning("SIGTERM: checkpoint written at step %d, exiting", progress.step)
                        raise Preempted(progress.step)
                if done:
                    break
    bar.close()
    progress.seconds += time.perf_counter() - started


@torch.no_grad()
def _initialise(sae: TopKSAE, reader: ActivationReader, cfg: SAETrainConfig, log) -> None:
    sample = reader.sample(cfg.init_rows).to(sae.b_pre.device, sae.b_pre.dtype)
    scale = sae.fit_input_scale_(sample)
    normalized = sae.normalize_input(sample)
    if cfg.init_b_pre == "mean":
        sae.b_pre.copy_(normalized.mean(dim=0))
    elif cfg.init_b_pre == "geometric_median":
        sae.b_pre.copy_(geometric_median(normalized))
    sae.normalize_decoder_()
    log.info(
        "input scale %.4g fitted on %d rows; b_pre initialised as %s", scale, sample.shape[0], cfg.init_b_pre
    )


def _train_step(sae, optimizer, batch, cfg, progress: _Progress, factor: float, k_aux: int) -> None:
    x = batch.to(sae.b_pre.device, sae.b_pre.dtype, non_blocking=True)
    target = sae.normalize_input(x)
    dead = progress.rows_since_fired >= cfg.dead_window if cfg.auxk_alpha > 0 else None
    aux_mask = dead.to(x.device) if dead is not None and bool(dead.any()) else None
    values, indices, aux_values, aux_indices = sae.encode_topk_aux(x, aux_mask, k_aux)
    x_hat = sae.decode_topk(values, indices)
    loss = reconstruction_loss(cfg.loss, target, x_hat)
    total = loss
    if aux_mask is not None:
        residual = (target - x_hat).detach()
        total = total + cfg.auxk_alpha * auxk_loss(
            residual, sae.decode_topk(aux_values, aux_indices, add_b_pre=False)
        )
    total.backward()
    if cfg.remove_parallel_grad:
        sae.remove_parallel_grad_()
    for group in optimizer.param_groups:
        group["lr"] = cfg.lr * factor
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    progress.step += 1
    progress.samples += x.shape[0]
    if cfg.normalize_decoder_every and progress.step % cfg.normalize_decoder_every == 0:
        sae.normalize_decoder_()
    with torch.no_grad():
        fired = torch.zeros(sae.latents, dtype=torch.bool, device=indices.device)
        active = values != 0  # negative latents are active too when relu is off
        fired[indices[active]] = True  # a scatter: 0.1 ms vs 3 ms for unique() (benchmarks/README.md)
        progress.rows_since_fired += x.shape[0]
        progress.rows_since_fired.masked_fill_(
            fired.cpu(), 0
        )  # the counters stay on the CPU, like the checkpoint
        stats = torch.stack(
            [
                loss.detach(),
                (target - x_hat).pow(2).sum(),
                (target - target.mean(dim=0)).pow(2).sum(),
                active.sum(dim=-1).float().mean(),
            ]
        ).tolist()  # one device sync per step
        interval = progress.interval
        interval["steps"] += 1
        for key, value in zip(("loss", "err", "var", "l0"), stats, strict=True):
            interval[key] += value
        interval["lr"] = cfg.lr * factor


def _log_interval(progress: _Progress, cfg: SAETrainConfig, log) -> None:
    interval = progress.interval
    if not interval["steps"]:
        return
    row = {
        "step": progress.step,
        "samples": progress.samples,
        "lr": interval["lr"],
        "loss": interval["loss"] / interval["steps"],
        "fvu": interval["err"] / max(interval["var"], 1e-30),
        "l0": interval["l0"] / interval["steps"],
        "dead_fraction": (progress.rows_since_fired >= cfg.dead_window).float().mean().item(),
    }
    progress.history.append(row)
    progress.interval = dict.fromkeys(("steps", "loss", "err", "var", "l0"), 0.0)
    log.debug("step %(step)d loss %(loss).5g fvu %(fvu).4f l0 %(l0).1f dead %(dead_fraction).3f", row)


@torch.no_grad()
def _final_metrics(sae, reader, eval_reader, cfg, progress: _Progress) -> dict:
    batches = (
        iter(eval_reader) if eval_reader is not None else reader.sample(cfg.eval_rows).split(cfg.batch_size)
    )
    rows, err, sum_x, sum_sq, l0 = 0, 0.0, 0.0, 0.0, 0.0
    fired = torch.zeros(sae.latents, dtype=torch.bool)
    for batch in batches:
        batch = batch.to(sae.b_pre.device)
        target = sae.normalize_input(batch)
        values, indices = sae.encode_topk(batch)
        err += (target - sae.decode_topk(values, indices)).pow(2).sum().item()
        sum_x = sum_x + target.sum(dim=0)
        sum_sq += target.pow(2).sum().item()
        active = values != 0
        l0 += active.sum().item()
        fired[indices[active].cpu()] = True
        rows += batch.shape[0]
    variance = sum_sq - (sum_x.pow(2).sum() / rows).item()
    fvu = err / variance
    return {
        "eval_split": "heldout" if eval_reader is not None else "train",
        "fvu": fvu,
        "explained_variance": 1 - fvu,
        "l0": l0 / rows,
        "dead_fraction": 1 - fired.float().mean().item(),
        "eval_rows": rows,
        "train_fvu": progress.history[-1]["fvu"] if progress.history else float("nan"),
        "train_dead_fraction": (progress.rows_since_fired >= cfg.dead_window).float().mean().item(),
        "final_loss": progress.history[-1]["loss"] if progress.history else float("nan"),
        "steps": progress.step,
        "samples": progress.samples,
        "seconds": progress.seconds,
        "samples_per_second": progress.samples / max(progress.seconds, 1e-9),
        "input_scale": sae.input_scale.item(),
    }


def _config_dict(cfg: SAETrainConfig) -> dict:
    values = asdict(cfg)
    values["betas"] = list(values["betas"])
    return values


def _save_checkpoint(path: Path, sae, optimizer, reader, progress: _Progress, cfg) -> None:
    state = {
        "config": _config_dict(cfg),
        "model": {name: tensor.cpu() for name, tensor in sae.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "reader": reader.state_dict(),
        "progress": asdict(progress),
        "torch_rng": torch.get_rng_state(),
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    write_csv_atomic(progress.history, path.parent / "loss.csv", CSV_COLUMNS)


def _load_checkpoint(path: Path, sae, optimizer, reader, progress: _Progress, cfg) -> None:
    state = torch.load(path, weights_only=False, map_location="cpu")
    check_resumable(state["config"], _config_dict(cfg), path, may_change=RESUMABLE_CHANGES)
    sae.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    reader.load_state_dict(state["reader"], where=path)
    for key, value in state["progress"].items():
        setattr(progress, key, value)
    torch.set_rng_state(state["torch_rng"])


def _write_outputs(out_dir: Path, progress: _Progress, metrics: dict) -> None:
    write_text_atomic(json.dumps(metrics, indent=2) + "\n", out_dir / "metrics.json")
    write_csv_atomic(progress.history, out_dir / "loss.csv", CSV_COLUMNS)
    _plot_losses(out_dir / "loss.png", progress.history, metrics)


def _plot_losses(path: Path, history: list[dict], metrics: dict | None = None) -> None:
    """Training curves; the final FVU, L0 and dead fraction of the evaluation rows (metrics.json's
    `eval_split`: held-out rows by default) as dashed lines."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 3))
    FigureCanvasAgg(figure)
    steps = [row["step"] for row in history]
    for axis, key, title in zip(
        figure.subplots(1, 4),
        ("loss", "fvu", "l0", "dead_fraction"),
        ("training loss", "FVU", "L0", "dead latents"),
        strict=True,
    ):
        axis.plot(steps, [row[key] for row in history], label="training batches")
        if metrics is not None and key in ("fvu", "l0", "dead_fraction"):
            label = f"{metrics['eval_split']} rows, final: {metrics[key]:.3g}"
            axis.axhline(metrics[key], color="tab:red", linestyle="--", linewidth=1, label=label)
            axis.legend(fontsize=7)
        axis.set_title(title)
        axis.set_xlabel("step")
        if key == "loss" and history and min(row["loss"] for row in history) > 0:
            axis.set_yscale("log")
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
