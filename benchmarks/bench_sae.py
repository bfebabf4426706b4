"""TopK SAE training: samples/s and held-out FVU of sarm.sae vs eai-sparsify and sae-lens, on the same cached
SmolLM2 activations, with the same d, M, k, batch, optimiser (fused Adam, lr 5e-4), threads and sample order.

Each library keeps its own loss and decoder-norm handling (ours: paper MSE, renormalise every 10 steps;
sparsify: FVU loss, parallel-gradient removal and renormalisation every step; sae-lens: MSE with
rescale_acts_by_decoder_norm). A library that is not importable is skipped with a message. The competitors
pin other packages than the workflow, so run this in a separate venv that also has them (benchmarks/README.md):

    PYTHONPATH=src /tmp/benchvenv/bin/python benchmarks/bench_sae.py --threads 2
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench_sampling import wordnet_sentences  # same sentence source as the sampling benchmark

from sarm.backbone import hidden_states, load_decoder, load_tokenizer
from sarm.sae.model import SAEConfig, TopKSAE
from sarm.sae.reader import ActivationReader
from sarm.sae.sampling import sample_activations
from sarm.sae.train import SAETrainConfig, train_sae

BENCH_DIR = Path(tempfile.gettempdir()) / "sarm_bench"
RESULTS = Path(__file__).parent / "results" / "sae.json"


def cached_activations(model_dir: Path, out_dir: Path, layer: int, sentences: int) -> Path:
    """Token-level activations of WordNet sentences at `layer`, first token of each sentence dropped (the
    attention sink, see `first_token_norm_ratio`); sampled once, then reused."""
    if not (out_dir / "manifest.json").is_file():
        tokenizer = load_tokenizer(str(model_dir))
        sample_activations(
            load_decoder(str(model_dir), layer),
            tokenizer,
            wordnet_sentences(tokenizer, sentences),
            layers=[layer],
            level="token",
            out_dir=out_dir,
            skip_first_tokens=1,
        )
    return out_dir


@torch.inference_mode()
def first_token_norm_ratio(model_dir: Path, layer: int, sentences: int = 100) -> dict:
    """Median residual norm at `layer` of each sentence's first token and of all later tokens."""
    tokenizer = load_tokenizer(str(model_dir))
    decoder = load_decoder(str(model_dir), layer)
    first, rest = [], []
    for sentence in wordnet_sentences(tokenizer, sentences):
        ids = torch.tensor([tokenizer(sentence)["input_ids"]])
        norms = hidden_states(decoder, ids, torch.ones_like(ids), [layer])[layer][0].norm(dim=-1)
        first.append(norms[0])
        rest.append(norms[1:])
    first_median, rest_median = torch.stack(first).median().item(), torch.cat(rest).median().item()
    return {
        "first_token_median_norm": first_median,
        "other_tokens_median_norm": rest_median,
        "ratio": first_median / rest_median,
    }


class Ours:
    name = "sarm.sae (sparse encode/decode)"

    def __init__(self, d, m, k, sparse=True, bf16=False):
        self.sae = TopKSAE(d, SAEConfig(m, k), seed=0)
        self.sparse = sparse
        if not sparse:
            self.name = "sarm.sae, dense decode (ablation)"
        if bf16:  # SAETrainConfig(gemm_dtype="bfloat16"): a precision change, so listed apart
            self.sae.gemm_dtype = torch.bfloat16
            self.name = "sarm.sae, bf16 encoder GEMM"

    def loss(self, x, step):
        if self.sparse:
            x_hat = self.sae.decode_topk(*self.sae.encode_topk(x))
        else:
            x_hat = self.sae.decode(self.sae.encode(x))
        return (x_hat - x).pow(2).sum(dim=-1).mean()

    def after_backward(self, step):
        pass

    def after_step(self, step):
        if (step + 1) % 10 == 0:
            self.sae.normalize_decoder_()

    def reconstruct(self, x):
        return self.sae(x)[0]


