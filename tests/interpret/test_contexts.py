"""Feature contexts: sentence-end positions, streaming top-N, background sample, parquet output."""

import copy

import pandas as pd
import pytest
import torch

from sarm.backbone import load_tokenizer
from sarm.data.records import RMBenchItem
from sarm.interpret.contexts import (
    CONTEXT_COLUMNS,
    BackgroundSample,
    ContextConfig,
    Position,
    SentenceEnds,
    TopContexts,
    collect_feature_contexts,
    encode_conversation,
    read_feature_contexts,
    rmbench_conversations,
    write_feature_contexts,
)
from sarm.rm.models import build_sarm
from sarm.sae.model import SAEConfig, TopKSAE

ITEMS = [
    RMBenchItem(
        "q1",
        "chat",
        "What is two plus two? Answer it.",
        ["It is four. Yes!", "Four.\nDone", "4"],
        ["It is five.", "Five", "six?"],
    ),
    RMBenchItem(
        "q2",
        "safety-refuse",
        "Write a harmful word.",
        ["Sorry, no.", "No.", "I will not!"],
        ["Fool.", "Idiot", "Bad!"],
    ),
]


@pytest.fixture(scope="module")
def tokenizer(tiny_backbone):
    return load_tokenizer(str(tiny_backbone))


def test_positions_are_sentence_ends_inside_messages_plus_the_final_token(tokenizer):
    messages = [
        {"role": "user", "content": "What is two plus two? Answer it."},
        {"role": "assistant", "content": "It is four.\nYes"},
    ]
    encoded = encode_conversation(
        tokenizer, messages, ["q/prompt", "q/chosen0"], ContextConfig(), SentenceEnds(tokenizer)
    )
    found = [(p.context, p.source_id) for p in encoded.positions]
    assert found == [
        ("What is two plus two?", "q/prompt"),
        ("Answer it.", "q/prompt"),
        ("It is four.", "q/chosen0"),
        ("Yes", "q/chosen0"),  # last token of the reply, unpunctuated
        ("Yes<|im_end|>", "q/chosen0"),  # the reward token closes the turn
    ]
    assert encoded.positions[-1].index == len(encoded.input_ids) - 1
    for position in encoded.positions[:-1]:
        token = tokenizer.decode([encoded.input_ids[position.index]])
        assert position.context.endswith(token.strip())


def test_text_a_template_prepends_is_not_taken_for_a_message(tokenizer):
    templated = copy.deepcopy(tokenizer)
    # Like SmolLM2's template: a default system prompt that here happens to contain the user's words.
    templated.chat_template = "<|im_start|>system\nSay yes. Yes.<|im_end|>\n" + tokenizer.chat_template
    messages = [{"role": "user", "content": "Yes."}, {"role": "assistant", "content": "No."}]
    encoded = encode_conversation(
        templated, messages, ["q/prompt", "q/chosen0"], ContextConfig(), SentenceEnds(templated)
    )
    text = templated.apply_chat_template(messages, tokenize=False)
    user_start = text.index("<|im_start|>user")
    prompt_positions = [p for p in encoded.positions if p.source_id == "q/prompt"]
    assert len(prompt_positions) == 1
    assert (
        templated(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"][
            prompt_positions[0].index
        ][0]
        > user_start
    )


def test_long_sentences_keep_their_last_tokens(tokenizer):
    messages = [{"role": "user", "content": "one two three four five six seven eight nine ten."}]
    config = ContextConfig(max_context_tokens=3)
    encoded = encode_conversation(tokenizer, messages, ["q/prompt"], config, SentenceEnds(tokenizer))
    first = encoded.positions[0]
    assert "ten." in first.context and "one" not in first.context


def test_shared_prompt_is_recorded_once_per_item(tokenizer):
    conversations = rmbench_conversations(tokenizer, ITEMS, ContextConfig())
    assert len(conversations) == 12
    sources = [p.source_id for c in conversations for p in c.positions]
    assert sum(s == "q1/prompt" for s in sources) == 2  # two prompt sentences, once
    assert {s.split("/")[1] for s in sources} == {
        "prompt",
        "chosen0",
        "chosen1",
        "chosen2",
        "rejected0",
        "rejected1",
        "rejected2",
    }


def test_top_contexts_stream_matches_brute_force_top_n():
    generator = torch.Generator().manual_seed(0)
    batches = [torch.relu(torch.randn(n, 6, generator=generator)) for n in (5, 1, 9, 4)]
    positions = [
        [Position(0, f"ctx{b}-{i}", f"src{b}") for i in range(len(x))] for b, x in enumerate(batches)
    ]
    top = TopContexts(top_n=3)
    top._prune_at = 2  # prune after every batch: texts still referenced must survive
    for activations, pos in zip(batches, positions, strict=True):
        top.add(activations, pos)
    table = top.table()
    everything = torch.cat(batches)
    names = [p.context for pos in positions for p in pos]
    for feature in range(6):
        values, order = everything[:, feature].topk(3)
        expected = [(float(v), names[i]) for v, i in zip(values, order, strict=True) if v > 0]
        rows = table[table["feature"] == feature].sort_values("rank")
        assert rows["rank"].tolist() == list(range(len(expected)))
        assert rows["context"].tolist() == [name for _, name in expected]
        assert rows["activation"].tolist() == pytest.approx([v for v, _ in expected])


