"""Rule plan: results/plan.md + .csv, the compute bill of the config's DAG checked against the SLURM profile."""

from sarm.plan import write_plan
from sarm.runtime import log_to_file

log = log_to_file(snakemake.log[0])
stem = snakemake.output.markdown.removesuffix(".md")
jobs = write_plan(dict(snakemake.params.config), snakemake.input.profile, snakemake.input.reported, stem)
log.info("%d planned jobs written to %s.md / .csv", sum(job.count for job in jobs), stem)
