"""Rule compute_table: Table 4, GPU-hours per procedure from the attempt records of the jobs of this run."""

from pathlib import Path

from sarm.report.compute import attempts_of_targets, compute_frame
from sarm.report.tables import write_table
from sarm.runtime import log_to_file

log = log_to_file(snakemake.log[0])
targets = [path for path in snakemake.input if path != snakemake.input.reported]
jobs = attempts_of_targets(snakemake.params.benchmarks, targets)
for name, attempts in jobs.items():
    log.info("%s: %d attempt(s), %.0f s", name, len(attempts), sum(a.seconds for a in attempts))
frame = compute_frame(jobs, snakemake.input.reported)
caption = Path(snakemake.params.caption).read_text().strip()
write_table(frame, Path(snakemake.output.csv).with_suffix(""), caption, decimals=3)
