"""Rule steering: Figure 3, scale the head weight of the most safety-separating feature."""

from pathlib import Path

import torch

from sarm.backbone import device_and_dtype, load_tokenizer
from sarm.data.specs import load_dataset_spec
from sarm.interpret.steering import SteeringConfig, run_steering, write_steering
from sarm.rm.models import load_reward_model
from sarm.runtime import log_to_file

log = log_to_file(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
device, _ = device_and_dtype()
model = load_reward_model(Path(snakemake.input.model).parent, device=device)
result = run_steering(
    model.latents,
    model.head_weight(),
    load_tokenizer(snakemake.params.backbone),
    load_dataset_spec("rmbench", snakemake.params.rmbench),
    load_dataset_spec("rewardbench2", snakemake.params.rewardbench2),
    SteeringConfig.from_config(snakemake.params.steering, snakemake.params.reward_model),
    device=device,
)
out = snakemake.output
write_steering(result, out.summary, out.rewards, out.target, out.complement)
log.info("%s", result.summary.get("caption_a"))
