"""SARM (truncated backbone -> frozen SAE encoder -> linear value head on the latents) and a vanilla RM.

Both read the residual stream at the final token of the chat-formatted prompt + response:
    SARM:    r = sum_i z_i w_i,  z = TopK(W_enc (x' - b_pre) + b_enc)  (no bias in the head)
    vanilla: r = w . x           (x through the backbone's final norm when the layer is the full depth)

The SARM value head starts at zero (`head_init="zero"`, the authors' code; the paper's weights of 1e-4..1e-3
fit a zero start at lr 4e-6), so the sign of a learned weight says whether its feature raises or lowers the
reward; a random start (`"normal"`, std 0.02) would leave most signs as initialised after ~460 steps. The
vanilla RM keeps the usual normal init of a sequence-classification head.

Table 2's random-init ablation: the paper replaces the SAE encoder "with a randomly initialized linear layer
containing the same number of parameters", and the authors' code trains a plain nn.Linear(d, M) with bias
(no TopK, no input normalisation) before the head: `LinearEncoder` (experiment `encoder: random`). A frozen
random TopK SAE of the pretrained SAE's shape is the other variant, `random_sae_like` (`encoder: random_topk`).
"""

from __future__ import annotations

import copy
import json
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from sarm.backbone import device_and_dtype, last_token_index, load_decoder
from sarm.rm.backbone_record import backbone_record, resolve_backbone
from sarm.rm.head_edits import apply_head_edits, read_head_edits
from sarm.rm.last_token import last_token_block, supports_last_token
from sarm.runtime import atomic_write, write_json_atomic
from sarm.sae.model import TopKSAE

log = logging.getLogger(__name__)

CONFIG_FILE = "reward_model.json"
WEIGHTS_FILE = "reward_model.safetensors"
SAE_DIR = "sae"
FORMAT_VERSION = 1
HEAD_INPUTS = ("topk", "pre_activations")
HEAD_INITS = ("zero", "normal")
DEFAULT_HEAD_INPUT, DEFAULT_HEAD_INIT = "topk", "zero"  # the workflow schema has the same defaults
LINEAR_ENCODER_WEIGHTS, LINEAR_ENCODER_CONFIG = "linear_encoder.safetensors", "linear_encoder.json"
HEAD_INIT_STD = 0.02  # transformers' initializer_range, as for LlamaForSequenceClassification's score head


class RewardModelError(ValueError):
    """A reward model folder or head-edit spec is unusable; the message names the file and field."""


def full_precision(tensor: torch.Tensor) -> torch.autocast:
    """Autocast off: the SAE's TopK selection and the reward stay float32 even in a bf16 training step."""
    return torch.autocast(device_type=tensor.device.type, enabled=False)


