"""Sample residual-stream activations of a truncated backbone into sharded safetensors (read by `sarm.sae.reader`).

Levels: "sequence" (paper: the last token of each sentence), "token" (paper's ablation: every non-pad token),
"sequence_punct" (upstream schrieffer-z/sae: the last token plus punctuation tokens inside the sentence).
Layout: out_dir/manifest.json (written last: its presence means complete), out_dir/progress.json (resume
point), out_dir/layer{L}/shard{i:05d}.safetensors with tensor "activations" (rows, d_model).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from sarm.backbone import hidden_states
from sarm.batching import pad_right, token_budget_batches
from sarm.runtime import atomic_write, check_resumable, module_device, write_json_atomic
from sarm.sae.reader import MANIFEST_FILE, TENSOR_NAME

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

LEVELS = ("sequence", "token", "sequence_punct")
# Punctuation that upstream also samples at sequence level ("." ends the sentence, so it is the last token).
UPSTREAM_PUNCTUATION = (",", "?", "--", ";", "!", '"')
PROGRESS_FILE = "progress.json"


def punctuation_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Ids of the upstream punctuation marks, with and without a leading space, that are single tokens."""
    ids = set()
    for mark in UPSTREAM_PUNCTUATION:
        for text in (mark, " " + mark):
            encoded = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(encoded) == 1:
                ids.add(encoded[0])
    return sorted(ids)


def shard_path(out_dir: Path, layer: int, index: int) -> Path:
    return out_dir / f"layer{layer}" / f"shard{index:05d}.safetensors"


def sample_activations(
    decoder: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    sentences: Iterable[str] | Sequence[str],
    *,
    layers: list[int],
    level: str = "sequence",
    out_dir: str | Path,
    shard_rows: int = 262144,
    storage_dtype: torch.dtype = torch.float16,
    batch_tokens: int = 32768,
    chunk_sentences: int = 4096,
    max_tokens: int | None = None,
    skip_first_tokens: int = 0,
    device: str | torch.device | None = None,
    compute_dtype: torch.dtype | None = None,
) -> dict:
    """Run `decoder` once per sentence batch and store the activations of `layers` at `level`; resumable.

    Sentences are taken in chunks of `chunk_sentences`, sorted by length inside a chunk and batched with
    dynamic padding to at most `batch_tokens` padded tokens. A shard holds whole chunks and is written once
    it has at least `shard_rows` rows, so a rerun after a kill restarts at the first unwritten shard and
    produces the same files as an uninterrupted run. `skip_first_tokens` drops the first positions of each
    sentence at the token and punctuation levels: the first token is an attention sink whose residual norm
    is ~140x the median on SmolLM2 layer 15 (benchmarks/README.md) and would dominate an SAE's loss.
    """
    return sample_levels(
        decoder,
        tokenizer,
        sentences,
        layers=layers,
        out_dirs={level: out_dir},
        shard_rows=shard_rows,
        storage_dtype=storage_dtype,
        batch_tokens=batch_tokens,
        chunk_sentences=chunk_sentences,
        max_tokens=max_tokens,
        skip_first_tokens=skip_first_tokens,
        device=device,
        compute_dtype=compute_dtype,
    )[level]


