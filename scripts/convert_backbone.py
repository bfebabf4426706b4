"""Rule convert_backbone: GGUF shipped in a Python package -> Hugging Face folder."""

from sarm.backbone import convert_gguf
from sarm.runtime import log_to_file

log = log_to_file(snakemake.log[0])
log.info("converting %s", snakemake.params.source)
convert_gguf(snakemake.params.source, snakemake.output.model)
log.info("wrote %s", snakemake.output.model)