class Sparsify:
    name = "eai-sparsify"

    def __init__(self, d, m, k):
        from sparsify import SparseCoder, SparseCoderConfig

        self.sae = SparseCoder(d, SparseCoderConfig(num_latents=m, k=k))

    def loss(self, x, step):
        return self.sae(x).fvu

    def after_backward(self, step):
        self.sae.remove_gradient_parallel_to_decoder_directions()

    def after_step(self, step):
        self.sae.set_decoder_norm_to_unit_norm()

    def reconstruct(self, x):
        return self.sae(x).sae_out


class SaeLens:
    name = "sae-lens"

    def __init__(self, d, m, k, sparse=False):
        from sae_lens.saes.sae import TrainStepInput
        from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

        config = TopKTrainingSAEConfig(d_in=d, d_sae=m, k=k, use_sparse_activations=sparse, device="cpu")
        self.sae = TopKTrainingSAE(config)
        self.step_input = TrainStepInput
        if sparse:
            self.name = "sae-lens (use_sparse_activations)"

    def loss(self, x, step):
        step_input = self.step_input(
            sae_in=x, coefficients={}, dead_neuron_mask=None, n_training_steps=step, is_logging_step=False
        )
        return self.sae.training_forward_pass(step_input).loss

    def after_backward(self, step):
        pass

    def after_step(self, step):
        pass

    def reconstruct(self, x):
        return self.sae(x)


def train_interleaved(models, train, evaluation, batch_size, steps, lr) -> dict:
    """Train every model on the same `steps` batches, one step of each in turn (rotating the order), so that
    all see the same machine load; the first step is warm-up. Returns step times and held-out FVU."""
    optimizers = [torch.optim.Adam(m.sae.parameters(), lr=lr, betas=(0.9, 0.999), fused=True) for m in models]
    step_seconds = {m.name: [] for m in models}
    for step in range(steps + 1):
        start = (step * batch_size) % (train.shape[0] - batch_size + 1)
        x = train[start : start + batch_size]
        pairs = list(zip(models, optimizers, strict=True))
        turn = step % len(pairs)
        for model, optimizer in pairs[turn:] + pairs[:turn]:
            began = time.perf_counter()
            model.loss(x, step).backward()
            model.after_backward(step)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            model.after_step(step)
            if step:
                step_seconds[model.name].append(time.perf_counter() - began)
    variance = (evaluation - evaluation.mean(dim=0)).pow(2).sum().item()
    results = {}
    for model in models:
        with torch.no_grad():
            error = sum((model.reconstruct(x) - x).pow(2).sum().item() for x in evaluation.split(batch_size))
        times = step_seconds[model.name]
        results[model.name] = {
            "samples_per_second_median_step": batch_size / statistics.median(times),
            "samples_per_second_mean": batch_size * len(times) / sum(times),
            "heldout_fvu": error / variance,
        }
    return results


def end_to_end(acts: Path, layer: int, d: int, m: int, k: int, batch_size: int, steps: int) -> dict:
    """sarm.sae.train.train_sae itself: reading shards, bookkeeping, metrics and outputs included."""
    with tempfile.TemporaryDirectory() as out:
        cfg = SAETrainConfig(
            batch_size=batch_size,
            max_samples=steps * batch_size,
            shuffle_buffer=1 << 18,
            checkpoint_every=10**9,
            eval_rows=4096,
        )
        metrics = train_sae(cfg.make_reader([acts], layer), TopKSAE(d, SAEConfig(m, k), seed=0), cfg, out)
    return {"samples_per_second_mean": metrics["samples_per_second"]}


