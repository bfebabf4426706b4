"""Rule detection_scores: does the explanation let a judge pick the activating contexts?"""

import pandas as pd

from sarm.interpret.detection import DetectionConfig, build_judge, detection_scores
from sarm.interpret.explainers import ExplainerConfig, build_explainer
from sarm.runtime import log_to_file, write_parquet_atomic

log = log_to_file(snakemake.log[0])
interpret = snakemake.params.interpret
config = DetectionConfig.from_config(interpret)
explainer = build_explainer(
    ExplainerConfig.from_config(interpret["explainer"]),
    snakemake.params.cache,
    snakemake.params.explainer_path,
)
judge = build_judge(config.judge, explainer)
scores = detection_scores(
    pd.read_parquet(snakemake.input.contexts),
    pd.read_parquet(snakemake.input.background),
    pd.read_parquet(snakemake.input.explanations),
    judge,
    config,
)
write_parquet_atomic(scores, snakemake.output.detection)
log.info(
    "detection (%s judge): mean accuracy %.3f over %d features",
    judge.name,
    scores["accuracy"].mean(),
    len(scores),
)
