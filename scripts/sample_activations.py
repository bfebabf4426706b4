"""Rules sample_activations / sample_activations_levels: residual-stream activations of one corpus part at
every needed layer, for one level or (one forward pass) for both the sequence and token levels.

Shards accumulate in `<output>.partial/` (Snakemake clears a directory output before a job starts, so
resuming after preemption needs a place it does not touch) and move into place when complete.
"""

from pathlib import Path

import torch

from sarm.backbone import device_and_dtype, inference_dtype, load_decoder, load_tokenizer
from sarm.data.corpus import read_sentence_part
from sarm.params import with_bookkeeping
from sarm.runtime import log_to_file, publish
from sarm.sae.sampling import sample_levels

log = log_to_file(snakemake.log[0])
sampling = with_bookkeeping(snakemake.params.sampling, snakemake.config, "sampling")
torch.set_num_threads(snakemake.threads)
layers = list(snakemake.params.layers)
device, _ = device_and_dtype()
compute_dtype = inference_dtype(snakemake.params.inference_dtype, device)
if "activations" in snakemake.output.keys():
    outputs = {snakemake.wildcards.level: Path(snakemake.output.activations)}
else:
    outputs = {level: Path(snakemake.output[level]) for level in ("sequence", "token")}
partials = {level: output.with_name(output.name + ".partial") for level, output in outputs.items()}

decoder = load_decoder(snakemake.params.backbone, max(layers), dtype=compute_dtype).to(device)
manifests = sample_levels(
    decoder,
    load_tokenizer(snakemake.params.backbone),
    read_sentence_part(snakemake.input.sentences),
    layers=layers,
    out_dirs=partials,
    shard_rows=sampling["shard_rows"],
    storage_dtype=getattr(torch, sampling["storage_dtype"]),
    batch_tokens=sampling["batch_tokens"],
    skip_first_tokens=sampling.get("skip_first_tokens", 0),
    device=device,
    compute_dtype=compute_dtype,
)
for level, output in outputs.items():
    publish(partials[level], output)
    log.info("%s level, layers %s: %s rows per layer", level, layers, manifests[level].get("rows"))
