"""The TopK sparse autoencoder of SARM (paper §3.1; Gao et al. 2024, "Scaling and evaluating sparse autoencoders").

    x' = normalize(x)                                  normalised "as recommended in Gao et al." (below)
    z  = ReLU(TopK(W_enc (x' - b_pre) + b_enc))        (paper eq. 1; ReLU optional, upstream has none)
    x^ = W_dec z + b_pre                               (paper eq. 2)
    L  = ||x' - x^||^2                                 (paper eq. 3; training loop in sarm.sae.train)

Input normalisation: the paper normalises activations "as recommended in Gao et al."; Gao et al.'s reference
code and the authors' code standardise each token over d_model, x' = (x - mean(x)) / (std(x) + 1e-6), so that
is the default (`standardize_input=True`). `standardize_input=False` instead fits one global scale on the
training activations so that E||x'||^2 = d (Gao et al.'s paper text; an earlier default here). SARM feeds its
final-token states through the same `normalize_input`, so the encoder always sees what it was trained on.

`W_dec` is stored as (latents, d_model): row i is the paper's column i (the direction of latent i), so the
sparse decode gathers k contiguous rows (12 ms vs 431 ms for strided columns at the demo's d=576, M=9216,
k=27, batch 4096; benchmarks/README.md).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from sarm.runtime import atomic_write, write_json_atomic

WEIGHTS_FILE = "sae.safetensors"
CONFIG_FILE = "sae.json"
FORMAT_VERSION = 2  # 2: the width is saved as `latents` (1: `n_latents`)
STANDARDIZE_EPS = 1e-6  # upstream schrieffer-z/sae: (x - mean) / (std + 1e-6)


class _SparseTopKLinear(torch.autograd.Function):
    """Top-k of x W^T + b (and optionally top-k_aux among `aux_mask` latents) with a sparse backward.

    Only the selected entries receive gradient, so the backward costs O(N k d) instead of O(N M d).
    With `gemm_dtype` (e.g. bf16) the forward GEMM runs in that precision; gradients use the full weights.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, k: int, aux_mask: torch.Tensor | None, k_aux: int, gemm_dtype):
        if gemm_dtype is not None and gemm_dtype != x.dtype:
            pre = F.linear(x.to(gemm_dtype), weight.to(gemm_dtype), bias.to(gemm_dtype))
        else:
            pre = F.linear(x, weight, bias)
        values, indices = pre.topk(k, dim=-1, sorted=False)
        if aux_mask is not None and k_aux > 0:
            aux_values, aux_indices = pre.masked_fill_(~aux_mask, float("-inf")).topk(
                k_aux, dim=-1, sorted=False
            )
        else:
            aux_values, aux_indices = values.new_zeros(x.shape[0], 0), indices.new_zeros(x.shape[0], 0)
        ctx.save_for_backward(x, weight, torch.cat([indices, aux_indices], dim=-1))
        ctx.mark_non_differentiable(indices, aux_indices)
        return values.to(x.dtype), indices, aux_values.to(x.dtype), aux_indices

    @staticmethod
    def backward(ctx, grad_values, _grad_indices, grad_aux_values, _grad_aux_indices):
        x, weight, indices = ctx.saved_tensors
        grad = torch.cat([grad_values, grad_aux_values], dim=-1)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = F.embedding_bag(indices, weight, per_sample_weights=grad.to(weight.dtype), mode="sum")
        if ctx.needs_input_grad[1]:
            grad_weight = _sparse_transpose_matmul(indices, grad, x, weight.shape[0])
        if ctx.needs_input_grad[2]:
            grad_bias = grad.new_zeros(weight.shape[0]).index_add_(0, indices.flatten(), grad.flatten())
        return grad_x, grad_weight, grad_bias, None, None, None, None


def _sparse_transpose_matmul(indices: torch.Tensor, grad: torch.Tensor, x: torch.Tensor, latents: int):
    """G^T x for the (N, M) matrix G that holds `grad` at `indices` (duplicates add up)."""
    n, width = indices.shape
    if x.device.type != "cpu":  # cuSPARSE dtype support varies; a dense matmul is fast on accelerators anyway
        dense = grad.new_zeros(n, latents).scatter_add_(1, indices, grad)
        return dense.T @ x
    rows = torch.arange(n, device=x.device).repeat_interleave(width)
    coo = torch.sparse_coo_tensor(
        torch.stack([indices.flatten(), rows]), grad.flatten(), (latents, n), check_invariants=False
    )
    return torch.sparse.mm(coo, x)


