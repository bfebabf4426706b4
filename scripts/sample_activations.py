"""Rule sample_activations: residual-stream activations of one corpus part at every needed layer.

Shards accumulate in `<output>.partial/` (Snakemake clears a directory output before a job starts, so
resuming after preemption needs a place it does not touch) and move into place when complete.
"""

from pathlib import Path

import torch

from sarm.backbone import device_and_dtype, load_decoder, load_tokenizer
from sarm.data.corpus import read_sentence_part
from sarm.params import with_bookkeeping
from sarm.runtime import log_to_file, publish
from sarm.sae.sampling import sample_activations

log = log_to_file(snakemake.log[0])
sampling = with_bookkeeping(snakemake.params.sampling, snakemake.config, "sampling")
torch.set_num_threads(snakemake.threads)
layers = list(snakemake.params.layers)
device, compute_dtype = device_and_dtype()
output = Path(snakemake.output.activations)
partial = output.with_name(output.name + ".partial")

decoder = load_decoder(snakemake.params.backbone, max(layers), dtype=compute_dtype).to(device)
manifest = sample_activations(
    decoder,
    load_tokenizer(snakemake.params.backbone),
    read_sentence_part(snakemake.input.sentences),
    layers=layers,
    level=snakemake.wildcards.level,
    out_dir=partial,
    shard_rows=sampling["shard_rows"],
    storage_dtype=getattr(torch, sampling["storage_dtype"]),
    batch_tokens=sampling["batch_tokens"],
    skip_first_tokens=sampling["skip_first_tokens"] if snakemake.wildcards.level != "sequence" else 0,
    device=device,
    compute_dtype=compute_dtype,
)
publish(partial, output)
log.info("layers %s: %s rows per layer", layers, manifest.get("rows"))
