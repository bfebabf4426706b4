"""Demo rows on disk: JSON lines, gzip whose bytes depend on the content only, atomic writes."""

from __future__ import annotations

import gzip
import io
import json
import logging
from pathlib import Path

from sarm.runtime import atomic_write

log = logging.getLogger(__name__)


def json_lines(rows: list[dict]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")


def gzip_bytes(data: bytes) -> bytes:
    """gzip without a timestamp or file name in the header, so the bytes depend on the content only."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as handle:
        handle.write(data)
    return buffer.getvalue()


def write_bytes_atomic(data: bytes, path: Path) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_demo(out: Path, files: dict[str, list[dict]]) -> None:
    """Each {file name: rows} as JSON lines in `out`, gzipped when the name ends in .gz."""
    for name, rows in files.items():
        data = json_lines(rows)
        write_bytes_atomic(gzip_bytes(data) if name.endswith(".gz") else data, out / name)
        log.info("wrote %s: %d rows", out / name, len(rows))
