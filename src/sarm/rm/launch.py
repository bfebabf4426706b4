"""One reward-model training job, as the workflow describes it: build the model, read the data, train.

The job is plain JSON so a SLURM job with several GPUs can hand it to torchrun:
`python -m torch.distributed.run --nproc_per_node N -m sarm.rm.launch job.json`.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from sarm.backbone import load_tokenizer
from sarm.data.specs import load_dataset_spec
from sarm.rm.bradley_terry import BTTrainConfig, train_reward_model
from sarm.rm.final_states import load_final_token_states
from sarm.rm.models import RewardModel, build_sarm, build_vanilla_rm, random_sae_like
from sarm.rm.pairs import CachedPairs, tokenize_pairs
from sarm.sae.model import TopKSAE

log = logging.getLogger(__name__)

# Keys of the workflow's `reward_model` section that are not training hyperparameters.
_NOT_TRAINING = ("heldout_fraction", "batch_tokens", "head_input", "head_init")


@dataclass
class RewardModelJob:
    backbone: str  # hub id or local folder
    layer: int
    encoder: str  # sequence | token | random (SARM) or vanilla
    out_dir: str
    preferences: dict  # data.preferences of the config: source, split, limit
    reward_model: dict  # the config's reward_model section
    sae_dir: str | None = (
        None  # pretrained SAE (for `random`: the SAE whose shape and input scale are copied)
    )
    states: str | None = None  # cached final-token states (frozen backbone) or None

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
    sae = TopKSAE.load(job.sae_dir)
    if job.encoder == "random":
        sae = random_sae_like(sae, seed=job.reward_model.get("seed", 0))
    return build_sarm(
        job.backbone,
        job.layer,
        sae,
        head_input=job.reward_model["head_input"],
        head_init=job.reward_model["head_init"],
        encoder_origin="random" if job.encoder == "random" else f"pretrained ({job.encoder}-level SAE)",
        with_backbone=with_backbone,
    )


def training_data(job: RewardModelJob, cfg: BTTrainConfig):
    """(train, held-out) pairs: cached final-token states, or tokenized conversations."""
    if job.states is not None:
        pairs = CachedPairs.from_states(load_final_token_states(job.states, job.layer))
    else:
        tokenizer = load_tokenizer(job.backbone)
        pairs = tokenize_pairs(tokenizer, load_dataset_spec("preferences", job.preferences), cfg.max_length)
    train, heldout = heldout_split(len(pairs), job.reward_model["heldout_fraction"], cfg.seed)
    log.info("%d training pairs, %d held out", len(train), len(heldout))
    return _subset(pairs, train), (_subset(pairs, heldout) if len(heldout) else None)


def _subset(pairs, indices):
    if isinstance(pairs, CachedPairs):
        index = torch.as_tensor(indices)
        return CachedPairs(pairs.chosen[index], pairs.rejected[index])
    return type(pairs)([pairs.chosen[i] for i in indices], [pairs.rejected[i] for i in indices], pairs.pad_id)


def run(job: RewardModelJob) -> None:
    cfg = job.training_config()
    model = build_model(job)
    train, heldout = training_data(job, cfg)
    train_reward_model(model, train, cfg, job.out_dir, heldout=heldout)  # saves the model when done


def launch(job: RewardModelJob, gpus: int) -> None:
    """Train in this process, or under torchrun with one process per GPU when several are visible."""
    if gpus <= 1 or job.states is not None:
        run(job)
        return
    spec = Path(job.out_dir) / "job.json"
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps(asdict(job), indent=2))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}"]
    command += ["-m", "sarm.rm.launch", str(spec)]
    log.info("launching %s", " ".join(command))
    subprocess.run(command, check=True)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    (path,) = argv if argv is not None else sys.argv[1:]
    run(RewardModelJob(**json.loads(Path(path).read_text())))


if __name__ == "__main__":
    main()
