"""One reward-model training job, as the workflow describes it: build the model, read the data, train.

The job is plain JSON so a SLURM job with several GPUs can hand it to torchrun:
`python -m torch.distributed.run --nproc_per_node N -m sarm.rm.launch job.json`.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from sarm.backbone import load_tokenizer
from sarm.data.chat import DEFAULT_DATE_STRING
from sarm.data.specs import load_dataset_spec
from sarm.rm.bradley_terry import BTTrainConfig, train_reward_model
from sarm.rm.final_states import load_final_token_states
from sarm.rm.models import (
    DEFAULT_HEAD_INIT,
    DEFAULT_HEAD_INPUT,
    LinearEncoder,
    RewardModel,
    build_sarm,
    build_vanilla_rm,
    random_sae_like,
)
from sarm.rm.pairs import CachedPairs, TokenStatePairs, tokenize_pairs
from sarm.rm.token_states import DEFAULT_STORAGE_DTYPE, load_token_states
from sarm.rm.train_layers import token_states_layer
from sarm.sae.model import TopKSAE

log = logging.getLogger(__name__)

# Keys of the workflow's `reward_model` section that are not training hyperparameters, with their defaults
# (the schema has the same ones; tests/test_config.py compares them).
MODEL_DEFAULTS = {
    "heldout_fraction": 0.0,  # the paper trains on all of Skywork; > 0 keeps a validation split
    "batch_tokens": 32768,
    "head_input": DEFAULT_HEAD_INPUT,
    "head_init": DEFAULT_HEAD_INIT,
    "date_string": DEFAULT_DATE_STRING,  # the date Llama-3 chat templates write (sarm.data.chat)
    "token_states_dtype": DEFAULT_STORAGE_DTYPE,  # of the per-token cache (train_layers: N)
}
_NOT_TRAINING = tuple(MODEL_DEFAULTS)
ENCODERS = ("sequence", "token", "sequence_punct", "random", "random_topk", "vanilla")


@dataclass
class RewardModelJob:
    backbone: str  # hub id or local folder
    layer: int
    encoder: (
        str  # sequence | token | sequence_punct (pretrained SAE) | random | random_topk (SARM) or vanilla
    )
    out_dir: str
    preferences: dict  # data.preferences of the config: source, split, limit
    reward_model: dict  # the config's reward_model section
    sae_dir: str | None = None  # pretrained SAE (for `random_topk`: the SAE whose shape and scale are copied)
    states: str | None = None  # cached final-token states (frozen backbone) or None
    token_states: str | None = None  # per-token states at layer l - train_layers (train_layers: N) or None
    latents: int | None = None  # M of the `random` linear encoder (default: the SAE's at sae_dir)

    def __post_init__(self):
        if self.encoder not in ENCODERS:
            raise ValueError(f"reward-model encoder must be one of {ENCODERS}, got {self.encoder!r}")
        self.reward_model = {**MODEL_DEFAULTS, **self.reward_model}

    def training_config(self) -> BTTrainConfig:
        settings = {k: v for k, v in self.reward_model.items() if k not in _NOT_TRAINING}
        return BTTrainConfig.from_mapping(settings, where="config key `reward_model`")


def heldout_split(num_pairs: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train / held-out indices."""
    order = np.random.default_rng(seed).permutation(num_pairs)
    heldout = int(round(num_pairs * fraction))
    return np.sort(order[heldout:]), np.sort(order[:heldout])


