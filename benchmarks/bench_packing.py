"""Seconds of one backbone pass over the demo's RewardBench 2 completions and preference pairs, each
conversation alone against shared-prompt packing (`sarm.packing`), side by side in one process, with the
largest difference between the two passes' states.

The pass is the demo's `cache_states` pass: SmolLM2-135M-Instruct through all 30 layers, final-token states
at the read layers, every token's state at layer 14; max_length 256, batch_tokens 4096. The two ways
alternate `--repeats` times and the best of each is kept.

    .venv/bin/python benchmarks/bench_packing.py --conversations 600 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
import yaml

from sarm.backbone import convert_gguf, cpu_flags, load_decoder, load_tokenizer
from sarm.data.chat import DEFAULT_DATE_STRING, tokenize_conversations
from sarm.rm.final_states import dataset_conversations, iter_final_token_states, prompt_keys, prompt_order

REPO = Path(__file__).parents[1]
RESULTS = Path(__file__).parent / "results" / "packing.json"
LAYERS, TOKEN_LAYERS = [8, 11, 15, 22, 30], [14]


def run(decoder, token_ids, keys, batch_tokens, pad_id):
    start = time.perf_counter()
    finals, tokens = {}, {}
    for batch, by_layer, by_token_layer in iter_final_token_states(
        decoder, token_ids, LAYERS, batch_tokens, pad_id, TOKEN_LAYERS, keys
    ):
        for row, index in enumerate(batch):
            finals[index] = torch.stack([by_layer[layer][row] for layer in LAYERS])
            tokens[index] = by_token_layer[TOKEN_LAYERS[0]][row]
    return time.perf_counter() - start, finals, tokens


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--conversations", type=int, default=600, help="first N of each dataset (prompt order)"
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--backbone", default="results/backbones/smollm2-135m", help="HF folder (made if missing)"
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    config = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    backbone = Path(args.backbone)
    if not backbone.exists():
        convert_gguf(config["backbones"]["smollm2-135m"]["source"], backbone)
    tokenizer, decoder = load_tokenizer(str(backbone)), load_decoder(str(backbone), max(LAYERS))
    rm = config["reward_model"]
    results = []
    for dataset in ["rewardbench2", "preferences"]:
        conversations = dataset_conversations(dataset, dict(config["data"][dataset]))
        keys = prompt_keys(conversations)
        order = prompt_order(keys)[: args.conversations]
        chosen = [conversations[i] for i in order]
        token_ids = tokenize_conversations(
            tokenizer, chosen, rm["max_length"], rm.get("date_string", DEFAULT_DATE_STRING)
        )
        chosen_keys = [keys[i] for i in order]
        best = {"alone": float("inf"), "packed": float("inf")}
        for _ in range(args.repeats):
            alone_s, alone_finals, alone_tokens = run(
                decoder, token_ids, None, rm["batch_tokens"], tokenizer.pad_token_id
            )
            packed_s, packed_finals, packed_tokens = run(
                decoder, token_ids, chosen_keys, rm["batch_tokens"], tokenizer.pad_token_id
            )
            best = {"alone": min(best["alone"], alone_s), "packed": min(best["packed"], packed_s)}
        final_diff = max((alone_finals[i] - packed_finals[i]).abs().max().item() for i in alone_finals)
        token_diff = max((alone_tokens[i] - packed_tokens[i]).abs().max().item() for i in alone_tokens)
        scale = max(alone_finals[i].abs().max().item() for i in alone_finals)
        row = {
            "dataset": dataset,
            "conversations": len(token_ids),
            "prompts": len(set(chosen_keys)),
            "tokens": sum(map(len, token_ids)),
            "seconds_alone": round(best["alone"], 2),
            "seconds_packed": round(best["packed"], 2),
            "speedup": round(best["alone"] / best["packed"], 2),
            "max_abs_diff_final_states": final_diff,
            "max_abs_diff_token_states_layer14": token_diff,
            "max_abs_final_state": scale,
        }
        print(json.dumps(row))
        results.append(row)
    RESULTS.write_text(
        json.dumps(
            {
                "command": "benchmarks/bench_packing.py "
                + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
                "cpu": platform.processor() or platform.machine(),
                "cpu_flags": sorted(cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}),
                "threads": 2,
                "torch": torch.__version__,
                "load_average_after": os.getloadavg(),
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