class RewardModel(nn.Module, ABC):
    """A decoder cut after `layer` layers, read at the final token; subclasses map that state to a reward."""

    kind = ""

    def __init__(self, decoder: nn.Module | None, backbone_source: str, layer: int):
        super().__init__()
        self.decoder = decoder
        self.backbone_source = backbone_source
        self.layer = layer
        self.trained_parts: set[str] = {"head"}
        # Set when only decoder layers first_trained_layer..layer-1 train (reward_model.train_layers: N).
        self.first_trained_layer: int | None = None
        if decoder is not None and decoder.config.num_hidden_layers != layer:
            raise ValueError(
                f"decoder has {decoder.config.num_hidden_layers} layers but the model reads layer {layer}"
            )

    def residual(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, T, d) residual stream after `layer` layers (the decoder's final norm is an Identity)."""
        if self.decoder is None:
            raise RuntimeError(
                "this reward model was built without its backbone (cached-state mode); "
                "load it with load_reward_model(dir) to score text"
            )
        return self.decoder(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state

    def residual_from(self, hidden: torch.Tensor, attention_mask: torch.Tensor, start: int) -> torch.Tensor:
        """(B, T, d) residual stream after `layer` layers, from the right-padded states after `start` layers."""
        hidden, mask, rotary, positions = self._from_cached(hidden, attention_mask, start)
        for block in self.decoder.layers[start : self.layer]:
            hidden = block(hidden, attention_mask=mask, position_embeddings=rotary, position_ids=positions)
        return self.decoder.norm(hidden)

    def _from_cached(self, hidden: torch.Tensor, attention_mask: torch.Tensor, start: int) -> tuple:
        """What decoder layers start..layer-1 need, as the decoder's own forward makes it: positions 0..T-1
        (right padding), their rotary embeddings, the causal mask combined with the padding mask."""
        decoder = self.decoder
        if decoder is None:
            raise RuntimeError("running the top decoder layers needs the backbone: load it with_backbone")
        if not 0 <= start < self.layer:
            raise ValueError(f"states after {start} layers cannot feed layers {start}..{self.layer - 1}")
        if any(kind != "full_attention" for kind in getattr(decoder.config, "layer_types", None) or ()):
            raise NotImplementedError("starting from cached states needs a backbone with full attention only")
        from transformers.masking_utils import create_causal_mask  # seconds to import: only where it runs

        positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        mask = create_causal_mask(
            config=decoder.config,
            inputs_embeds=hidden,
            attention_mask=attention_mask,
            past_key_values=None,
            position_ids=positions,
        )
        return hidden, mask, decoder.rotary_emb(hidden, position_ids=positions), positions

    def final_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, d) residual state at each row's last real token (right padding)."""
        return _at_last_token(self.residual(input_ids, attention_mask), attention_mask)

    def final_states_from(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor, start: int
    ) -> torch.Tensor:
        """(B, d) final-token state at the model's layer, from the per-token states after `start` layers.

        The top layer runs for the final token only where its layout allows (`sarm.rm.last_token`)."""
        top = self.decoder.layers[self.layer - 1] if self.decoder is not None else None
        if top is None or not supports_last_token(top):
            return _at_last_token(self.residual_from(hidden, attention_mask, start), attention_mask)
        hidden, mask, rotary, positions = self._from_cached(hidden, attention_mask, start)
        for block in self.decoder.layers[start : self.layer - 1]:
            hidden = block(hidden, attention_mask=mask, position_embeddings=rotary, position_ids=positions)
        return self.decoder.norm(last_token_block(top, hidden, attention_mask, rotary))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Rewards (B,)."""
        return self.rewards_from_states(self.final_states(input_ids, attention_mask))

    @abstractmethod
    def rewards_from_states(self, states: torch.Tensor) -> torch.Tensor:
        """Rewards (B,) from final-token residual states (B, d) at the model's layer."""

    def head_weight(self) -> torch.Tensor:
        """The value head's weights as a vector (one per feature)."""
        return self.head.weight[0]

    def extra_config(self) -> dict[str, Any]:
        return {}


def _at_last_token(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return hidden[rows, last_token_index(attention_mask)]


class LinearEncoder(nn.Module):
    """Table 2's random-init encoder as the paper and the authors' code (`LlamaBaseline`) have it:
    nn.Linear(d, M) with bias, randomly initialised (N(0, 0.02), bias 0, seeded) and trained with the head;
    no TopK and no input normalisation, so every one of the M outputs reaches the head."""

    def __init__(self, d_model: int, latents: int, *, seed: int | None = None):
        super().__init__()
        for name, value in (("d_model", d_model), ("latents", latents)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LinearEncoder: `{name}` must be a positive integer, got {value!r}")
        self.d_model = d_model
        self.linear = nn.Linear(d_model, latents)
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        with (
            torch.no_grad()
        ):  # as transformers' post_init does in the authors' LlamaBaseline: N(0, 0.02), bias 0
            self.linear.weight.normal_(0.0, HEAD_INIT_STD, generator=generator)
            self.linear.bias.zero_()

    @property
    def latents(self) -> int:
        return self.linear.out_features

    def normalize_input(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.linear.weight.dtype)

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.normalize_input(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The features the head reads: all M outputs of the linear layer (dense, signed)."""
        return self.pre_activations(x)

    def save(self, directory: str | Path, info: dict | None = None) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {name: t.detach().contiguous().cpu() for name, t in self.state_dict().items()}
        atomic_write(directory / LINEAR_ENCODER_WEIGHTS, lambda tmp: save_file(tensors, tmp))
        config = {"kind": "linear", "d_model": self.d_model, "latents": self.latents, "info": info or {}}
        write_json_atomic(config, directory / LINEAR_ENCODER_CONFIG)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> LinearEncoder:
        directory = Path(directory)
        config_path = directory / LINEAR_ENCODER_CONFIG
        if not config_path.is_file():
            raise RewardModelError(
                f"{config_path} is missing: is {directory} a folder written by LinearEncoder.save?"
            )
        config = json.loads(config_path.read_text())
        encoder = cls(config["d_model"], config["latents"])
        encoder.load_state_dict(load_file(directory / LINEAR_ENCODER_WEIGHTS))
        return encoder


class SARM(RewardModel):
    """Truncated backbone, SAE encoder at layer l (frozen unless trained with a reconstruction loss), value head.

    With a `LinearEncoder` (the paper's random-init ablation) the encoder is trained with the head.
    """

    kind = "sarm"

    def __init__(
        self,
        decoder: nn.Module | None,
        sae: TopKSAE | LinearEncoder,
        *,
        backbone_source: str,
        layer: int,
        head_input: str = DEFAULT_HEAD_INPUT,
        head_init: str = DEFAULT_HEAD_INIT,
        encoder_origin: str = "pretrained",
    ):
        super().__init__(decoder, backbone_source, layer)
        if head_input not in HEAD_INPUTS:
            raise ValueError(f"head_input must be one of {HEAD_INPUTS}, got {head_input!r}")
        if head_init not in HEAD_INITS:
            raise ValueError(f"head_init must be one of {HEAD_INITS}, got {head_init!r}")
        if decoder is not None and decoder.config.hidden_size != sae.d_model:
            raise ValueError(
                f"SAE expects d_model={sae.d_model}, backbone hidden size is {decoder.config.hidden_size}"
            )
        self.sae = sae.requires_grad_(False)
        self.trains_encoder = isinstance(sae, LinearEncoder)  # bradley_terry unfreezes it with the head
        self.head = nn.Linear(sae.latents, 1, bias=False)
        self.head_input, self.head_init, self.encoder_origin = head_input, head_init, encoder_origin
        with torch.no_grad():
            if head_init == "zero":
                self.head.weight.zero_()
            else:
                self.head.weight.normal_(0.0, HEAD_INIT_STD)

    def features(self, states: torch.Tensor) -> torch.Tensor:
        """What the head reads for raw residual states (…, d): TopK z (paper) or all pre-activations (upstream)."""
        with full_precision(states):
            if self.head_input == "pre_activations":
                return self.sae.pre_activations(states.float())
            return self.sae.encode(states.float())

    def rewards_from_states(self, states: torch.Tensor) -> torch.Tensor:
        return self.rewards_from_features(self.features(states))

    def rewards_from_features(self, features: torch.Tensor) -> torch.Tensor:
        with full_precision(features):
            return self.head(features).squeeze(-1)

    def latents(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, M) features at the final token."""
        return self.features(self.final_states(input_ids, attention_mask))

    def token_latents(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, T, M) features at every token. With a (B, T) padding mask they are zero at padding; a packed
        batch (`sarm.packing`: (B, 1, T, T) mask and position_ids) leaves its padding as computed."""
        features = self.features(self.residual(input_ids, attention_mask, position_ids))
        if attention_mask.dim() == 2:
            features = features * attention_mask.unsqueeze(-1).to(features.dtype)
        return features

    def contributions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, M) per-feature terms z_i w_i; they sum to the reward."""
        return self.contributions_from_states(self.final_states(input_ids, attention_mask))

    def contributions_from_states(self, states: torch.Tensor) -> torch.Tensor:
        return self.features(states) * self.head_weight()

    def reconstruction_loss(self, states: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Sum over states of the SAE's normalised MSE ||x^ - x'||^2 / ||x'||^2 (x' = normalised input).

        With `mask` (B, T), `states` are (B, T, d) residuals and each conversation contributes the mean of
        that loss over its masked tokens (the authors' masked normalised MSE over the last assistant turn,
        their mode 3). The states are detached, as upstream does: this loss trains the SAE only.
        """
        if not isinstance(self.sae, TopKSAE):
            raise ValueError("a reconstruction loss needs an SAE; this SARM has a plain linear encoder")
        target = self.sae.normalize_input(states.detach().float())
        reconstruction, _ = self.sae(states.detach().float())
        per_state = (reconstruction - target).pow(2).sum(-1) / target.pow(2).sum(-1).clamp_min(1e-12)
        if mask is None:
            return per_state.sum()
        mask = mask.to(per_state.dtype)
        return ((per_state * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)).sum()

    def extra_config(self) -> dict[str, Any]:
        return {
            "head_input": self.head_input,
            "head_init": self.head_init,
            "encoder_origin": self.encoder_origin,
            "encoder": "linear" if isinstance(self.sae, LinearEncoder) else "topk_sae",
        }


class VanillaRM(RewardModel):
    """Conventional reward model: a linear head (no bias) on the hidden state at layer l, final token."""

    kind = "vanilla"

    def __init__(
        self,
        decoder: nn.Module | None,
        *,
        backbone_source: str,
        layer: int,
        hidden_size: int,
        final_norm: nn.Module | None,
    ):
        super().__init__(decoder, backbone_source, layer)
        self.final_norm = final_norm if final_norm is not None else nn.Identity()
        self.head = nn.Linear(hidden_size, 1, bias=False)
        with torch.no_grad():
            self.head.weight.normal_(0.0, HEAD_INIT_STD)

    def rewards_from_states(self, states: torch.Tensor) -> torch.Tensor:
        with full_precision(states):
            return self.head(self.final_norm(states.float())).squeeze(-1)

    def contributions_from_states(self, states: torch.Tensor) -> torch.Tensor:
        return self.final_norm(states.float()) * self.head_weight()

    def extra_config(self) -> dict[str, Any]:
        return {
            "hidden_size": self.head.in_features,
            "final_norm": not isinstance(self.final_norm, nn.Identity),
        }


def random_sae_like(sae: TopKSAE, seed: int) -> TopKSAE:
    """The `random_topk` variant (not the paper's ablation, see `LinearEncoder`): a frozen random TopK SAE of
    the same shape and switches; the input scale is copied so it sees inputs normalised as the pretrained
    one does."""
    random = TopKSAE(sae.d_model, sae.cfg, seed=seed)
    random.input_scale.copy_(sae.input_scale)
    return random


def final_norm_of(source: str, decoder: nn.Module) -> nn.Module:
    """The backbone's final norm with its trained weight (load_decoder drops it; the vanilla RM at full depth
    reads the normalised state, as a conventional sequence-classification head does)."""
    norm = copy.deepcopy(decoder.layers[-1].post_attention_layernorm)
    weight = _checkpoint_tensor(source, ("model.norm.weight", "norm.weight"))
    with torch.no_grad():
        norm.weight.copy_(weight)
    return norm


def _checkpoint_tensor(source: str, names: tuple[str, ...]) -> torch.Tensor:
    from transformers.utils import cached_file

    index = cached_file(source, "model.safetensors.index.json", _raise_exceptions_for_missing_entries=False)
    if index:
        weight_map = json.loads(Path(index).read_text())["weight_map"]
        files = {weight_map[n] for n in names if n in weight_map}
    else:
        files = {"model.safetensors"}
    for filename in files:
        with safe_open(cached_file(source, filename), framework="pt") as f:
            for name in names:
                if name in f.keys():
                    return f.get_tensor(name)
    raise RewardModelError(f"backbone {source!r}: none of {names} in its safetensors checkpoint")


def build_sarm(
    backbone_source: str,
    layer: int,
    sae: TopKSAE | LinearEncoder,
    *,
    head_input: str = DEFAULT_HEAD_INPUT,
    head_init: str = DEFAULT_HEAD_INIT,
    encoder_origin: str = "pretrained",
    with_backbone: bool = True,
    dtype: torch.dtype = torch.float32,
) -> SARM:
    """A SARM on the first `layer` layers of a backbone (None with_backbone=False: cached-state training)."""
    decoder = load_decoder(backbone_source, layer, dtype) if with_backbone else None
    return SARM(
        decoder,
        sae,
        backbone_source=backbone_source,
        layer=layer,
        head_input=head_input,
        head_init=head_init,
        encoder_origin=encoder_origin,
    )


def build_vanilla_rm(
    backbone_source: str, layer: int, *, with_backbone: bool = True, dtype: torch.dtype = torch.float32
) -> VanillaRM:
    """A linear head on layer `layer`; at full depth it reads through the backbone's final norm."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(backbone_source)
    decoder = load_decoder(backbone_source, layer, dtype) if with_backbone else None
    final_norm = None
    if layer == config.num_hidden_layers:
        # Any decoder layer's norm has the final norm's class; one layer is enough to borrow it.
        final_norm = final_norm_of(backbone_source, decoder or load_decoder(backbone_source, 1, dtype))
    return VanillaRM(
        decoder,
        backbone_source=backbone_source,
        layer=layer,
        hidden_size=config.hidden_size,
        final_norm=final_norm,
    )


def save_reward_model(model: RewardModel, out_dir: str | Path) -> Path:
    """reward_model.json + reward_model.safetensors (+ sae/): the head and whatever else was trained.

    An untrained backbone is not copied: the JSON names its source and load_reward_model reloads it. Of a
    backbone trained only in its top layers, only those layers are stored; the others come from the source.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    store_backbone = "backbone" in model.trained_parts
    if store_backbone and model.decoder is None:
        raise RewardModelError("the backbone is marked trained but the model has no decoder to save")
    first = model.first_trained_layer if store_backbone else None
    tensors = {}
    for name, tensor in model.state_dict().items():
        if name.startswith("sae."):
            continue  # saved in the SAE's own format below
        if name.startswith("decoder.") and not (store_backbone and _in_layers_from(name, first or 0)):
            continue
        tensors[name] = tensor.detach().contiguous().cpu()
    if isinstance(model, SARM):
        model.sae.save(
            out_dir / SAE_DIR, info={"saved_by": "sarm.rm.models", "encoder_origin": model.encoder_origin}
        )
    atomic_write(out_dir / WEIGHTS_FILE, lambda tmp: save_file(tensors, tmp))
    config = {
        "format_version": FORMAT_VERSION,
        "kind": model.kind,
        **backbone_record(model.backbone_source, out_dir),  # portable: relative to out_dir + absolute
        "layer": model.layer,
        # top_layers: decoder layers first_trained_layer..layer-1 stored, the rest read from the source
        "backbone_weights": "top_layers" if first else "stored" if store_backbone else "source",
        **({"first_trained_layer": first} if first else {}),
        "trained": sorted(model.trained_parts),
        **model.extra_config(),
    }
    write_json_atomic(config, out_dir / CONFIG_FILE)
    return out_dir


def _in_layers_from(name: str, first: int) -> bool:
    """Whether a state-dict key belongs to the decoder's layers `first`.. (every decoder key for 0)."""
    if first == 0:
        return True
    parts = name.split(".")
    return parts[1] == "layers" and int(parts[2]) >= first


def load_reward_model(
    model_dir: str | Path,
    head_edits: str | Path | list[dict] | None = None,
    *,
    with_backbone: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> RewardModel:
    """Rebuild a reward model saved by `save_reward_model`, in eval mode, with optional head edits applied."""
    model_dir = Path(model_dir)
    config_path = model_dir / CONFIG_FILE
    if not config_path.is_file():
        raise RewardModelError(
            f"{config_path} is missing: is {model_dir} a folder written by save_reward_model?"
        )
    config = json.loads(config_path.read_text())
    for key in ("format_version", "kind", "backbone", "layer", "backbone_weights", "trained"):
        if key not in config:
            raise RewardModelError(f"{config_path}: missing key `{key}`")
    if config["format_version"] != FORMAT_VERSION:
        raise RewardModelError(
            f"{config_path}: format_version {config['format_version']!r}, expected {FORMAT_VERSION}"
        )
    default_device, default_dtype = device_and_dtype()
    device, dtype = device or default_device, dtype or default_dtype
    # A SARM without its backbone needs no backbone files; a vanilla RM reads the backbone's config.
    needed = with_backbone or config["kind"] != "sarm"
    source, layer = resolve_backbone(config, model_dir, required=needed), config["layer"]
    if config["kind"] == "sarm":
        linear = config.get("encoder", "topk_sae") == "linear"
        model = build_sarm(
            source,
            layer,
            LinearEncoder.load(model_dir / SAE_DIR) if linear else TopKSAE.load(model_dir / SAE_DIR),
            head_input=config["head_input"],
            head_init=config["head_init"],
            encoder_origin=config.get("encoder_origin", "pretrained"),
            with_backbone=with_backbone,
            dtype=dtype,
        )
    elif config["kind"] == "vanilla":
        model = build_vanilla_rm(source, layer, with_backbone=with_backbone, dtype=dtype)
    else:
        raise RewardModelError(f"{config_path}: unknown `kind` {config['kind']!r} (expected sarm or vanilla)")
    stored = load_file(model_dir / WEIGHTS_FILE)
    if not with_backbone:
        stored = {k: v for k, v in stored.items() if not k.startswith("decoder.")}
    expected = {k for k in model.state_dict() if not k.startswith("sae.")}
    first = config.get("first_trained_layer", 0)
    if config["backbone_weights"] == "source" or not with_backbone:
        expected = {k for k in expected if not k.startswith("decoder.")}
    elif config["backbone_weights"] == "top_layers":
        expected = {k for k in expected if not k.startswith("decoder.") or _in_layers_from(k, first)}
    if set(stored) != expected:
        missing, extra = sorted(expected - set(stored)), sorted(set(stored) - expected)
        raise RewardModelError(
            f"{model_dir / WEIGHTS_FILE} does not match {config_path}: missing {missing[:5]}, unexpected {extra[:5]}"
        )
    model.load_state_dict(stored, strict=False)
    model.trained_parts = set(config["trained"])
    model.first_trained_layer = first or None
    if head_edits is not None:
        apply_head_edits(model, read_head_edits(head_edits))
    return model.to(device).eval()
