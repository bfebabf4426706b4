"""Report stage: the paper's tables, sweep plots and the compute table."""
