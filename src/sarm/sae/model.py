"""The TopK sparse autoencoder of SARM (paper §3.1; Gao et al. 2024, "Scaling and evaluating sparse autoencoders").

    x' = normalize(x)                                  activations normalised: E||x'||^2 = d (paper)
    z  = ReLU(TopK(W_enc (x' - b_pre) + b_enc))        (paper eq. 1; ReLU optional, upstream has none)
    x^ = W_dec z + b_pre                               (paper eq. 2)
    L  = ||x' - x^||^2                                 (paper eq. 3; training loop in sarm.sae.train)

`W_dec` is stored as (n_latents, d_model): row i is the paper's column i (the direction of latent i), so the
sparse decode gathers k contiguous rows (12 ms vs 431 ms for strided columns at the demo's d=576, M=9216,
k=27, batch 4096; benchmarks/README.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from sarm.runtime import atomic_write

WEIGHTS_FILE = "sae.safetensors"
CONFIG_FILE = "sae.json"
FORMAT_VERSION = 1
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


def _sparse_transpose_matmul(indices: torch.Tensor, grad: torch.Tensor, x: torch.Tensor, n_latents: int):
    """G^T x for the (N, M) matrix G that holds `grad` at `indices` (duplicates add up)."""
    n, width = indices.shape
    if x.device.type != "cpu":  # cuSPARSE dtype support varies; a dense matmul is fast on accelerators anyway
        dense = grad.new_zeros(n, n_latents).scatter_add_(1, indices, grad)
        return dense.T @ x
    rows = torch.arange(n, device=x.device).repeat_interleave(width)
    coo = torch.sparse_coo_tensor(
        torch.stack([indices.flatten(), rows]), grad.flatten(), (n_latents, n), check_invariants=False
    )
    return torch.sparse.mm(coo, x)


class TopKSAE(nn.Module):
    """TopK SAE: `encode` gives the sparse code z, `decode` the reconstruction in normalised space."""

    def __init__(
        self,
        d_model: int,
        n_latents: int,
        k: int,
        *,
        relu: bool = True,
        standardize_input: bool = False,
        seed: int | None = None,
    ):
        super().__init__()
        for name, value in (("d_model", d_model), ("n_latents", n_latents), ("k", k)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TopKSAE: `{name}` must be a positive integer, got {value!r}")
        if k > n_latents:
            raise ValueError(f"TopKSAE: `k` ({k}) must not exceed `n_latents` ({n_latents})")
        self.d_model, self.n_latents, self.k = d_model, n_latents, k
        self.relu, self.standardize_input = relu, standardize_input
        # A run-time choice, not saved: torch.bfloat16 runs the encoder GEMM (most of the cost) on bf16 units
        # (AMX on recent Xeons, tensor cores on GPUs); benchmarks/README.md measures the gain and the FVU.
        self.gemm_dtype: torch.dtype | None = None
        self.b_pre = nn.Parameter(torch.zeros(d_model))
        self.encoder = nn.Linear(d_model, n_latents)
        self.W_dec = nn.Parameter(torch.empty(n_latents, d_model))
        self.register_buffer("input_scale", torch.ones(()))
        self.reset_parameters(seed)

    @torch.no_grad()
    def reset_parameters(self, seed: int | None = None) -> None:
        """Random unit-norm decoder directions, encoder initialised to the decoder's transpose (Gao et al.)."""
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        directions = torch.randn(self.n_latents, self.d_model, generator=generator)
        self.W_dec.copy_(directions / directions.norm(dim=1, keepdim=True))
        self.encoder.weight.copy_(self.W_dec)
        self.encoder.bias.zero_()
        self.b_pre.zero_()

    def normalize_input(self, x: torch.Tensor) -> torch.Tensor:
        """Per-token standardisation (upstream) or the fitted global scale (paper), then `input_scale`."""
        x = x.to(self.b_pre.dtype)
        if self.standardize_input:
            x = (x - x.mean(dim=-1, keepdim=True)) / (x.std(dim=-1, keepdim=True) + STANDARDIZE_EPS)
        return x * self.input_scale

    @torch.no_grad()
    def fit_input_scale_(self, sample: torch.Tensor) -> float:
        """Set `input_scale` so that E||normalize_input(x)||^2 = d_model on this sample of raw activations."""
        self.input_scale.fill_(1.0)
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
        if self.relu:
            outputs = (outputs[0].relu(), outputs[1], outputs[2].relu(), outputs[3])
        lead = centered.shape[:-1]
        return tuple(t.reshape(*lead, t.shape[-1]) for t in outputs)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dense code z (…, M) of raw x with only the TopK entries non-zero."""
        values, indices = self.encode_topk(x)
        return values.new_zeros(*values.shape[:-1], self.n_latents).scatter(-1, indices, values)

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
        z = values.new_zeros(*values.shape[:-1], self.n_latents).scatter(-1, indices, values)
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
            "n_latents": self.n_latents,
            "k": self.k,
            "relu": self.relu,
            "standardize_input": self.standardize_input,
            "decoder_layout": "W_dec is (n_latents, d_model): row i is the decoder direction of latent i",
        }

    def save(self, directory: str | Path, info: dict | None = None) -> Path:
        """Write sae.safetensors and sae.json (shape, switches, and free-form `info`) into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {name: t.detach().contiguous().cpu() for name, t in self.state_dict().items()}
        _atomic(directory / WEIGHTS_FILE, lambda tmp: save_file(tensors, tmp))
        text = json.dumps({**self.config(), "info": info or {}}, indent=2, sort_keys=True) + "\n"
        _atomic(directory / CONFIG_FILE, lambda tmp: Path(tmp).write_text(text))
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
        missing = [
            key for key in ("d_model", "n_latents", "k", "relu", "standardize_input") if key not in config
        ]
        if missing:
            raise ValueError(f"{config_path}: missing key(s) {', '.join(missing)}")
        if config.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{config_path}: format_version {config.get('format_version')!r}, expected {FORMAT_VERSION}"
            )
        sae = cls(
            config["d_model"],
            config["n_latents"],
            config["k"],
            relu=config["relu"],
            standardize_input=config["standardize_input"],
        )
        try:
            sae.load_state_dict(load_file(weights_path))
        except RuntimeError as err:
            raise ValueError(f"{weights_path} does not match {config_path}: {err}") from err
        return sae.to(device)


def _atomic(path: Path, write) -> None:
    atomic_write(path, lambda tmp: write(str(tmp)))
