"""Rule feature_cards: the paper's case studies, top positive and negative features of the value head."""

from pathlib import Path

import pandas as pd

from sarm.interpret.cards import feature_cards, write_feature_cards
from sarm.rm.models import load_reward_model
from sarm.runtime import log_to_file

log = log_to_file(snakemake.log[0])
model_dir = Path(snakemake.input.model).parent
cards = feature_cards(
    load_reward_model(model_dir, with_backbone=False).head_weight(),
    pd.read_parquet(snakemake.input.explanations),
    pd.read_parquet(snakemake.input.detection),
    pd.read_parquet(snakemake.input.contexts),
    per_sign=snakemake.params.interpret["cards"],
)
title = f"Feature cards: {snakemake.wildcards.backbone} layer {snakemake.wildcards.layer}, {snakemake.wildcards.variant}"
write_feature_cards(cards, snakemake.output.cards, snakemake.output.figure, title)
log.info("%d cards", len(cards))