@dataclass(frozen=True)
class SAEConfig:
    """What defines a TopK SAE besides its input width; saved beside its weights in sae.json."""

    latents: int
    """M, the number of latents (the SAE width); the paper uses 16 d."""
    k: int
    """Latents kept per input by TopK; the paper uses 3/64 d."""
    relu: bool = True
    """ReLU after TopK (paper); False keeps negative selected values, as the authors' code does."""
    standardize_input: bool = True
    """Standardise each input over d_model (the paper's "as Gao et al.", and the authors' code); False fits
    one global scale so that E||x'||^2 = d instead."""

    def __post_init__(self):
        for name in ("latents", "k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TopKSAE: `{name}` must be a positive integer, got {value!r}")
        if self.k > self.latents:
            raise ValueError(f"TopKSAE: `k` ({self.k}) must not exceed `latents` ({self.latents})")


class TopKSAE(nn.Module):
    """TopK SAE: `encode` gives the sparse code z, `decode` the reconstruction in normalised space."""

    def __init__(self, d_model: int, cfg: SAEConfig, *, seed: int | None = None):
        super().__init__()
        if isinstance(d_model, bool) or not isinstance(d_model, int) or d_model < 1:
            raise ValueError(f"TopKSAE: `d_model` must be a positive integer, got {d_model!r}")
        self.d_model, self.cfg = d_model, cfg
        # A run-time choice, not saved: torch.bfloat16 runs the encoder GEMM (most of the cost) on bf16 units
        # (AMX on recent Xeons, tensor cores on GPUs); benchmarks/README.md measures the gain and the FVU.
        self.gemm_dtype: torch.dtype | None = None
        self.b_pre = nn.Parameter(torch.zeros(d_model))
        self.encoder = nn.Linear(d_model, cfg.latents)
        self.W_dec = nn.Parameter(torch.empty(cfg.latents, d_model))
        self.register_buffer("input_scale", torch.ones(()))
        self.reset_parameters(seed)

    @property
    def latents(self) -> int:
        return self.cfg.latents

    @property
    def k(self) -> int:
        return self.cfg.k

    @torch.no_grad()
    def reset_parameters(self, seed: int | None = None) -> None:
        """Random unit-norm decoder directions, encoder initialised to the decoder's transpose (Gao et al.)."""
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        directions = torch.randn(self.latents, self.d_model, generator=generator)
        self.W_dec.copy_(directions / directions.norm(dim=1, keepdim=True))
        self.encoder.weight.copy_(self.W_dec)
        self.encoder.bias.zero_()
        self.b_pre.zero_()

    def normalize_input(self, x: torch.Tensor) -> torch.Tensor:
        """Per-token standardisation (default: paper / Gao et al. / upstream), or the fitted global scale."""
        x = x.to(self.b_pre.dtype)
        if self.cfg.standardize_input:
            x = (x - x.mean(dim=-1, keepdim=True)) / (x.std(dim=-1, keepdim=True) + STANDARDIZE_EPS)
        return x * self.input_scale

    @torch.no_grad()
    def fit_input_scale_(self, sample: torch.Tensor) -> float:
        """Set `input_scale` so that E||normalize_input(x)||^2 = d_model on this sample of raw activations.

        With per-token standardisation the scale stays 1, as in the authors' code (each row already has
        unit standard deviation, ||x'||^2 = d - 1).
        """
        self.input_scale.fill_(1.0)
        if self.cfg.standardize_input:
            return 1.0
        mean_sq_norm = self.normalize_input(sample).pow(2).sum(dim=-1).mean()
        if not torch.isfinite(mean_sq_norm) or mean_sq_norm <= 0:
            raise ValueError(
                f"cannot fit the SAE input scale: mean squared norm of the sample is {mean_sq_norm}"
            )
        self.input_scale.fill_((self.d_model / mean_sq_norm).sqrt().item())
        return self.input_scale.item()

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """W_enc (x' - b_pre) + b_enc for raw residual-stream activations x (…, d) -> (…, M)."""
        return self.encoder(self.normalize_input(x) - self.b_pre)

    def encode_topk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The k selected latents of raw x as (values, indices), each (…, k)."""
        values, indices, _, _ = self.encode_topk_aux(x, None, 0)
        return values, indices

    def encode_topk_aux(
        self, x: torch.Tensor, aux_mask: torch.Tensor | None, k_aux: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """`encode_topk` plus the top-`k_aux` latents among `aux_mask` (dead latents, for the AuxK loss)."""
        centered = self.normalize_input(x) - self.b_pre
        flat = centered.reshape(-1, self.d_model)
        k_aux = min(k_aux, int(aux_mask.sum())) if aux_mask is not None else 0
        outputs = _SparseTopKLinear.apply(
            flat, self.encoder.weight, self.encoder.bias, self.k, aux_mask, k_aux, self.gemm_dtype
        )
        if self.cfg.relu:
            outputs = (outputs[0].relu(), outputs[1], outputs[2].relu(), outputs[3])
        lead = centered.shape[:-1]
        return tuple(t.reshape(*lead, t.shape[-1]) for t in outputs)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dense code z (…, M) of raw x with only the TopK entries non-zero."""
        values, indices = self.encode_topk(x)
        return values.new_zeros(*values.shape[:-1], self.latents).scatter(-1, indices, values)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """x^ = W_dec z + b_pre from a dense code (normalised space)."""
        return z @ self.W_dec + self.b_pre

    def decode_topk(
        self, values: torch.Tensor, indices: torch.Tensor, *, add_b_pre: bool = True
    ) -> torch.Tensor:
        """`decode` reading only the k selected decoder rows (equal to decode of the dense z)."""
        lead = values.shape[:-1]
        flat = F.embedding_bag(
            indices.reshape(-1, indices.shape[-1]),
            self.W_dec,
            per_sample_weights=values.reshape(-1, values.shape[-1]).to(self.W_dec.dtype),
            mode="sum",
        )
        flat = flat.reshape(*lead, self.d_model)
        return flat + self.b_pre if add_b_pre else flat

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x^, z) for raw x; x^ is in normalised space, compare it with `normalize_input(x)`."""
        values, indices = self.encode_topk(x)
        z = values.new_zeros(*values.shape[:-1], self.latents).scatter(-1, indices, values)
        return self.decode_topk(values, indices), z

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Rescale every decoder direction (the paper's columns of W_dec) to unit length."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(torch.finfo(self.W_dec.dtype).tiny))

    @torch.no_grad()
    def remove_parallel_grad_(self) -> None:
        """Drop the gradient component along each decoder direction, so a step keeps its norm (Gao et al.)."""
        if self.W_dec.grad is None:
            return
        unit = self.W_dec / self.W_dec.norm(dim=1, keepdim=True).clamp_min(torch.finfo(self.W_dec.dtype).tiny)
        self.W_dec.grad.sub_((self.W_dec.grad * unit).sum(dim=1, keepdim=True) * unit)

    def config(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "d_model": self.d_model,
            **asdict(self.cfg),
            "decoder_layout": "W_dec is (latents, d_model): row i is the decoder direction of latent i",
        }

    def save(self, directory: str | Path, info: dict | None = None) -> Path:
        """Write sae.safetensors and sae.json (shape, switches, and free-form `info`) into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {name: t.detach().contiguous().cpu() for name, t in self.state_dict().items()}
        atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(tensors, tmp))
        write_json_atomic({**self.config(), "info": info or {}}, directory / CONFIG_FILE)
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu") -> TopKSAE:
        """The SAE saved by `save` in `directory`."""
        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        for path in (config_path, weights_path):
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path} is missing: is {directory} a folder written by TopKSAE.save?"
                )
        config = json.loads(config_path.read_text())
        if config.get("format_version") == 1:
            config["latents"] = config.pop("n_latents", None)
        elif config.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{config_path}: format_version {config.get('format_version')!r}, expected {FORMAT_VERSION}"
            )
        missing = [
            key for key in ("d_model", "latents", "k", "relu", "standardize_input") if key not in config
        ]
        if missing:
            raise ValueError(f"{config_path}: missing key(s) {', '.join(missing)}")
        fields = ("latents", "k", "relu", "standardize_input")
        sae = cls(config["d_model"], SAEConfig(**{name: config[name] for name in fields}))
        try:
            sae.load_state_dict(load_file(weights_path))
        except RuntimeError as err:
            raise ValueError(f"{weights_path} does not match {config_path}: {err}") from err
        return sae.to(device)
