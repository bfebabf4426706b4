"""Rule steer_feature: Figure 3, scale the head weight of the most safety-separating feature."""

from pathlib import Path

import torch

from sarm.backbone import device_and_dtype, load_tokenizer
from sarm.data.specs import load_dataset_spec
from sarm.interpret.steering import CachedStatePaths, SteeringConfig, run_steering, write_steering
from sarm.params import with_bookkeeping
from sarm.rm.models import load_reward_model
from sarm.runtime import log_to_file

log = log_to_file(snakemake.log[0])
reward_model = with_bookkeeping(snakemake.params.reward_model, snakemake.config, "reward_model")
torch.set_num_threads(snakemake.threads)
device, _ = device_and_dtype()
config = SteeringConfig.from_config(snakemake.params.steering, reward_model)
# Each data set is cut to its `data.<name>.limit`; RM-Bench is read only when it is the pairs' source.
rmbench = load_dataset_spec("rmbench", snakemake.params.rmbench) if config.source == "rmbench_safety" else []
prompts = load_dataset_spec("rewardbench2", snakemake.params.rewardbench2)
model_dir = Path(snakemake.input.model).parent
if "rewardbench2_states" in snakemake.input.keys():
    # Head only, or top N layers: the states cached for training and evaluation feed it; no backbone pass.
    cached = CachedStatePaths(snakemake.input.rewardbench2_states, snakemake.input.get("rmbench_states"))
    top_layers = "backbone" in snakemake.input.keys()
    model = load_reward_model(model_dir, with_backbone=top_layers, device=device)
    result = run_steering(model, rmbench, prompts, config, cached=cached, device=device)
else:
    model = load_reward_model(model_dir, device=device)
    tokenizer = load_tokenizer(snakemake.params.backbone)
    result = run_steering(model, rmbench, prompts, config, tokenizer=tokenizer, device=device)
out = snakemake.output
write_steering(result, out.summary, out.rewards, out.target, out.complement)
log.info("%s", result.summary.get("caption_a"))
