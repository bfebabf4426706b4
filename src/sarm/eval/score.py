"""Score RewardBench 2 completions with a reward model and write per-subset + Overall results."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from sarm.data.chat import DEFAULT_DATE_STRING, DEFAULT_MAX_LENGTH, tokenize_conversations
from sarm.data.records import BenchmarkPrompt, Message
from sarm.data.rewardbench2 import completion_table
from sarm.eval.rewardbench2 import score_rewardbench2
from sarm.rm.final_states import iter_final_token_states, load_final_token_states, prompt_keys
from sarm.rm.models import RewardModel
from sarm.rm.token_states import TokenStates, load_token_states, model_final_states
from sarm.runtime import atomic_write, module_device, write_json_atomic

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


@torch.inference_mode()
def score_conversations(
    model: RewardModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[list[Message]],
    batch_tokens: int = 16384,
    max_length: int = DEFAULT_MAX_LENGTH,
    date_string: str = DEFAULT_DATE_STRING,
) -> np.ndarray:
    """Reward of each conversation (read at its final token), in input order."""
    if model.decoder is None:
        raise ValueError(
            "this reward model has no backbone loaded: load it with load_reward_model(dir) to score text"
        )
    token_ids = tokenize_conversations(tokenizer, conversations, max_length, date_string)
    rewards = np.full(len(token_ids), np.nan)
    device = module_device(model)
    with tqdm(total=len(token_ids), desc="scoring", unit="conv") as progress:
        batches = iter_final_token_states(
            model.decoder,
            token_ids,
            [model.layer],
            batch_tokens,
            tokenizer.pad_token_id,
            keys=prompt_keys(conversations),
        )
        for batch, states, _ in batches:
            rewards[batch] = model.rewards_from_states(states[model.layer].to(device)).float().cpu().numpy()
            progress.update(len(batch))
    return rewards


@torch.inference_mode()
def rewards_from_cached_states(
    model: RewardModel, states: torch.Tensor, batch_size: int = 4096
) -> np.ndarray:
    """Rewards from stored final-token states (N, d) of the model's layer (frozen-backbone mode)."""
    device = module_device(model)
    out = [model.rewards_from_states(chunk.to(device)).float().cpu() for chunk in states.split(batch_size)]
    return torch.cat(out).numpy() if out else np.zeros(0)


def score_completions(
    model: RewardModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[BenchmarkPrompt],
    batch_tokens: int = 16384,
    max_length: int = DEFAULT_MAX_LENGTH,
    date_string: str = DEFAULT_DATE_STRING,
) -> pd.DataFrame:
    """Per-completion rewards: columns id, subset, completion_index, is_correct, reward."""
    table, conversations = completion_table(prompts)
    table["reward"] = score_conversations(
        model, tokenizer, conversations, batch_tokens, max_length, date_string
    )
    return table


def score_completions_from_states(
    model: RewardModel, prompts: Sequence[BenchmarkPrompt], states_path: str | Path
) -> pd.DataFrame:
    """Like `score_completions`, from a `final_token_states` file of the same prompts' completions in order."""
    states = load_final_token_states(states_path, model.layer)
    table = _completions_of_cache(prompts, len(states), states_path, "states")
    table["reward"] = rewards_from_cached_states(model, states)
    return table


def _completions_of_cache(
    prompts: Sequence[BenchmarkPrompt], cached: int, states_path: str | Path, unit: str
) -> pd.DataFrame:
    """The completion table of `prompts`, checked to have one row per cached conversation."""
    table, _ = completion_table(prompts)
    if cached != len(table):
        raise ValueError(
            f"{states_path} holds {cached} {unit} but the prompts have {len(table)} completions: "
            "was it computed from the same RewardBench 2 data (completion_table order)?"
        )
    return table


@torch.inference_mode()
def rewards_from_token_states(
    model: RewardModel, states: TokenStates, batch_tokens: int = 16384
) -> np.ndarray:
    """Rewards from per-token states cached at the model's first trained layer (`train_layers: N`)."""
    with tqdm(total=len(states), desc="scoring", unit="conv") as progress:
        final = model_final_states(model, states, batch_tokens, progress)
    return rewards_from_cached_states(model, final).astype(np.float64)


def score_completions_from_token_states(
    model: RewardModel, prompts: Sequence[BenchmarkPrompt], states_path: str | Path, batch_tokens: int = 16384
) -> pd.DataFrame:
    """Like `score_completions`, from a `cache_token_states` file of the same prompts' completions in order."""
    states = load_token_states(states_path, model.first_trained_layer)
    table = _completions_of_cache(prompts, len(states), states_path, "conversations")
    table["reward"] = rewards_from_token_states(model, states, batch_tokens)
    return table


def write_rewardbench2_results(table: pd.DataFrame, json_path: str | Path, table_path: str | Path) -> dict:
    """Per-subset + Overall scores as JSON, and the per-completion table (.parquet, else CSV); returns the scores."""
    results = score_rewardbench2(table)
    write = table.to_parquet if Path(table_path).suffix == ".parquet" else table.to_csv
    atomic_write(table_path, lambda tmp: write(tmp, index=False))
    write_json_atomic(results, json_path)
    log.info(
        "RewardBench 2 Overall %.1f (%s)",
        100 * results["overall"],
        ", ".join(f"{k} {100 * v:.1f}" for k, v in results["subsets"].items()),
    )
    return results
