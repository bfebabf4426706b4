import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> Path:
    """A random tiny Llama with a ChatML tokenizer, as a Hugging Face folder."""
    from tests.tiny_llama import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama")


def snakemake_command(*args: str) -> list[str]:
    return [str(VENV_BIN / "snakemake"), *args]
