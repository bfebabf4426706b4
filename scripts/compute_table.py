"""Rule compute_table: Table 4, hours per procedure from the benchmark files of this run."""

from pathlib import Path

from sarm.report.compute import benchmarks_by_procedure, device_name
from sarm.report.tables import compute_table, write_table
from sarm.runtime import log_to_file

log = log_to_file(snakemake.log[0])
benchmarks = benchmarks_by_procedure(snakemake.params.benchmarks)
for procedure, files in benchmarks.items():
    log.info("%s: %d benchmark files", procedure, len(files))
frame = compute_table(benchmarks, device_name(), snakemake.input.reported)
caption = Path(snakemake.params.caption).read_text().strip()
write_table(frame, Path(snakemake.output.csv).with_suffix(""), caption, decimals=3)
