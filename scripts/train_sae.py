"""Rule train_sae: a TopK SAE on the activations of one layer, streamed from every sampling part."""

from pathlib import Path

import torch

from sarm.backbone import device_and_dtype
from sarm.runtime import log_to_file
from sarm.sae.model import TopKSAE
from sarm.sae.train import SAETrainConfig, train_sae

log = log_to_file(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
settings = dict(snakemake.params.sae)
hyper = {key: settings.pop(key) for key in ("latents", "k", "relu", "standardize_input")}
layer = int(snakemake.wildcards.layer)
cfg = SAETrainConfig.from_dict(settings)
reader = cfg.make_reader([Path(d) for d in snakemake.input.activations], layer)
sae = TopKSAE(
    reader.d_model,
    int(snakemake.wildcards.latents),
    int(snakemake.wildcards.k),
    relu=hyper["relu"],
    standardize_input=hyper["standardize_input"],
    seed=cfg.seed,
)
device, _ = device_and_dtype()
metrics = train_sae(reader, sae.to(device), cfg, Path(snakemake.output.sae).parent, log)
log.info("final metrics: %s", metrics)
