"""Rule cache_states: one backbone pass over a dataset; final-token states at every layer a head-only model
reads, every token's state at every layer a top-N model starts from."""

import torch

from sarm.backbone import device_and_dtype, inference_dtype, load_decoder, load_tokenizer
from sarm.data.specs import skipped_rows_file
from sarm.params import with_bookkeeping
from sarm.rm.final_states import dataset_conversations, final_token_states
from sarm.rm.token_states import DEFAULT_STORAGE_DTYPE
from sarm.runtime import log_to_file

log = log_to_file(snakemake.log[0])
reward_model = with_bookkeeping(snakemake.params.reward_model, snakemake.config, "reward_model")
torch.set_num_threads(snakemake.threads)
layers, token_layers = list(snakemake.params.layers), list(snakemake.params.token_layers)
device, _ = device_and_dtype()
dtype = inference_dtype(snakemake.params.inference_dtype, device)
data = dict(snakemake.params.data)
steering_domains = data.pop("steering_domains", None)  # rmbench only (cached_data in common.smk)
conversations = dataset_conversations(
    snakemake.wildcards.dataset,
    data,
    skipped_rows_file(snakemake.output.states, snakemake.wildcards.dataset),
    steering_domains,
)
log.info(
    "%d conversations, final-token layers %s, per-token layers %s", len(conversations), layers, token_layers
)
final_token_states(
    load_decoder(snakemake.params.backbone, max(layers + token_layers), dtype).to(device),
    load_tokenizer(snakemake.params.backbone),
    conversations,
    layers,
    reward_model["batch_tokens"],
    snakemake.output.states,
    max_length=reward_model["max_length"],
    date_string=reward_model["date_string"],
    token_layers=token_layers,
    token_dtype=reward_model.get("token_states_dtype", DEFAULT_STORAGE_DTYPE),
)
