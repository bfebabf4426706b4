"""Rule cache_token_states: one pass of layers 0..s-1 over a dataset, every token's state at layer s."""

import torch

from sarm.backbone import device_and_dtype, inference_dtype, load_decoder, load_tokenizer
from sarm.data.specs import skipped_rows_file
from sarm.params import with_bookkeeping
from sarm.rm.final_states import dataset_conversations
from sarm.rm.token_states import cache_token_states
from sarm.runtime import log_to_file

log = log_to_file(snakemake.log[0])
reward_model = with_bookkeeping(snakemake.params.reward_model, snakemake.config, "reward_model")
torch.set_num_threads(snakemake.threads)
layer = int(snakemake.wildcards.layer)
device, _ = device_and_dtype()
dtype = inference_dtype(snakemake.params.inference_dtype, device)
conversations = dataset_conversations(
    snakemake.wildcards.dataset,
    snakemake.params.data,
    skipped_rows_file(snakemake.output.states, snakemake.wildcards.dataset),
)
log.info("%d conversations, states at layer %d", len(conversations), layer)
cache_token_states(
    load_decoder(snakemake.params.backbone, layer, dtype).to(device),
    load_tokenizer(snakemake.params.backbone),
    conversations,
    reward_model["batch_tokens"],
    snakemake.output.states,
    max_length=reward_model["max_length"],
    date_string=reward_model["date_string"],
    storage_dtype=reward_model["token_states_dtype"],
)
