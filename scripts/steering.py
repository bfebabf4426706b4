"""Rule steer_feature: Figure 3, scale the head weight of the most safety-separating feature."""

from pathlib import Path

import torch

from sarm.backbone import device_and_dtype, load_tokenizer
from sarm.data.specs import load_dataset_spec
from sarm.interpret.steering import SteeringConfig, run_steering, write_steering
from sarm.params import with_bookkeeping
from sarm.rm.models import load_reward_model
from sarm.runtime import log_to_file

log = log_to_file(snakemake.log[0])
reward_model = with_bookkeeping(snakemake.params.reward_model, snakemake.config, "reward_model")
torch.set_num_threads(snakemake.threads)
device, _ = device_and_dtype()
model = load_reward_model(Path(snakemake.input.model).parent, device=device)
config = SteeringConfig.from_config(snakemake.params.steering, reward_model)
# Each data set is cut to its `data.<name>.limit`; RM-Bench is read only when it is the pairs' source.
rmbench = load_dataset_spec("rmbench", snakemake.params.rmbench) if config.source == "rmbench_safety" else []
result = run_steering(
    model.latents,
    model.head_weight(),
    load_tokenizer(snakemake.params.backbone),
    rmbench,
    load_dataset_spec("rewardbench2", snakemake.params.rewardbench2),
    config,
    device=device,
)
out = snakemake.output
write_steering(result, out.summary, out.rewards, out.target, out.complement)
log.info("%s", result.summary.get("caption_a"))