def op_timings(d: int, m: int, k: int, batch_size: int, repeats: int = 5) -> dict[str, float]:
    """Milliseconds of the single operations behind the design choices in sarm/sae.py and sae_train.py."""
    g = torch.Generator().manual_seed(0)
    x, w_rows = torch.randn(batch_size, d, generator=g), torch.randn(m, d, generator=g)
    w_cols = w_rows.T.contiguous()  # the paper's (d, M) layout
    pre = x @ w_rows.T
    values, indices = pre.topk(k, dim=-1, sorted=False)
    grad = torch.randn(batch_size, k, generator=g)
    rows = torch.arange(batch_size).repeat_interleave(k)

    def sparse_mm():
        coo = torch.sparse_coo_tensor(
            torch.stack([indices.flatten(), rows]), grad.flatten(), (m, batch_size), check_invariants=False
        )
        return torch.sparse.mm(coo, x)

    def index_add():  # what sparsify's FusedEncoder does on CPU
        contributions = (grad[..., None] * x[:, None, :]).reshape(-1, d)
        return torch.zeros(m, d).index_add_(0, indices.flatten(), contributions)

    def dense_grad():
        return torch.zeros(batch_size, m).scatter_(1, indices, grad).T @ x

    def adam(**kwargs):
        params = [torch.nn.Parameter(torch.randn(m, d)) for _ in range(2)] + [
            torch.nn.Parameter(torch.randn(m))
        ]
        for p in params:
            p.grad = torch.randn_like(p)
        optimizer = torch.optim.Adam(params, lr=1e-3, **kwargs)
        optimizer.step()
        return optimizer.step

    fired_from = indices.flatten()
    ops = {
        "encoder GEMM (B x d) @ (d x M) + bias": lambda: torch.nn.functional.linear(x, w_rows, pre[0]),
        "topk over M": lambda: pre.topk(k, dim=-1, sorted=False),
        "sparse decode, W_dec rows (M, d) contiguous": lambda: torch.nn.functional.embedding_bag(
            indices, w_rows, per_sample_weights=values, mode="sum"
        ),
        "sparse decode, W_dec (d, M) as in the paper (strided)": lambda: torch.nn.functional.embedding_bag(
            indices, w_cols.T, per_sample_weights=values, mode="sum"
        ),
        "dense decode z @ W_dec": lambda: torch.zeros(batch_size, m).scatter_(1, indices, values) @ w_rows,
        "encoder weight grad: sparse COO mm (ours)": sparse_mm,
        "encoder weight grad: index_add of contributions (sparsify)": index_add,
        "encoder weight grad: dense scatter + GEMM": dense_grad,
        "Adam step, foreach (2 x M x d + M params)": adam(),
        "Adam step, fused": adam(fused=True),
        "fired latents via unique()": lambda: fired_from.unique(),
        "fired latents via boolean scatter": lambda: torch.zeros(m, dtype=torch.bool).index_fill_(
            0, fired_from, True
        ),
    }
    timings = {}
    for name, fn in ops.items():
        fn()
        best = float("inf")
        for _ in range(repeats):
            began = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - began)
        timings[name] = 1e3 * best
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=BENCH_DIR / "smollm2")
    parser.add_argument("--activations", type=Path, default=BENCH_DIR / "acts_token_skip1_l15")
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument("--sentences", type=int, default=5000)
    parser.add_argument("--expansion", type=int, default=16)  # paper: M = 16 d
    parser.add_argument("--k", type=int, default=None)  # paper: k = 3/64 d
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--heldout", type=int, default=8192)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--ops", action="store_true", help="only time the single operations (no activations needed)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.ops:
        d = 576
        m, k = args.expansion * d, args.k or round(3 * d / 64)
        timings = op_timings(d, m, k, args.batch_size)
        path = args.out.with_name("sae_ops.json")
        info = {"d_model": d, "latents": m, "k": k, "batch_size": args.batch_size, "threads": args.threads}
        path.write_text(
            json.dumps({**info, "load_average": os.getloadavg(), "milliseconds_best_of_5": timings}, indent=2)
            + "\n"
        )
        print(
            f"d={d} M={m} k={k} batch={args.batch_size} threads={args.threads}\n| operation | ms (best of 5) |\n|---|---|"
        )
        for name, ms in timings.items():
            print(f"| {name} | {ms:.1f} |")
        return

    sink = first_token_norm_ratio(args.model_dir, args.layer)
    print(f"first-token residual norm / other tokens (median, layer {args.layer}): {sink['ratio']:.0f}x")
    acts = cached_activations(args.model_dir, args.activations, args.layer, args.sentences)
    reader = ActivationReader([acts], args.layer, batch_size=65536, shuffle_buffer=1 << 20, seed=0)
    rows = torch.cat(list(reader))
    rows *= (rows.shape[1] / rows.pow(2).sum(dim=1).mean()).sqrt()  # paper: E||x||^2 = d, same for everyone
    train, evaluation = rows[: -args.heldout], rows[-args.heldout :]
    d = rows.shape[1]
    m, k = args.expansion * d, args.k or round(3 * d / 64)

    models, failures = [], {}
    candidates = [
        (Ours, {}),
        (Ours, {"sparse": False}),
        (Ours, {"bf16": True}),
        (Sparsify, {}),
        (SaeLens, {}),
        (SaeLens, {"sparse": True}),
    ]
    for cls, kwargs in candidates:
        package = {Sparsify: "sparsify", SaeLens: "sae_lens"}.get(cls)
        if package and importlib.util.find_spec(package) is None:
            print(f"skipping {cls.name}: `{package}` is not importable in this interpreter")
            continue
        torch.manual_seed(0)
        model = cls(d, m, k, **kwargs)
        try:  # one probe step: a competitor's mode may not run on this torch / device; reported, not hidden
            model.loss(train[: args.batch_size], 0).backward()
            model.sae.zero_grad(set_to_none=True)
        except (RuntimeError, NotImplementedError) as err:
            failures[model.name] = str(err).splitlines()[0].split(". ")[0]
            print(f"{model.name} failed: {failures[model.name]}")
            continue
        torch.manual_seed(0)
        models.append(cls(d, m, k, **kwargs))
    results = train_interleaved(models, train, evaluation, args.batch_size, args.steps, args.lr)
    results["sarm.sae.train.train_sae (end to end, alone)"] = end_to_end(
        acts, args.layer, d, m, k, args.batch_size, args.steps
    )

    ours = results[Ours.name]
    others = {name: r for name, r in results.items() if name.startswith(("eai", "sae-lens"))}
    summary = {
        "d_model": d,
        "latents": m,
        "k": k,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "train_rows": train.shape[0],
        "heldout_rows": evaluation.shape[0],
        "threads": args.threads,
        "torch": torch.__version__,
        "load_average_at_end": os.getloadavg(),
        "attention_sink": sink,
        "results": results,
        "failures": failures,
    }
    if others:
        key = "samples_per_second_median_step"
        fastest = max(others, key=lambda name: others[name][key])
        summary["fastest_competitor"] = fastest
        summary["speedup_vs_fastest_competitor"] = ours[key] / others[fastest][key]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"d={d} M={m} k={k} batch={args.batch_size} steps={args.steps} threads={args.threads}")
    print("| implementation | samples/s (median step) | samples/s (mean) | held-out FVU |\n|---|---|---|---|")
    for name, result in results.items():
        median = result.get("samples_per_second_median_step")
        fvu = result.get("heldout_fvu")
        print(
            f"| {name} | {f'{median:.0f}' if median else '-'} | {result['samples_per_second_mean']:.0f} "
            f"| {f'{fvu:.4f}' if fvu is not None else '-'} |"
        )
    for name, reason in failures.items():
        print(f"| {name} | failed: {reason} | | |")
    if others:
        print(f"speed-up vs {summary['fastest_competitor']}: {summary['speedup_vs_fastest_competitor']:.2f}x")


if __name__ == "__main__":
    main()