def sample_levels(
    decoder: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    sentences: Iterable[str] | Sequence[str],
    *,
    layers: list[int],
    out_dirs: dict[str, str | Path],
    shard_rows: int = 262144,
    storage_dtype: torch.dtype = torch.float16,
    batch_tokens: int = 32768,
    chunk_sentences: int = 4096,
    max_tokens: int | None = None,
    skip_first_tokens: int = 0,
    device: str | torch.device | None = None,
    compute_dtype: torch.dtype | None = None,
) -> dict[str, dict]:
    """`sample_activations` for several levels {level: out_dir} from one forward pass per batch.

    Each level's folder gets the files a separate `sample_activations` run would write, byte for byte
    (shards are cut per level), and each resumes on its own: the pass restarts at the earliest unwritten
    shard of any level and a level skips the chunks it already stored. `skip_first_tokens` applies to the
    token and punctuation levels only. Returns {level: manifest}.
    """
    out_dirs = {level: Path(path) for level, path in out_dirs.items()}
    layers = sorted(set(layers))
    depth = decoder.config.num_hidden_layers
    _check_arguments(layers, list(out_dirs), depth, shard_rows, batch_tokens, chunk_sentences)
    if max(layers) < depth:
        log.warning(
            "decoder has %d layers but the deepest requested is %d: load it truncated", depth, max(layers)
        )
    d_model = decoder.config.hidden_size
    manifests, progresses = {}, {}
    for level, out_dir in out_dirs.items():
        skip = 0 if level == "sequence" else skip_first_tokens
        settings = _settings(
            level, layers, d_model, storage_dtype, shard_rows, chunk_sentences, max_tokens, skip
        )
        if (out_dir / MANIFEST_FILE).is_file():
            manifest = json.loads((out_dir / MANIFEST_FILE).read_text())
            check_resumable(manifest["settings"], settings, out_dir)
            log.info("%s is complete (%d rows), nothing to do", out_dir, manifest["rows"])
            manifests[level] = manifest
            continue
        progresses[level] = _load_progress(out_dir, settings)
        if progresses[level]["shards"]:
            log.info(
                "resuming %s after %d sentences (%d shards)",
                out_dir,
                progresses[level]["sentences"],
                len(progresses[level]["shards"]),
            )
    if not progresses:
        return manifests

    device = torch.device(device) if device is not None else module_device(decoder)
    model_dtype = next(decoder.parameters()).dtype
    autocast = (
        torch.autocast(device.type, dtype=compute_dtype)
        if compute_dtype is not None and compute_dtype != model_dtype
        else contextlib.nullcontext()
    )
    punct_ids = punctuation_token_ids(tokenizer) if "sequence_punct" in progresses else []
    run = _Run(
        decoder.eval(),
        tokenizer,
        layers,
        {level: progresses[level]["settings"]["skip_first_tokens"] for level in progresses},
        torch.tensor(punct_ids, dtype=torch.long),
        batch_tokens,
        max_tokens,
        device,
        storage_dtype,
    )
    writers = {level: _LevelWriter(out_dirs[level], progresses[level], layers) for level in progresses}
    consumed = min(progress["sentences"] for progress in progresses.values())
    remaining = itertools.islice(iter(sentences), consumed, None)
    total = len(sentences) if isinstance(sentences, Sequence) else None
    name = "+".join(out_dir.name for out_dir in out_dirs.values())
    bar = tqdm(total=total, initial=consumed, unit="sent", desc=f"activations {name}", mininterval=10)
    with torch.inference_mode(), autocast:
        for chunk in _batched(remaining, chunk_sentences):
            levels = [level for level, writer in writers.items() if writer.needs(consumed)]
            rows, tokens = _chunk_activations(run, levels, chunk, consumed, bar)
            consumed += len(chunk)
            for level in levels:
                writers[level].add(rows[level], tokens, consumed, shard_rows)
    bar.close()
    for level, writer in writers.items():
        manifests[level] = writer.finish()
        log.info(
            "wrote %d %s rows x %d layers from %d sentences to %s",
            manifests[level]["rows"],
            level,
            len(layers),
            consumed,
            out_dirs[level],
        )
    return manifests


