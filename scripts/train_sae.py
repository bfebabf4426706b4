"""Rule train_sae: a TopK SAE on the activations of one layer, streamed from every sampling part."""

from pathlib import Path

import torch

from sarm.backbone import device_and_dtype
from sarm.params import with_bookkeeping
from sarm.runtime import log_to_file
from sarm.sae.model import TopKSAE
from sarm.sae.train import SAETrainConfig, train_sae

log = log_to_file(snakemake.log[0])
sae_section = with_bookkeeping(snakemake.params.sae, snakemake.config, "sae")
torch.set_num_threads(snakemake.threads)
wildcards = snakemake.wildcards
cfg = SAETrainConfig.from_config(sae_section, int(wildcards.latents), int(wildcards.k))
parts = [Path(d) for d in snakemake.input.activations]
reader = cfg.make_reader(parts, int(wildcards.layer))
heldout = cfg.make_heldout_reader(parts, int(wildcards.layer))  # FVU, L0, dead latents on unseen rows
sae = TopKSAE(reader.d_model, cfg.sae, seed=cfg.seed)
device, _ = device_and_dtype()
metrics = train_sae(reader, sae.to(device), cfg, Path(snakemake.output.sae).parent, log, eval_reader=heldout)
log.info("final metrics: %s", metrics)
