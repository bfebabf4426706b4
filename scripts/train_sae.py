"""Rule train_sae: a TopK SAE on the activations of one layer, streamed from every sampling part."""

from pathlib import Path

import torch

from sarm.backbone import device_and_dtype
from sarm.runtime import log_to_file
from sarm.sae.model import TopKSAE
from sarm.sae.train import SAETrainConfig, train_sae

log = log_to_file(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
wildcards = snakemake.wildcards
cfg = SAETrainConfig.from_config(snakemake.params.sae, int(wildcards.latents), int(wildcards.k))
reader = cfg.make_reader([Path(d) for d in snakemake.input.activations], int(wildcards.layer))
sae = TopKSAE(reader.d_model, cfg.sae, seed=cfg.seed)
device, _ = device_and_dtype()
metrics = train_sae(reader, sae.to(device), cfg, Path(snakemake.output.sae).parent, log)
log.info("final metrics: %s", metrics)