def build_model(job: RewardModelJob) -> RewardModel:
    with_backbone = job.states is None
    if job.encoder == "vanilla":
        return build_vanilla_rm(job.backbone, job.layer, with_backbone=with_backbone)
    seed = job.reward_model.get("seed", 0)
    if job.encoder == "random":  # the paper's Table 2 row: a trained nn.Linear(d, M) with bias
        latents = job.latents if job.latents is not None else TopKSAE.load(job.sae_dir).latents
        from transformers import AutoConfig

        sae = LinearEncoder(AutoConfig.from_pretrained(job.backbone).hidden_size, latents, seed=seed)
        origin = "random (trained linear layer, the paper's ablation)"
    elif job.encoder == "random_topk":
        sae = random_sae_like(TopKSAE.load(job.sae_dir), seed=seed)
        origin = "random (frozen random TopK SAE)"
    else:
        sae, origin = TopKSAE.load(job.sae_dir), f"pretrained ({job.encoder}-level SAE)"
    return build_sarm(
        job.backbone,
        job.layer,
        sae,
        head_input=job.reward_model["head_input"],
        head_init=job.reward_model["head_init"],
        encoder_origin=origin,
        with_backbone=with_backbone,
    )


def training_data(job: RewardModelJob, cfg: BTTrainConfig):
    """(train, held-out) pairs: cached final-token states, cached per-token states, or tokenized conversations."""
    first = token_states_layer(job.layer, cfg.train_layers, cfg.train_backbone)
    if job.token_states is not None and first is None:
        raise ValueError(
            f"{job.token_states}: per-token states are only read with `reward_model.train_layers` below the "
            f"read layer {job.layer} (got {cfg.train_layers!r})"
        )
    if job.states is not None:
        pairs = CachedPairs.from_states(load_final_token_states(job.states, job.layer))
    elif job.token_states is not None:
        pairs = TokenStatePairs.from_states(load_token_states(job.token_states, first))
    else:
        tokenizer = load_tokenizer(job.backbone)
        skipped = Path(job.out_dir) / "preferences.skipped_rows.jsonl"  # rows dropped by `bad_rows: skip`
        preferences = load_dataset_spec("preferences", job.preferences, skipped)
        pairs = tokenize_pairs(
            tokenizer,
            preferences,
            cfg.max_length,
            job.reward_model["date_string"],
            last_turns=cfg.recon_coef > 0 and cfg.recon_tokens == "assistant_turn",
        )
    train, heldout = heldout_split(len(pairs), job.reward_model["heldout_fraction"], cfg.seed)
    log.info("%d training pairs, %d held out", len(train), len(heldout))
    return _subset(pairs, train), (_subset(pairs, heldout) if len(heldout) else None)


def _subset(pairs, indices):
    if isinstance(pairs, CachedPairs):
        index = torch.as_tensor(indices)
        return CachedPairs(pairs.chosen[index], pairs.rejected[index])
    return pairs.subset(indices)


def run(job: RewardModelJob) -> None:
    cfg = job.training_config()
    # torch seeds its default generator at random in each process: without this, the head's initial
    # weights (and so the trained model) would differ between two runs of the same job.
    torch.manual_seed(cfg.seed)
    model = build_model(job)
    train, heldout = training_data(job, cfg)
    train_reward_model(model, train, cfg, job.out_dir, heldout=heldout)  # saves the model when done


def package_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child Python that must import this `sarm` (installed or only on sys.path).

    Rule scripts in a conda env reach the package through the sys.path Snakemake hands them, which a
    child process does not inherit; PYTHONPATH does.
    """
    environ = dict(os.environ if environ is None else environ)
    source = str(Path(__file__).resolve().parents[2])
    environ["PYTHONPATH"] = os.pathsep.join(p for p in (source, environ.get("PYTHONPATH")) if p)
    return environ


def launch(job: RewardModelJob, gpus: int) -> None:
    """Train in this process, or under torchrun with one process per GPU when several are visible."""
    if gpus <= 1 or job.states is not None or job.token_states is not None:
        run(job)
        return
    spec = Path(job.out_dir) / "job.json"
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps(asdict(job), indent=2))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}"]
    command += ["-m", "sarm.rm.launch", str(spec)]
    log.info("launching %s", " ".join(command))
    subprocess.run(command, check=True, env=package_env())


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    (path,) = argv if argv is not None else sys.argv[1:]
    run(RewardModelJob(**json.loads(Path(path).read_text())))


if __name__ == "__main__":
    main()