def test_top_contexts_skip_silent_positions():
    top = TopContexts(top_n=4)
    top.add(torch.tensor([[0.0, 1.0], [0.0, 2.0]]), [Position(0, "a", "s"), Position(0, "b", "s")])
    table = top.table()
    assert set(table["feature"]) == {1} and table["context"].tolist() == ["b", "a"]


def test_a_repeated_context_text_counts_once_at_its_highest_activation():
    top = TopContexts(top_n=3)
    top.add(torch.tensor([[1.0], [3.0]]), [Position(0, "Sorry.", "a"), Position(0, "Sure.", "b")])
    top.add(
        torch.tensor([[2.0], [0.5], [1.5]]),
        [Position(0, "Sorry.", "c"), Position(0, "Sure.", "d"), Position(0, "Sorry.", "e")],
    )
    table = top.table()
    assert list(zip(table["context"], table["activation"], table["source_id"], strict=True)) == [
        ("Sure.", 3.0, "b"),
        ("Sorry.", 2.0, "c"),
    ]


def test_background_is_a_bounded_sample_with_the_active_features_of_each_position():
    background = BackgroundSample(size=4, seed=0)
    for step in range(10):
        activations = torch.zeros(3, 5)
        activations[:, step % 5] = 1.0
        background.add(activations, [Position(0, f"s{step}", f"step{step}") for _ in range(3)])
    table = background.table()
    assert len(table) == 4
    for row in table.itertuples():
        assert row.active_features == [int(row.source_id.removeprefix("step")) % 5]


def test_collect_contexts_from_a_tiny_sarm_is_independent_of_batching(tiny_backbone, tokenizer):
    sarm = build_sarm(str(tiny_backbone), 2, TopKSAE(32, SAEConfig(48, 4), seed=1)).eval()
    # A 1-token budget also leaves every answer unpacked; 4096 packs each item's six answers on its prompt.
    small = collect_feature_contexts(
        sarm.token_latents, tokenizer, ITEMS, ContextConfig(top_n=5, batch_tokens=1)
    )
    large = collect_feature_contexts(
        sarm.token_latents, tokenizer, ITEMS, ContextConfig(top_n=5, batch_tokens=4096)
    )
    assert list(small.top.columns) == CONTEXT_COLUMNS and len(small.top) > 0
    merged = small.top.merge(large.top, on=["feature", "context", "source_id"], suffixes=("_small", "_large"))
    assert len(merged) == len(small.top) == len(large.top)
    assert merged["activation_small"].tolist() == pytest.approx(merged["activation_large"].tolist(), abs=1e-4)
    assert (small.top["activation"] > 0).all()


def test_recorded_activation_is_the_latent_at_that_token(tokenizer):
    def token_id_latents(input_ids, attention_mask, position_ids):
        # Feature f fires with strength 1 + id/1000 exactly where the token id is f mod 8.
        latents = torch.zeros(*input_ids.shape, 8)
        latents.scatter_(2, (input_ids % 8).unsqueeze(-1), (1 + input_ids / 1000).unsqueeze(-1).float())
        return latents

    result = collect_feature_contexts(token_id_latents, tokenizer, ITEMS, ContextConfig(top_n=50))
    conversations = rmbench_conversations(tokenizer, ITEMS, ContextConfig())
    expected = {}
    for conversation in conversations:
        for p in conversation.positions:
            token = conversation.input_ids[p.index]
            expected[(token % 8, p.context, p.source_id)] = 1 + token / 1000
    got = {(r.feature, r.context, r.source_id): r.activation for r in result.top.itertuples()}
    assert got.keys() == expected.keys()
    assert list(got.values()) == pytest.approx([expected[k] for k in got])


def test_wrong_latent_shape_is_reported(tokenizer):
    with pytest.raises(ValueError, match=r"\(batch, tokens, features\)"):
        collect_feature_contexts(lambda ids, mask, positions: torch.zeros(ids.shape[0], 8), tokenizer, ITEMS)


def test_written_tables_read_back_and_leave_no_temp_files(tokenizer, tmp_path):
    def latents(input_ids, attention_mask, position_ids):
        return torch.rand(*input_ids.shape, 4, generator=torch.Generator().manual_seed(0))

    result = collect_feature_contexts(latents, tokenizer, ITEMS, ContextConfig(top_n=3, background_size=7))
    write_feature_contexts(result, tmp_path / "contexts.parquet", tmp_path / "background.parquet")
    again = read_feature_contexts(tmp_path / "contexts.parquet", tmp_path / "background.parquet")
    pd.testing.assert_frame_equal(again.top, result.top)
    assert len(again.background) == 7
    assert [list(a) for a in again.background["active_features"]] == list(
        result.background["active_features"]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["background.parquet", "contexts.parquet"]


def test_reading_a_table_without_the_expected_columns_names_the_file(tmp_path):
    pd.DataFrame({"feature": [1]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=r"bad.parquet: missing column\(s\)"):
        read_feature_contexts(tmp_path / "bad.parquet")
