"""Rule feature_contexts: top activating sentence-end contexts of every SARM feature on RM-Bench."""

from pathlib import Path

import torch

from sarm.backbone import device_and_dtype, load_tokenizer
from sarm.data.specs import load_dataset_spec, skipped_rows_file
from sarm.interpret.contexts import ContextConfig, collect_feature_contexts, write_feature_contexts
from sarm.params import with_bookkeeping
from sarm.rm.models import load_reward_model
from sarm.runtime import log_to_file

log = log_to_file(snakemake.log[0])
reward_model = with_bookkeeping(snakemake.params.reward_model, snakemake.config, "reward_model")
torch.set_num_threads(snakemake.threads)
device, _ = device_and_dtype()
items = load_dataset_spec(
    "rmbench", snakemake.params.data, skipped_rows_file(snakemake.output.contexts, "rmbench")
)
model = load_reward_model(Path(snakemake.input.model).parent, device=device)
result = collect_feature_contexts(
    model.token_latents,
    load_tokenizer(snakemake.params.backbone),
    items,
    ContextConfig.from_config(snakemake.params.interpret, reward_model),
    device=device,
    attention=model.decoder.config._attn_implementation,
)
write_feature_contexts(result, snakemake.output.contexts, snakemake.output.background)
log.info("%d contexts for %d features", len(result.top), result.top["feature"].nunique())
