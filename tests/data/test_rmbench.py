"""sarm.data.rmbench: RM-Bench rows (3 chosen + 3 rejected styles, five domains) from a file or a folder."""

import json

import pytest

from sarm.data.rmbench import domain_of_file, load_rmbench, rmbench_pairs
from sarm.data.sources import DataError


def row(row_id, domain="chat", field="domain", chosen=("c1", "c2", "c3"), rejected=("r1", "r2", "r3")):
    out = {"id": row_id, "prompt": f"prompt {row_id}", "chosen": list(chosen), "rejected": list(rejected)}
    if domain is not None:
        out[field] = domain
    return out


def write_json(path, rows, lines=True):
    text = "".join(json.dumps(r) + "\n" for r in rows) if lines else json.dumps(rows)
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_items_keep_the_three_styles_in_order(tmp_path):
    (item,) = load_rmbench(write_json(tmp_path / "rm.jsonl", [row(5, "code")]))
    assert (item.id, item.domain, item.prompt) == ("5", "code", "prompt 5")
    assert item.chosen == ["c1", "c2", "c3"] and item.rejected == ["r1", "r2", "r3"]


def test_domain_may_come_from_a_subset_field(tmp_path):
    (item,) = load_rmbench(write_json(tmp_path / "rm.jsonl", [row(1, "safety-refuse", field="subset")]))
    assert item.domain == "safety-refuse"


def test_folder_of_released_per_domain_files_takes_the_domain_from_the_file_name(tmp_path):
    write_json(tmp_path / "chat_filtered.json", [row(1, None), row(2, None)], lines=False)
    write_json(tmp_path / "safety-response_filtered.json", [row(1, None)], lines=False)
    items = load_rmbench(str(tmp_path))
    assert [(i.domain, i.id) for i in items] == [("chat", "1"), ("chat", "2"), ("safety-response", "1")]
    assert domain_of_file("data/safety-refuse_filtered.json") == "safety-refuse"
    assert domain_of_file("data/total_dataset.json") is None


def test_the_same_item_read_twice_is_reported(tmp_path):
    write_json(tmp_path / "chat_filtered.json", [row(1, None)], lines=False)
    write_json(tmp_path / "total_dataset.json", [row(1, "chat")], lines=False)
    with pytest.raises(
        DataError, match=r"row 0 of .*total_dataset.json: `id` '1' \(chat\) was already read from row 0 of"
    ):
        load_rmbench(str(tmp_path))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            row(9, chosen=("a", "b")),
            r"`chosen` must be a list of 3 responses \(concise, detailed_plain, detailed_markdown\), got 2 items",
        ),
        (row(9, rejected=("a", "", "c")), r"`rejected\[1\]` must be a non-empty string"),
        (
            row(9, "poetry"),
            r"`domain` must be one of chat, code, math, safety-refuse, safety-response, got 'poetry'",
        ),
        (row(9, None), r"`domain` is missing \(no `domain` or `subset` value"),
        (
            row(9, "essay", field="subset"),
            r"`subset` is 'essay', the row's source, and neither a `domain` field nor the file name",
        ),
    ],
    ids=["two-chosen", "empty-variant", "unknown-domain", "no-domain", "unknown-subset"],
)
def test_malformed_rows_name_row_and_field(tmp_path, bad, message):
    with pytest.raises(DataError, match=rf"row 1 of .*rm.jsonl: {message}"):
        load_rmbench(write_json(tmp_path / "rm.jsonl", [row(1), bad]))


def test_pairs_match_variant_j_with_variant_j_and_keep_the_domain(tmp_path):
    items = load_rmbench(write_json(tmp_path / "d.jsonl", [row(1, "chat"), row(2, "safety-refuse")]))
    pairs = rmbench_pairs(items)
    assert [p.source for p in pairs] == ["chat"] * 3 + ["safety-refuse"] * 3
    assert [(p.chosen[-1]["content"], p.rejected[-1]["content"]) for p in pairs[3:]] == [
        ("c1", "r1"),
        ("c2", "r2"),
        ("c3", "r3"),
    ]
    assert pairs[4].chosen[0] == {"role": "user", "content": "prompt 2"} == pairs[4].rejected[0]
