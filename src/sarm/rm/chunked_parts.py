"""Resumable chunked caching: a job that runs the backbone over many conversations saves each chunk in
`<out>.parts/`, so a killed run resumes where it stopped. Used by the final-token and per-token caches."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from sarm.runtime import write_text_atomic

log = logging.getLogger(__name__)


class ChunkedParts:
    """The chunk files of `total` items next to `out_path`; parts written for other `inputs` are discarded."""

    def __init__(self, out_path: Path, inputs: str, total: int, chunk_size: int, desc: str) -> None:
        self.dir = out_path.with_name(out_path.name + ".parts")
        manifest = self.dir / "manifest.json"
        if self.dir.exists() and (not manifest.exists() or json.loads(manifest.read_text()) != inputs):
            log.warning("%s holds parts of a different input; starting over", self.dir)
            shutil.rmtree(self.dir)
        write_text_atomic(json.dumps(inputs), manifest)
        self.starts = range(0, total, chunk_size)
        self.files = [self.dir / f"chunk{start // chunk_size:06d}.safetensors" for start in self.starts]
        done = sum(
            min(chunk_size, total - s) for s, f in zip(self.starts, self.files, strict=True) if f.exists()
        )
        self.progress = tqdm(total=total, initial=done, desc=f"{desc} -> {out_path.name}", unit="conv")

    def missing(self) -> Iterator[tuple[int, Path]]:
        """(first item, chunk file) of every chunk not written yet, in order."""
        for start, chunk_file in zip(self.starts, self.files, strict=True):
            if not chunk_file.exists():
                yield start, chunk_file
        self.progress.close()

    def read(self, key: str) -> list[torch.Tensor]:
        """Tensor `key` of every chunk, in order."""
        return [read_tensor(f, key) for f in self.files]

    def remove(self) -> None:
        shutil.rmtree(self.dir)


def read_tensor(path: Path, key: str) -> torch.Tensor:
    with safe_open(str(path), framework="pt") as f:
        return f.get_tensor(key)
