"""How the demo's `reward_model.lr` for top-layer training was chosen: on held-out preference pairs, not on
RewardBench 2. SmolLM2-135M-Instruct, the demo's 1,200 preference pairs, 10% held out (`heldout_split`, seed
0), read layer 15 (`train_layers: 1`, per-token states cached at layer 14 as float16), 2 epochs, global batch
64, micro-batch 16; a SARM on the demo's layer-15 sequence-level SAE and a vanilla RM, for each lr.

    .venv/bin/python benchmarks/choose_top_layer_lr.py --backbone results/backbones/smollm2-135m \
        --sae results/smollm2-135m/layer15/sequence/sae_m9216_k27 --lr 3e-4 1e-3 3e-3
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
from pathlib import Path

import torch

from sarm.backbone import load_decoder, load_tokenizer
from sarm.rm.bradley_terry import BTTrainConfig, train_reward_model
from sarm.rm.final_states import dataset_conversations, final_token_states
from sarm.rm.launch import heldout_split
from sarm.rm.models import build_sarm, build_vanilla_rm
from sarm.rm.pairs import TokenStatePairs
from sarm.rm.token_states import load_token_states
from sarm.sae.model import TopKSAE

PREFERENCES = Path(__file__).parents[1] / "resources" / "demo" / "preference_train.jsonl"
RESULTS = Path(__file__).parent / "results" / "top_layer_lr.json"
LAYER, START = 15, 14


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", required=True, help="the converted SmolLM2 folder of a demo run")
    parser.add_argument("--sae", required=True, help="the demo's layer-15 sequence-level SAE folder")
    parser.add_argument("--lr", type=float, nargs="+", default=[3e-4, 1e-3, 3e-3])
    parser.add_argument("--work-dir", type=Path, help="where the cache and models go (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(2)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="top_layer_lr_"))
    cache = work / "preferences.safetensors"
    if not cache.exists():
        conversations = dataset_conversations("preferences", {"source": str(PREFERENCES), "limit": 1200})
        final_token_states(
            load_decoder(args.backbone, START),
            load_tokenizer(args.backbone),
            conversations,
            [],
            4096,
            cache,
            max_length=256,
            token_layers=[START],
            token_dtype="float16",
        )
    pairs = TokenStatePairs.from_states(load_token_states(cache, START))
    train, heldout = heldout_split(len(pairs), 0.1, 0)
    runs = []
    for lr in args.lr:
        for kind in ("sarm", "vanilla"):
            if kind == "sarm":
                model = build_sarm(args.backbone, LAYER, TopKSAE.load(args.sae))
            else:
                model = build_vanilla_rm(args.backbone, LAYER)
            cfg = BTTrainConfig(
                train_layers=1, epochs=2, global_batch=64, micro_batch=16, lr=lr, max_length=256
            )
            out = work / f"{kind}_lr{lr:g}"
            train_reward_model(model, pairs.subset(train), cfg, out, heldout=pairs.subset(heldout))
            last = [row for row in csv.DictReader((out / "train_log.csv").open()) if row["heldout_accuracy"]][
                -1
            ]
            runs.append(
                {
                    "model": kind,
                    "lr": lr,
                    "heldout_accuracy": round(float(last["heldout_accuracy"]), 4),
                    "heldout_loss": round(float(last["heldout_loss"]), 4),
                }
            )
            print(json.dumps(runs[-1]), flush=True)
    result = {"pairs": len(pairs), "heldout_pairs": len(heldout), "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
