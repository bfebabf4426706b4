"""Rule download (local, on the login node): one backbone or dataset of the config into the HF cache."""

from sarm.download import fetch
from sarm.runtime import log_to_file

log = log_to_file(snakemake.log[0])
wildcards = snakemake.wildcards
info = fetch(
    wildcards.kind, wildcards.name, snakemake.params.source, snakemake.params.spec, snakemake.output.record
)
log.info("%s", info)
