"""What every long job shares: atomic writes, resume checks, stopping on SIGTERM, loss logs, logging.

Standard library only, so that any module (and the workflow) can import it without torch.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import torch

log = logging.getLogger(__name__)

PREEMPTED_EXIT_CODE = 128 + signal.SIGTERM  # 143: what schedulers expect from a job stopped by SIGTERM


def publish(source: str | Path, path: str | Path) -> Path:
    """Rename the finished file or folder `source` to `path` in one step: readers see all of it or nothing."""
    os.replace(source, path)
    return Path(path)


@contextlib.contextmanager
def atomic_paths(*paths: str | Path) -> Iterator[list[Path]]:
    """Temporary paths beside `paths`, published together when the block succeeds, removed if it fails.

    A temporary may become a file or a folder; on failure the targets are left untouched.
    """
    targets = [Path(path) for path in paths]
    temps = [path.with_name(f".{path.name}.{os.getpid()}.tmp") for path in targets]
    for path in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield temps
        for tmp, path in zip(temps, targets, strict=True):
            publish(tmp, path)
    except BaseException:
        for tmp in temps:
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp)
            else:
                tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` on a temporary path beside `path` (a file or a folder), then rename it into place.

    On any failure the temporary is removed and the error propagates; `path` is left untouched.
    """
    with atomic_paths(path) as (tmp,):
        write(tmp)
    return Path(path)


def write_text_atomic(text: str, path: str | Path) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(data: Any, path: str | Path) -> Path:
    return write_text_atomic(json.dumps(data, indent=2, sort_keys=True) + "\n", path)


def write_parquet_atomic(table: pd.DataFrame, path: str | Path) -> Path:
    return atomic_write(path, lambda tmp: table.to_parquet(tmp, index=False))


def write_csv_atomic(rows: Iterable[Mapping[str, Any]], path: str | Path, columns: Iterable[str]) -> Path:
    """`rows` under a header of `columns` (csv module defaults: comma, minimal quoting, CRLF line ends)."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(columns))
            writer.writeheader()
            writer.writerows(rows)

    return atomic_write(path, write)


def fingerprint(*parts: Any) -> str:
    """A short hash of JSON-able `parts`, to recognise the same input on a rerun."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def check_resumable(
    found: Mapping[str, Any], wanted: Mapping[str, Any], where: str | Path, may_change: Collection[str] = ()
) -> None:
    """Raise ValueError naming each key (outside `may_change`) where saved `found` and requested `wanted` differ."""
    changed = sorted(
        key for key in {*found, *wanted} if key not in may_change and found.get(key) != wanted.get(key)
    )
    if changed:
        detail = "; ".join(
            f"`{key}`: saved {found.get(key)!r}, requested {wanted.get(key)!r}" for key in changed
        )
        raise ValueError(f"{where} was written with other settings ({detail}); delete it to start over")


class Preempted(SystemExit):
    """SIGTERM arrived and a checkpoint was written at `step`: exit with 143; run the same job again to resume."""

    def __init__(self, step: int):
        super().__init__(PREEMPTED_EXIT_CODE)
        self.step = step


class TerminationFlag:
    """While entered, SIGTERM sets `requested` instead of killing the process, so a loop can checkpoint first.

    Only the main thread can install signal handlers; in another thread the flag never rises.
    """

    def __init__(self):
        self.requested = False
        self._installed = False
        self._previous = None

    def __enter__(self) -> TerminationFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True
        return self

    def _handle(self, signum, frame) -> None:
        log.warning("SIGTERM received: stopping at the next safe point to write a checkpoint")
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._installed:
            # None means the handler was not set from Python: fall back to the default action.
            signal.signal(signal.SIGTERM, signal.SIG_DFL if self._previous is None else self._previous)
            self._installed = False


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's (first) parameter."""
    return next(module.parameters()).device


def log_to_file(path: str | Path) -> logging.Logger:
    """Send logging, warnings and stderr (tqdm) of this process to `path`; return the `sarm` logger."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stream = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    sys.stderr = stream
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.StreamHandler(stream)],
        force=True,
    )
    logging.captureWarnings(True)
    for key in ("SLURM_JOB_ID", "SLURM_JOB_NODELIST", "CUDA_VISIBLE_DEVICES"):
        if key in os.environ:
            logging.getLogger("sarm").info("%s=%s", key, os.environ[key])
    from sarm.report.compute import record_attempt  # Table 4: every attempt of every job, timed by itself

    record_attempt(path)
    return logging.getLogger("sarm")
