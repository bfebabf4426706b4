"""Stream one layer's sampled activations back from the shards of several sampling parts.

Layout written by `sarm.sae.sampling`: out_dir/manifest.json (written last: its presence means complete),
out_dir/layer{L}/shard{i:05d}.safetensors with tensor "activations" (rows, d_model).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from sarm.runtime import check_resumable, fingerprint

MANIFEST_FILE, TENSOR_NAME = "manifest.json", "activations"


class ActivationReader:
    """Batches of one layer's activations from the shards of several sampling parts, shuffled and resumable.

    Each epoch permutes the shard order, groups consecutive shards into windows of about `shuffle_buffer`
    rows and permutes the rows inside a window, all from `seed`: memory is one window (less than
    `shuffle_buffer` + one shard rows, including the carried remainder of a batch), whatever the corpus size.
    The position is (epoch, rows consumed), so `load_state_dict` resumes at the same batch.
    Iterating yields the rest of the current epoch; the last batch of an epoch may be smaller.

    `holdout` rows at the end of the storage order (the last sentences of the last part) are left out; with
    `heldout=True` the reader yields only those rows, so a training reader and a held-out reader built with
    the same `holdout` never share a row.
    """

    def __init__(
        self,
        dirs: Sequence[str | Path],
        layer: int,
        batch_size: int,
        shuffle_buffer: int = 262144,
        seed: int = 0,
        *,
        shuffle: bool = True,
        dtype: torch.dtype = torch.float32,
        holdout: int = 0,
        heldout: bool = False,
    ):
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}")
        if shuffle_buffer < batch_size:
            raise ValueError(
                f"`shuffle_buffer` ({shuffle_buffer}) must be at least `batch_size` ({batch_size})"
            )
        self.layer, self.batch_size, self.shuffle_buffer, self.seed = layer, batch_size, shuffle_buffer, seed
        self.shuffle, self.dtype = shuffle, dtype
        self.holdout, self.heldout = holdout, heldout
        self.shards: list[tuple[Path, int]] = []
        self._slices: list[tuple[int, int]] = []  # (first row, rows stored) of each shard's file
        self.d_model = None
        for directory in map(Path, dirs):
            self._add_part(directory)
        if not self.shards:
            raise ValueError(f"no activation shards for layer {layer} in {', '.join(map(str, dirs))}")
        if holdout:
            self._split(holdout, heldout, dirs)
        self.rows = sum(rows for _, rows in self.shards)
        self.epoch, self.position = 0, 0
        self.max_rows_held = 0  # the most rows ever held in memory at once (checked by the tests)

    def _split(self, holdout: int, heldout: bool, dirs) -> None:
        """Keep the rows before (training) or from (held out) the last `holdout` rows of the storage order."""
        total = sum(rows for _, rows in self.shards)
        if holdout < 0 or holdout >= total:
            raise ValueError(
                f"cannot hold out {holdout} of the {total} activation rows of layer {self.layer} in "
                f"{', '.join(map(str, dirs))}: lower `sae.heldout_rows` or sample more sentences"
            )
        cut, start = total - holdout, 0
        shards, slices = [], []
        for (path, rows), (_, stored) in zip(self.shards, self._slices, strict=True):
            lo, hi = (max(cut, start), start + rows) if heldout else (start, min(cut, start + rows))
            if lo < hi:
                shards.append((path, hi - lo))
                slices.append((lo - start, stored))
            start += rows
        self.shards, self._slices = shards, slices

    def _add_part(self, directory: Path) -> None:
        path = directory / MANIFEST_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: sampling of {directory} did not finish")
        manifest = json.loads(path.read_text())
        if self.layer not in manifest["layers"]:
            raise ValueError(f"{path}: layer {self.layer} was not sampled (layers {manifest['layers']})")
        if self.d_model is not None and manifest["d_model"] != self.d_model:
            raise ValueError(
                f"{path}: d_model {manifest['d_model']} differs from the other parts ({self.d_model})"
            )
        self.d_model = manifest["d_model"]
        for shard in manifest["shards"]:
            if shard["rows"]:
                self.shards.append((directory / shard["files"][str(self.layer)], shard["rows"]))
                self._slices.append((0, shard["rows"]))

    def __len__(self) -> int:
        """Batches per epoch."""
        return math.ceil(self.rows / self.batch_size)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "settings": self._settings()}

    def load_state_dict(self, state: dict, where: str | Path = "the reader state") -> None:
        """Continue at the saved position; refuses a state of other shards or stream settings."""
        check_resumable(state.get("settings", {}), self._settings(), where)
        self.epoch, self.position = state["epoch"], state["position"]

    def _settings(self) -> dict:
        """What the order of the row stream depends on."""
        return {
            "shards": fingerprint([(str(path), rows) for path, rows in self.shards]),
            "layer": self.layer,
            "batch_size": self.batch_size,
            "shuffle_buffer": self.shuffle_buffer,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "holdout": self.holdout,
            "heldout": self.heldout,
        }

    def __iter__(self) -> Iterator[torch.Tensor]:
        for batch in self._stream(self.epoch, self.position):
            self.position += batch.shape[0]
            yield batch
        self.epoch, self.position = self.epoch + 1, 0

    def sample(self, n: int) -> torch.Tensor:
        """The first `n` rows of epoch 0 (a shuffled sample), without moving the reader."""
        parts, held = [], 0
        for batch in self._stream(0, 0):
            parts.append(batch[: n - held])
            held += parts[-1].shape[0]
            if held >= n:
                break
        return torch.cat(parts)

    def _windows(self, epoch: int) -> list[list[int]]:
        order = list(range(len(self.shards)))
        if self.shuffle:
            order = self._rng(epoch).permutation(len(self.shards)).tolist()
        windows, current, rows = [], [], 0
        for index in order:
            # keep the window plus a carried partial batch under shuffle_buffer + one shard
            if current and rows + self.batch_size - 1 >= self.shuffle_buffer:
                windows.append(current)
                current, rows = [], 0
            current.append(index)
            rows += self.shards[index][1]
        windows.append(current)
        return windows

    def _rng(self, *keys: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, *keys]))

    def _stream(self, epoch: int, position: int) -> Iterator[torch.Tensor]:
        """Batches of the epoch's row stream (windows concatenated) from row `position` on."""
        carry = torch.empty(0, self.d_model, dtype=self.dtype)
        start = 0
        for window_index, window in enumerate(self._windows(epoch)):
            size = sum(self.shards[i][1] for i in window)
            if start + size <= position:
                start += size
                continue
            tensors = [self._load(i) for i in window]
            self.max_rows_held = max(self.max_rows_held, size + carry.shape[0])
            offsets = torch.tensor([0] + list(itertools.accumulate(t.shape[0] for t in tensors)))
            order = torch.arange(size)
            if self.shuffle:
                order = torch.from_numpy(self._rng(epoch, window_index).permutation(size))
            order = order[max(0, position - start) :]
            start += size
            cursor = self.batch_size - carry.shape[0]
            if cursor <= order.shape[0]:
                yield torch.cat([carry, _gather(tensors, offsets, order[:cursor], self.dtype)])
                while cursor + self.batch_size <= order.shape[0]:
                    yield _gather(tensors, offsets, order[cursor : cursor + self.batch_size], self.dtype)
                    cursor += self.batch_size
                carry = torch.empty(0, self.d_model, dtype=self.dtype)
            else:
                cursor = 0
            carry = torch.cat([carry, _gather(tensors, offsets, order[cursor:], self.dtype)])
            del tensors
        if carry.shape[0]:
            yield carry

    def _load(self, index: int) -> torch.Tensor:
        path, rows = self.shards[index]
        first, stored = self._slices[index]
        with safe_open(path, framework="pt") as handle:
            tensor = handle.get_tensor(TENSOR_NAME)
        if tensor.shape != (stored, self.d_model):
            raise ValueError(f"{path}: shape {tuple(tensor.shape)}, manifest says ({stored}, {self.d_model})")
        return tensor[first : first + rows]


def _gather(tensors: list[torch.Tensor], offsets: torch.Tensor, rows: torch.Tensor, dtype) -> torch.Tensor:
    """Rows (window-wide indices) from a window kept as a list of shard tensors."""
    out = torch.empty(rows.shape[0], tensors[0].shape[1], dtype=dtype)
    shard_of = torch.searchsorted(offsets, rows, right=True) - 1
    for shard in shard_of.unique().tolist():
        where = shard_of == shard
        out[where] = tensors[shard][rows[where] - offsets[shard]].to(dtype)
    return out
