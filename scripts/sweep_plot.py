"""Rule sweep_plot: RewardBench 2 Overall along one Table 3 sweep, reproduced and reported."""

import pandas as pd

from sarm.report.plots import sweep_plot
from sarm.runtime import log_to_file

log = log_to_file(snakemake.log[0])
sweep_plot(pd.read_csv(snakemake.input.table), snakemake.wildcards.kind, snakemake.output.plot)
log.info("wrote %s", snakemake.output.plot)
