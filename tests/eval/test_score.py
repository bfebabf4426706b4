import json

import numpy as np
import pandas as pd
import pytest
import torch

from sarm.backbone import load_tokenizer
from sarm.batching import pad_right
from sarm.data.chat import tokenize_conversations
from sarm.data.records import BenchmarkPrompt
from sarm.data.rewardbench2 import completion_table
from sarm.eval.rewardbench2 import score_rewardbench2
from sarm.eval.score import score_completions, score_completions_from_states, write_rewardbench2_results
from sarm.rm.final_states import final_token_states
from sarm.rm.models import build_sarm
from sarm.sae.model import SAEConfig, TopKSAE

PROMPTS = [
    BenchmarkPrompt("1", "Factuality", "what is one plus one", ["two", "three", "four", "one"], 1),
    BenchmarkPrompt(
        "2", "Safety", "define harmful", ["sorry I cannot help with that", "yes", "no", "true"], 1
    ),
    BenchmarkPrompt("ref:0", "Ties", "name a number", ["5", "a word"], 1),
    BenchmarkPrompt("tied:0", "Ties", "name a number", ["5", "7", "9", "a word", "water"], 3),
]


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_backbone):
    torch.manual_seed(0)
    model = build_sarm(str(tiny_backbone), 2, TopKSAE(32, SAEConfig(64, 4), seed=0)).eval()
    return model, load_tokenizer(str(tiny_backbone))


def test_completion_table_lists_every_completion_with_its_correctness():
    table, conversations = completion_table(PROMPTS)
    assert len(table) == len(conversations) == 4 + 4 + 2 + 5
    tied = table[table["id"] == "tied:0"]
    assert tied["is_correct"].tolist() == [True, True, True, False, False]
    assert tied["completion_index"].tolist() == [0, 1, 2, 3, 4]
    assert conversations[-1] == [
        {"role": "user", "content": "name a number"},
        {"role": "assistant", "content": "water"},
    ]


def test_score_completions_gives_each_conversation_its_own_reward_in_order(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    table = score_completions(model, tokenizer, PROMPTS, batch_tokens=64)
    _, conversations = completion_table(PROMPTS)
    with torch.no_grad():
        one_by_one = [
            model(*pad_right(tokenize_conversations(tokenizer, [c]), tokenizer.pad_token_id)).item()
            for c in conversations
        ]
    assert list(table.columns) == ["id", "subset", "completion_index", "is_correct", "reward"]
    np.testing.assert_allclose(table["reward"].to_numpy(), one_by_one, atol=1e-5)


def test_scoring_from_cached_states_equals_scoring_text(model_and_tokenizer, tmp_path):
    model, tokenizer = model_and_tokenizer
    _, conversations = completion_table(PROMPTS)
    states = final_token_states(
        model.decoder, tokenizer, conversations, [2], 256, tmp_path / "states.safetensors"
    )
    from_states = score_completions_from_states(model, PROMPTS, states)
    from_text = score_completions(model, tokenizer, PROMPTS)
    np.testing.assert_allclose(from_states["reward"], from_text["reward"], atol=1e-6)
    with pytest.raises(ValueError, match="holds 15 states but the prompts have 4 completions"):
        score_completions_from_states(model, PROMPTS[:1], states)


def test_write_results_json_and_table(model_and_tokenizer, tmp_path):
    model, tokenizer = model_and_tokenizer
    table = score_completions(model, tokenizer, PROMPTS)
    results = write_rewardbench2_results(table, tmp_path / "rb2.json", tmp_path / "rb2.parquet")
    assert json.loads((tmp_path / "rb2.json").read_text()) == results == score_rewardbench2(table)
    assert set(results["subsets"]) == {"Factuality", "Safety", "Ties"}
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "rb2.parquet"), table)
    write_rewardbench2_results(table, tmp_path / "rb2b.json", tmp_path / "rb2.csv")
    assert pd.read_csv(tmp_path / "rb2.csv", dtype={"id": str})["reward"].tolist() == pytest.approx(
        table["reward"].tolist()
    )
