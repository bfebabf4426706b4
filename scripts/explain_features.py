"""Rule explain_features: an explanation for each of the features with the largest head weights.

The API key (kind openai) is read from the environment inside the explainer, never from params.
"""

from pathlib import Path

import pandas as pd

from sarm.interpret.explainers import ExplainerConfig, build_explainer, explain_features, features_to_explain
from sarm.rm.models import load_reward_model
from sarm.runtime import log_to_file, write_parquet_atomic

log = log_to_file(snakemake.log[0])
interpret = snakemake.params.interpret
contexts = pd.read_parquet(snakemake.input.contexts)
head_weight = load_reward_model(Path(snakemake.input.model).parent, with_backbone=False).head_weight()
features = features_to_explain(head_weight, contexts, interpret["max_features"])
explainer = build_explainer(
    ExplainerConfig.from_config(interpret["explainer"]),
    snakemake.params.cache,
    snakemake.params.explainer_path,
)
explanations = explain_features(
    contexts, features, explainer, interpret["top_contexts"], pd.read_parquet(snakemake.input.background)
)
write_parquet_atomic(explanations, snakemake.output.explanations)
log.info("explanations by %s: %s", explainer.name, explanations["status"].value_counts().to_dict())