class _LevelWriter:
    """Buffers one level's rows and cuts them into shards exactly as a run of that level alone would."""

    def __init__(self, out_dir: Path, progress: dict, layers: list[int]):
        self.out_dir, self.progress = out_dir, progress
        self.buffers: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
        self.buffered, self.shard_start = 0, progress["sentences"]
        self.end = self.shard_start

    def needs(self, first_sentence: int) -> bool:
        """Whether the chunk starting at this sentence is not stored yet (shards hold whole chunks)."""
        return first_sentence >= self.shard_start

    def add(self, rows: dict[int, torch.Tensor], tokens: int, consumed: int, shard_rows: int) -> None:
        for layer, layer_rows in rows.items():
            self.buffers[layer].append(layer_rows)
        self.buffered += next(iter(rows.values())).shape[0]
        self.progress["tokens"] += tokens
        self.end = consumed
        if self.buffered >= shard_rows:
            _write_shard(self.out_dir, self.progress, self.buffers, self.shard_start, consumed)
            self.buffered, self.shard_start = 0, consumed

    def finish(self) -> dict:
        if self.buffered:
            _write_shard(self.out_dir, self.progress, self.buffers, self.shard_start, self.end)
        return _write_manifest(self.out_dir, self.progress)


def write_activations(
    out_dir: str | Path,
    activations: dict[int, torch.Tensor],
    *,
    level: str = "sequence",
    shard_rows: int = 65536,
    storage_dtype: torch.dtype = torch.float16,
) -> dict:
    """Store precomputed activations {layer: (rows, d_model)} in the sampler's layout (one row = one sentence)."""
    out_dir = Path(out_dir)
    layers = sorted(activations)
    shapes = {tuple(activations[layer].shape) for layer in layers}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(
            f"activations must be (rows, d_model) tensors of one shape for every layer, got {shapes}"
        )
    rows, d_model = next(iter(shapes))
    settings = _settings(level, layers, d_model, storage_dtype, shard_rows)
    progress = {"settings": settings, "shards": [], "sentences": 0, "tokens": 0}
    for start in range(0, rows, shard_rows):
        end = min(start + shard_rows, rows)
        buffers = {layer: [activations[layer][start:end].to(storage_dtype)] for layer in layers}
        _write_shard(out_dir, progress, buffers, start, end)
    return _write_manifest(out_dir, progress)


def _settings(
    level,
    layers,
    d_model,
    storage_dtype,
    shard_rows,
    chunk_sentences=None,
    max_tokens=None,
    skip_first_tokens=0,
) -> dict:
    """What a sampling run's shards depend on; a resumed run must match it."""
    return {
        "level": level,
        "layers": layers,
        "d_model": d_model,
        "dtype": str(storage_dtype).removeprefix("torch."),
        "shard_rows": shard_rows,
        "chunk_sentences": chunk_sentences,
        "max_tokens": max_tokens,
        "skip_first_tokens": skip_first_tokens,
    }


def _write_manifest(out_dir: Path, progress: dict) -> dict:
    settings = progress["settings"]
    manifest = {
        "complete": True,
        "settings": settings,
        "level": settings["level"],
        "layers": settings["layers"],
        "d_model": settings["d_model"],
        "dtype": settings["dtype"],
        "rows": sum(shard["rows"] for shard in progress["shards"]),
        "sentences": progress["sentences"],
        "tokens": progress["tokens"],
        "shards": progress["shards"],
    }
    manifest["rows_per_layer"] = {str(layer): manifest["rows"] for layer in settings["layers"]}
    write_json_atomic(manifest, out_dir / MANIFEST_FILE)
    return manifest


def _check_arguments(layers, levels, depth, shard_rows, batch_tokens, chunk_sentences) -> None:
    if not levels:
        raise ValueError("no activation level requested")
    for level in levels:
        if level not in LEVELS:
            raise ValueError(f"activation level must be one of {', '.join(LEVELS)}, got {level!r}")
    if not layers:
        raise ValueError("no layers requested")
    if layers[0] < 1 or layers[-1] > depth:
        raise ValueError(
            f"layers {layers} outside 1..{depth}: the decoder has {depth} layers "
            f"(load it with sarm.backbone.load_decoder(source, {layers[-1]}))"
        )
    for name, value in (
        ("shard_rows", shard_rows),
        ("batch_tokens", batch_tokens),
        ("chunk_sentences", chunk_sentences),
    ):
        if value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}")


