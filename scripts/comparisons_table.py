"""Rule comparisons_table: A - B with paired bootstrap intervals for the pairs of tables.comparisons."""

from pathlib import Path

from sarm.report.bootstrap import BootstrapConfig
from sarm.report.comparisons import ComparedPair, comparisons_table
from sarm.report.tables import write_table
from sarm.runtime import log_to_file

log = log_to_file(snakemake.log[0])
pairs = [ComparedPair(**pair) for pair in snakemake.params.pairs]
bootstrap = BootstrapConfig(**snakemake.params.bootstrap)
log.info("%d comparison(s), %d paired bootstrap resamples each", len(pairs), bootstrap.resamples)
frame = comparisons_table(pairs, bootstrap)
caption = Path(snakemake.params.caption).read_text().strip()
write_table(frame, Path(snakemake.output.csv).with_suffix(""), caption, decimals=1, intervals="bounds")
log.info("comparisons: %d rows", len(frame))
