"""sarm.data.preferences (three schemas, row validation) and sarm.data.chat (chat-template formatting)."""

import json

import datasets
import pytest

from sarm.backbone import load_tokenizer
from sarm.data.chat import ChatTemplateError, format_conversation
from sarm.data.preferences import load_preference_pairs
from sarm.data.sources import DataError


def user(text):
    return {"role": "user", "content": text}


def bot(text):
    return {"role": "assistant", "content": text}


def skywork_row(prompt="What is 2 + 2?", chosen="4", rejected="5", source="demo"):
    return {
        "chosen": [user(prompt), bot(chosen)],
        "rejected": [user(prompt), bot(rejected)],
        "source": source,
    }


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_skywork_message_lists_become_pairs_sharing_the_prompt(tmp_path):
    system = {"role": "system", "content": "Be brief."}
    multi = {
        "chosen": [system, user("Hi"), bot("Hello!"), user("2+2?"), bot("4")],
        "rejected": [system, user("Hi"), bot("Hello!"), user("2+2?"), bot("22")],
        "source": "multi",
    }
    pairs = load_preference_pairs(write_jsonl(tmp_path / "sky.jsonl", [skywork_row(), multi]))
    assert pairs[0].chosen == [user("What is 2 + 2?"), bot("4")]
    assert pairs[0].rejected[-1] == bot("5") and pairs[0].source == "demo"
    assert pairs[1].chosen[:-1] == pairs[1].rejected[:-1] and len(pairs[1].chosen) == 5


def test_plain_prompt_chosen_rejected_strings_from_parquet(tmp_path):
    path = tmp_path / "plain.parquet"
    datasets.Dataset.from_list(
        [{"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Seven."}]
    ).to_parquet(str(path))
    (pair,) = load_preference_pairs(str(path))
    assert pair.chosen == [user("Name a colour."), bot("Blue.")]
    assert pair.rejected == [user("Name a colour."), bot("Seven.")]
    assert pair.source == ""


def test_hh_rlhf_strings_are_split_into_turns(tmp_path):
    history = "\n\nHuman: Hi there\n\nAssistant: Hello, how can I help?\n\nHuman: Tell me a joke."
    row = {
        "chosen": history + "\n\nAssistant: Why did the chicken cross the road?",
        "rejected": history + "\n\nAssistant: No.",
    }
    datasets.Dataset.from_list([row]).save_to_disk(str(tmp_path / "hh"))
    (pair,) = load_preference_pairs(str(tmp_path / "hh"))
    assert pair.chosen == [
        user("Hi there"),
        bot("Hello, how can I help?"),
        user("Tell me a joke."),
        bot("Why did the chicken cross the road?"),
    ]
    assert pair.rejected[-1] == bot("No.")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (skywork_row(rejected="  "), r"row 1 of .*: `rejected\[1\].content` is an empty response"),
        (
            {"chosen": [user("q"), {"role": "assistant", "content": 3}], "rejected": [user("q"), bot("a")]},
            r"row 1 of .*: `chosen\[1\].content` must be a string, got int",
        ),
        ({"chosen": None, "rejected": [user("q"), bot("a")]}, r"row 1 of .*: `chosen` is missing"),
        (
            {"chosen": [user("q"), user("a")], "rejected": [user("q"), bot("a")]},
            r"`chosen\[1\].role` the last message",
        ),
        (skywork_row() | {"rejected": [user("other"), bot("5")]}, r"`rejected` has different prompt turns"),
        (
            {"chosen": [user("q"), {"role": "robot", "content": "a"}], "rejected": [user("q"), bot("a")]},
            r"chosen\[1\].role",
        ),
    ],
    ids=[
        "empty-response",
        "non-string-content",
        "missing-list",
        "last-not-assistant",
        "prompts-disagree",
        "bad-role",
    ],
)
def test_malformed_rows_name_file_row_and_field(tmp_path, row, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [skywork_row(), row])
    with pytest.raises(DataError, match=message):
        load_preference_pairs(path)


def test_every_bad_row_is_reported_and_nothing_partial_is_returned(tmp_path):
    rows = [
        skywork_row(),
        skywork_row(chosen=""),
        skywork_row(),
        {"prompt": "q", "chosen": "a", "rejected": 7},
    ]
    with pytest.raises(DataError) as caught:
        load_preference_pairs(write_jsonl(tmp_path / "bad.jsonl", rows))
    lines = str(caught.value).splitlines()
    assert lines[0].startswith("row 1 of") and "`chosen[1].content` is an empty response" in lines[0]
    assert lines[1].startswith("row 3 of") and "`rejected` must be a string, got int" in lines[1]


def test_hh_string_not_in_human_assistant_form_is_rejected(tmp_path):
    path = write_jsonl(
        tmp_path / "hh.jsonl", [{"chosen": "just text", "rejected": "\n\nHuman: q\n\nAssistant: a"}]
    )
    with pytest.raises(DataError, match=r"row 0 of .*: `chosen` is not in the HH-RLHF form"):
        load_preference_pairs(path)


def test_missing_columns_are_named(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"prompt": "q", "answer": "a"}])
    with pytest.raises(DataError, match=r"x.jsonl: missing column `chosen` \(has: prompt, answer\)"):
        load_preference_pairs(path)


def test_format_conversation_uses_the_tokenizers_chat_template(tiny_backbone):
    tokenizer = load_tokenizer(str(tiny_backbone))
    text = format_conversation(tokenizer, [user("What is 2 + 2?"), bot("4")])
    assert text == "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"


def test_format_conversation_without_chat_template_explains_the_problem(tiny_backbone):
    tokenizer = load_tokenizer(str(tiny_backbone))
    tokenizer.chat_template = None
    with pytest.raises(ChatTemplateError, match="has no chat template"):
        format_conversation(tokenizer, [user("q"), bot("a")])
    tokenizer = load_tokenizer(str(tiny_backbone))
    with pytest.raises(ChatTemplateError, match="message 1 needs string `role` and `content`"):
        format_conversation(tokenizer, [user("q"), {"role": "assistant", "content": None}])
