"""Fetch every Hugging Face backbone and dataset of the config once, on the login node, into one cache.

Compute nodes often have no internet, and 64 sampling jobs downloading the same 16 GB at once would be
slow anyway. The workflow's local rule `download` runs `fetch` for each hub id of the config; every
other job reads the cache in offline mode (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE, set by
`configure_environment`). The cache is `downloads.cache_dir` (it becomes HF_HOME) or, when null, the
HF_HOME of the environment. Gated models (Llama 3): run `hf auth login` once on the login node.

The DAG imports this module: standard library only at import time.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

# One record per fetched source: what was fetched, from where, into which cache.
DOWNLOADED = "results/downloads/{kind}/{name}.json"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
# Files of a model repository that transformers does not load (Llama repos ship a second copy of the
# weights as original/consolidated.*.pth).
SKIPPED_MODEL_FILES = ["original/*", "*.pth", "*.pt", "*.gguf", "*.onnx", "*.msgpack", "*.h5"]


def is_hub_id(source: Any) -> bool:
    """A `user/name` id that is not a local path (a local folder of that name wins, as in transformers)."""
    return isinstance(source, str) and bool(HUB_ID.match(source)) and not Path(source).exists()


def hub_sources(config: dict) -> dict[tuple[str, str], str]:
    """(kind, name) -> hub id for every backbone and dataset of the config that comes from the Hub."""
    sources = {("backbone", name): spec["source"] for name, spec in config["backbones"].items()}
    sources.update({("dataset", name): spec["source"] for name, spec in config["data"].items()})
    return {key: source for key, source in sources.items() if is_hub_id(source)}


def configure_environment(config: dict, environ: os._Environ | dict = os.environ) -> None:
    """HF_HOME from `downloads.cache_dir`; offline mode for every job when `downloads.offline_jobs`."""
    downloads = config.get("downloads", {})
    if downloads.get("cache_dir"):
        environ["HF_HOME"] = str(Path(downloads["cache_dir"]).expanduser().resolve())
    if downloads.get("offline_jobs", True) and hub_sources(config):
        for variable in OFFLINE_VARIABLES:
            environ[variable] = "1"


def fetch(kind: str, name: str, source: str, spec: dict, record: str | Path) -> dict:
    """Download one model snapshot or dataset into the cache (online, whatever the job environment says)."""
    for variable in OFFLINE_VARIABLES:
        os.environ[variable] = "0"
    if kind == "backbone":
        from huggingface_hub import snapshot_download

        where = snapshot_download(repo_id=source, ignore_patterns=SKIPPED_MODEL_FILES)
        info = {"snapshot": where}
    else:
        from sarm.data.specs import load_dataset_spec

        info = {"rows": len(load_dataset_spec(name, spec))}
    info = {"kind": kind, "name": name, "source": source, "hf_home": os.environ.get("HF_HOME"), **info}
    Path(record).parent.mkdir(parents=True, exist_ok=True)
    Path(record).write_text(json.dumps(info, indent=2) + "\n")
    return info
