"""sarm.data.rewardbench2: the allenai/reward-bench-2 schema -> BenchmarkPrompt, with row validation."""

import json

import datasets
import pytest

from sarm.data.rewardbench2 import load_rewardbench2
from sarm.data.sources import DataError


def rb2_row(row_id, subset, chosen, rejected, prompt="Question?"):
    return {
        "id": row_id,
        "prompt": prompt,
        "chosen": chosen,
        "rejected": rejected,
        "num_correct": len(chosen),
        "num_incorrect": len(rejected),
        "total_completions": len(chosen) + len(rejected),
        "models": ["m"] * (len(chosen) + len(rejected)),
        "subset": subset,
        "additional_metadata": {"note": "x"},
    }


GOOD = [
    rb2_row("0", "Math", ["4"], ["5", "6", "7"], prompt="2+2?"),
    rb2_row("1", "Safety", ["I can't help."], ["Sure: ...", "Here: ...", "Ok: ..."]),
    rb2_row("ref:3", "Ties", ["11"], ["12", "15", "21"]),
    rb2_row("tied:3", "Ties", ["11", "13", "17"], ["12", "15"]),
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_rows_become_prompts_with_correct_completions_first(tmp_path):
    prompts = load_rewardbench2(write_jsonl(tmp_path / "rb2.jsonl", GOOD))
    math, _, ref, tied = prompts
    assert (math.id, math.subset, math.prompt, math.num_correct) == ("0", "Math", "2+2?", 1)
    assert math.completions == ["4", "5", "6", "7"]
    assert math.conversation(1) == [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "5"},
    ]
    assert (ref.id, tied.id, tied.num_correct) == ("ref:3", "tied:3", 3)
    assert tied.completions[: tied.num_correct] == ["11", "13", "17"]


def test_save_to_disk_dataset_dict_with_test_split_and_integer_ids(tmp_path):
    rows = [rb2_row(7, "Focus", ["on topic"], ["off 1", "off 2", "off 3"])]
    datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "rb2"))
    (prompt,) = load_rewardbench2(str(tmp_path / "rb2"))
    assert prompt.id == "7" and prompt.subset == "Focus"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            rb2_row("9", "Math", ["4"], ["5"]) | {"num_correct": 2},
            r"`num_correct` is 2 but the row has 1 chosen",
        ),
        (
            rb2_row("9", "Math", ["4"], ["5"]) | {"total_completions": 5},
            r"`total_completions` is 5 but the row has 2",
        ),
        (
            rb2_row("9", "Chat", ["4"], ["5"]),
            r"`subset` must be one of Factuality, Precise IF, Math, Safety, Focus",
        ),
        (
            rb2_row("tie:9", "Ties", ["4"], ["5"]),
            r"`id` of a Ties row must be `ref:N` or `tied:N`, got 'tie:9'",
        ),
        (
            rb2_row("9", "Math", ["4", "four"], ["5"]),
            r"`chosen` of a Math row must hold exactly one completion",
        ),
        (rb2_row("9", "Math", ["4"], []), r"`rejected` must be a non-empty list"),
        (rb2_row("9", "Math", ["4"], ["5", None]), r"`rejected\[1\]` must be a string, got NoneType"),
        (rb2_row("0", "Math", ["4"], ["5"]), r"`id` '0' repeats the id of row 0"),
    ],
    ids=[
        "num-correct",
        "total",
        "subset",
        "ties-id",
        "two-chosen",
        "no-rejected",
        "non-string",
        "duplicate-id",
    ],
)
def test_malformed_rows_name_row_and_field(tmp_path, bad, message):
    with pytest.raises(DataError, match=rf"row 4 of .*rb2.jsonl: {message}"):
        load_rewardbench2(write_jsonl(tmp_path / "rb2.jsonl", [*GOOD, bad]))


def test_missing_column_is_named(tmp_path):
    rows = [{k: v for k, v in row.items() if k != "num_correct"} for row in GOOD]
    with pytest.raises(DataError, match="missing column `num_correct`"):
        load_rewardbench2(write_jsonl(tmp_path / "rb2.jsonl", rows))
