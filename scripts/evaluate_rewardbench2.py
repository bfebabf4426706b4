"""Rule evaluate_rewardbench2: score every completion, then best-of-4 / Ties per subset and Overall."""

from pathlib import Path

import torch

from sarm.backbone import load_tokenizer
from sarm.data.specs import load_dataset_spec
from sarm.eval.score import (
    score_completions,
    score_completions_from_states,
    score_completions_from_token_states,
    write_rewardbench2_results,
)
from sarm.params import with_bookkeeping
from sarm.rm.models import load_reward_model
from sarm.runtime import log_to_file

log = log_to_file(snakemake.log[0])
reward_model = with_bookkeeping(snakemake.params.reward_model, snakemake.config, "reward_model")
torch.set_num_threads(snakemake.threads)
prompts = load_dataset_spec("rewardbench2", snakemake.params.data)
model_dir = Path(snakemake.input.model).parent
states, token_states = snakemake.input.get("states"), snakemake.input.get("token_states")
if states:
    model = load_reward_model(model_dir, with_backbone=False)
    table = score_completions_from_states(model, prompts, states)
elif token_states:  # a model trained on its top layers: only those run, from the states below them
    model = load_reward_model(model_dir)
    table = score_completions_from_token_states(model, prompts, token_states, reward_model["batch_tokens"])
else:
    model = load_reward_model(model_dir)
    tokenizer = load_tokenizer(snakemake.params.backbone)
    table = score_completions(
        model,
        tokenizer,
        prompts,
        reward_model["batch_tokens"],
        reward_model["max_length"],
        reward_model["date_string"],
    )
write_rewardbench2_results(table, snakemake.output.scores, snakemake.output.rewards)
