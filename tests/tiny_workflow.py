"""A working directory that runs the real workflow on the tiny Llama and a slice of the demo data."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import torch
import yaml

from sarm.backbone import load_tokenizer
from sarm.data.chat import tokenize_conversations
from sarm.rm.models import load_reward_model

from .conftest import REPO, snakemake_command

OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def tiny_config(backbone: Path) -> dict:
    demo = REPO / "resources" / "demo"
    return {
        "backbones": {"tiny": {"source": str(backbone), "num_layers": 4, "hidden_size": 32}},
        "data": {
            "corpus": {
                "source": str(demo / "corpus.jsonl.gz"),
                "sentences": 300,
                "min_tokens": 4,
                "max_tokens": 48,
            },
            "preferences": {"source": str(demo / "preference_train.jsonl"), "limit": 96},
            "rewardbench2": {"source": str(demo / "rewardbench2.jsonl")},
            "rmbench": {"source": str(demo / "rmbench.jsonl")},  # steering needs its safety domains
        },
        # Layer 2's sequence and token levels from one pass per part (sample_activations_levels, as the
        # demo), layer 1's sequence level alone (sample_activations, as the paper's layout).
        "sampling": {"parts": 2, "batch_tokens": 1024, "shard_rows": 64, "share_levels": True},
        "sae": {
            "latents": "4x",
            "k": 4,
            "batch_size": 32,
            "epochs": 2,
            "shuffle_buffer": 256,
            "checkpoint_every": 5,
            "heldout_rows": 32,
        },
        # As the demo: Tables 1 and 2 train their top layer (from per-token states cached at layer l-1),
        # Table 3's sweeps their head only (tables.table3.reward_model).
        "reward_model": {
            "train_backbone": True,
            "train_layers": 1,
            "epochs": 2,
            "global_batch": 32,
            "micro_batch": 16,
            "lr": 0.001,
            "max_length": 96,
            "batch_tokens": 2048,
            "checkpoint_every": 5,
        },
        "experiments": {
            "SARM": {
                "backbone": "tiny",
                "layer": 0.5,
                "reported_as": "SARM-2B (Llama-3.2-3B-Instruct layer 14)",
            },
            "random": {
                "backbone": "tiny",
                "layer": 0.5,
                "encoder": "random",
                "reported_as": "SAE encoder with random init",
            },
            "token": {
                "backbone": "tiny",
                "layer": 0.5,
                "level": "token",
                "reported_as": "Token-level SAE pretraining",
            },
        },
        "tables": {
            "table1": {
                "experiments": ["SARM"],
                "vanilla": [{"backbone": "tiny", "layer": 2}, {"backbone": "tiny", "layer": 1.0}],
            },
            "table2": {"experiments": ["random", "token", {"experiment": "SARM", "reported_as": "SARM-4B"}]},
            # One sweep with a second value: the runs a second latents or k value adds would run the code
            # the base SARM runs (tests/report/test_plots.py draws every kind of sweep with two values).
            "table3": {
                "base": "SARM",
                "layer": [1, 2],
                "latents": ["4x"],
                "k": [4],
                "reward_model": {"train_backbone": False},
            },
            "comparisons": [{"name": "SARM vs vanilla", "a": "SARM", "b": {"backbone": "tiny", "layer": 2}}],
            "bootstrap": {"resamples": 200},
        },
        "interpret": {
            "experiment": "SARM",
            "top_contexts": 4,
            "max_features": 3,
            "detection_contexts": 4,
            "cards": 2,
            "explainer": {"kind": "local", "model": "tiny"},
        },
        "steering": {"experiment": "SARM", "scale": 10.0},
        # The tests compare rewards scored from cached states with those of the loaded model in fp32; `auto`
        # would pick bf16 on a CPU with native bf16 units and its rounding flips TopK selections (33 of
        # 1,436 RewardBench 2 rewards on an AVX512_BF16 machine).
        "inference_dtype": "float32",
    }


def make_workdir(root: Path, backbone: Path, config: dict | None = None) -> Path:
    """`root` with the repo's config/ and resources/ linked in and tiny.yaml written; returns tiny.yaml."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("config", "resources"):
        link = root / name
        if not link.exists():
            link.symlink_to(REPO / name)
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(config or tiny_config(backbone), sort_keys=False))
    return path


def workflow_args(workdir: Path, config_path: Path) -> list[str]:
    return [
        "--snakefile",
        str(REPO / "workflow" / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(config_path),
        "--replace-workflow-config",
    ]


def snakemake(workdir, config_path, *args, timeout=900):
    command = snakemake_command(*workflow_args(workdir, config_path), "--cores", "2", *args)
    result = subprocess.run(command, capture_output=True, text=True, env=OFFLINE, timeout=timeout)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result.stdout + result.stderr


def rewards_one_by_one(model_dir, backbone, prompts) -> list[float]:
    """Each completion's reward from `load_reward_model`, one unpadded conversation at a time."""
    model = load_reward_model(model_dir, device="cpu", dtype=torch.float32)
    tokenizer = load_tokenizer(str(backbone))
    settings = tiny_config(backbone)["reward_model"]
    rewards = []
    with torch.no_grad():
        for prompt in prompts:
            for index in range(len(prompt.completions)):
                (ids,) = tokenize_conversations(
                    tokenizer, [prompt.conversation(index)], settings["max_length"]
                )
                input_ids = torch.tensor([ids])
                rewards.append(model(input_ids, torch.ones_like(input_ids)).item())
    return rewards