def _load_progress(out_dir: Path, settings: dict) -> dict:
    path = out_dir / PROGRESS_FILE
    if not path.is_file():
        return {"settings": settings, "shards": [], "sentences": 0, "tokens": 0}
    progress = json.loads(path.read_text())
    check_resumable(progress["settings"], settings, out_dir)
    return progress


def _batched(iterable: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(iterable)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


@dataclass(frozen=True)
class _Run:
    """What every chunk of one sampling job needs."""

    decoder: nn.Module
    tokenizer: PreTrainedTokenizerBase
    layers: list[int]
    skip_first_tokens: dict[str, int]  # per level
    punct_ids: torch.Tensor
    batch_tokens: int
    max_tokens: int | None
    device: torch.device
    storage_dtype: torch.dtype


def _chunk_activations(
    run: _Run, levels: list[str], chunk: list[str], first_index: int, bar
) -> tuple[dict[str, dict[int, torch.Tensor]], int]:
    """{level: {layer: rows}} of one chunk of sentences, rows in sentence order; also the real tokens.

    With no level to store, the chunk is only checked and counted (a level that resumes further on)."""
    decoder, tokenizer, layers = run.decoder, run.tokenizer, run.layers
    for offset, sentence in enumerate(chunk):
        if not isinstance(sentence, str):
            raise TypeError(f"sentence {first_index + offset} is a {type(sentence).__name__}, not a string")
    ids = tokenizer(chunk, truncation=run.max_tokens is not None, max_length=run.max_tokens)["input_ids"]
    for offset, sentence_ids in enumerate(ids):
        if not sentence_ids:
            raise ValueError(f"sentence {first_index + offset} ({chunk[offset]!r}) has no tokens")
    tokens = sum(len(sentence_ids) for sentence_ids in ids)
    if not levels:
        bar.update(len(chunk))
        return {}, tokens
    per_sentence = {level: {layer: [None] * len(chunk) for layer in layers} for level in levels}
    for batch in token_budget_batches([len(sentence) for sentence in ids], run.batch_tokens):
        input_ids, attention_mask = pad_right([ids[index] for index in batch], tokenizer.pad_token_id)
        states = hidden_states(decoder, input_ids.to(run.device), attention_mask.to(run.device), layers)
        for level in levels:
            selected = _selected_positions(input_ids, attention_mask, level, run)
            counts = selected.sum(dim=1).tolist()
            mask = selected.to(run.device)
            for layer in layers:
                kept = states[layer][mask].to("cpu", run.storage_dtype)
                for index, rows in zip(batch, kept.split(counts), strict=True):
                    per_sentence[level][layer][index] = rows
        bar.update(len(batch))
    rows = {level: {layer: torch.cat(per_sentence[level][layer]) for layer in layers} for level in levels}
    return rows, tokens


def _selected_positions(input_ids, attention_mask, level: str, run: _Run) -> torch.Tensor:
    """Boolean (B, T) mask of the token positions whose activations are kept at this level."""
    last = attention_mask.sum(dim=1) - 1
    is_last = torch.zeros_like(attention_mask, dtype=torch.bool)
    is_last[torch.arange(len(last)), last] = True
    if level == "sequence":
        return is_last
    inside = attention_mask.bool()
    inside[:, : run.skip_first_tokens[level]] = False
    if level == "token":
        return inside
    return is_last | (torch.isin(input_ids, run.punct_ids) & inside)


def _write_shard(out_dir: Path, progress: dict, buffers: dict[int, list[torch.Tensor]], start: int, end: int):
    index = len(progress["shards"])
    files = {}
    for layer, parts in buffers.items():
        rows = torch.cat(parts)
        parts.clear()
        path = shard_path(out_dir, layer, index)
        atomic_write(path, partial(save_file, {TENSOR_NAME: rows.contiguous()}))
        files[str(layer)] = str(path.relative_to(out_dir))
    progress["shards"].append(
        {"index": index, "rows": rows.shape[0], "sentences": [start, end], "files": files}
    )
    progress["sentences"] = end
    write_json_atomic(progress, out_dir / PROGRESS_FILE)
