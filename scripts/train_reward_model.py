"""Rules train_sarm and train_vanilla_rm: Bradley-Terry training of one reward model."""

from pathlib import Path

import torch

from sarm.params import with_bookkeeping
from sarm.rm.launch import RewardModelJob, launch
from sarm.runtime import log_to_file

log = log_to_file(snakemake.log[0])
reward_model = with_bookkeeping(snakemake.params.reward_model, snakemake.config, "reward_model")
torch.set_num_threads(snakemake.threads)
sae = snakemake.input.get("sae")
job = RewardModelJob(
    backbone=snakemake.params.backbone,
    layer=int(snakemake.wildcards.layer),
    encoder=snakemake.wildcards.get("encoder", "vanilla"),
    out_dir=str(Path(snakemake.output.model).parent),
    preferences=dict(snakemake.params.data),
    reward_model=dict(reward_model),
    sae_dir=str(Path(sae).parent) if sae else None,
    states=snakemake.input.get("states"),
    token_states=snakemake.input.get("token_states"),
    latents=int(latents) if (latents := snakemake.wildcards.get("latents")) else None,
)
launch(job, gpus=torch.cuda.device_count())
