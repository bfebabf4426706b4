"""Rule results_table: Tables 1-3 from rewardbench2.json files, beside the paper's reported rows."""

from pathlib import Path

from sarm.report.bootstrap import BootstrapConfig
from sarm.report.tables import ResultRow, results_table, write_table
from sarm.runtime import log_to_file

log = log_to_file(snakemake.log[0])
table = f"table{snakemake.wildcards.n}"
rows = [ResultRow(**row) for row in snakemake.params.rows]
bootstrap = BootstrapConfig(**snakemake.params.bootstrap)
log.info("%s: %d reproduced rows, %d bootstrap resamples each", table, len(rows), bootstrap.resamples)
frame = results_table(rows, snakemake.input.reported, table=table, bootstrap=bootstrap)
caption = Path(snakemake.params.caption).read_text().strip()
write_table(
    frame, Path(snakemake.output.csv).with_suffix(""), caption, decimals=2 if table == "table3" else 1
)
log.info("%s: %d rows", table, len(frame))
