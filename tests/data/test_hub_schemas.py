"""Every loader on local copies with the hub's exact schemas and layouts (tests/fixtures/hub_schemas.py),
and the `bad_rows` policy on HH-RLHF-format files with the kinds of bad rows the real files hold."""

import json
import logging
from collections import Counter

import datasets
import pytest

from sarm.data.corpus import iter_sentences
from sarm.data.preferences import load_preference_pairs
from sarm.data.rewardbench2 import SUBSETS, load_rewardbench2
from sarm.data.rmbench import DOMAINS, load_rmbench
from sarm.data.sources import BadRows, DataError
from sarm.data.specs import load_dataset_spec, skipped_rows_file
from tests.fixtures import hub_schemas


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    return {
        "skywork": hub_schemas.write_skywork(root / "Skywork-Reward-Preference-80K-v0.2"),
        "rewardbench2": hub_schemas.write_rewardbench2(root / "reward-bench-2"),
        "rmbench_files": hub_schemas.write_rmbench_per_domain(root / "RM-Bench" / "data"),
        "rmbench_hub": hub_schemas.write_rmbench_hub(root / "RM-Bench-hub"),
        "hh": hub_schemas.write_hh_rlhf(root / "hh-rlhf"),
        "owt2": hub_schemas.write_openwebtext2(root / "owt2" / "train.jsonl.gz"),
    }


def test_skywork_parquet_in_the_hub_layout(hub):
    pairs = load_preference_pairs(str(hub["skywork"]))
    assert len(pairs) == 40
    assert pairs[3].chosen == [
        {"role": "user", "content": "What is 3 plus 3?"},
        {"role": "assistant", "content": "3 plus 3 is 6."},
    ]
    assert pairs[3].rejected[:-1] == pairs[3].chosen[:-1] and pairs[3].source == "helpsteer2"


def test_skywork_as_save_to_disk(hub, tmp_path):
    saved = tmp_path / "saved"
    datasets.DatasetDict(
        {"train": datasets.load_dataset("parquet", data_dir=str(hub["skywork"] / "data"), split="train")}
    ).save_to_disk(str(saved))
    assert len(load_preference_pairs(str(saved))) == 40


def test_rewardbench2_has_1865_prompts_in_six_subsets(hub):
    prompts = load_rewardbench2(str(hub["rewardbench2"]), "test")
    counts = Counter(p.subset for p in prompts)
    assert len(prompts) == 1865 and set(counts) == set(SUBSETS)
    assert counts == hub_schemas.REWARDBENCH2_SUBSETS
    tied = next(p for p in prompts if p.id == "tied:0")
    assert tied.num_correct == 3 and len(tied.completions) == 7


def test_rmbench_per_domain_files_as_the_authors_release_them(hub):
    folder = hub["rmbench_files"][0].parent
    items = load_rmbench(str(folder))
    assert Counter(i.domain for i in items) == dict.fromkeys(DOMAINS, 3)
    chat = next(i for i in items if i.domain == "chat")
    assert chat.subset == "alpacaeval"  # the row's source is kept as metadata
    as_list = load_rmbench([str(p) for p in hub["rmbench_files"][:2]])
    assert [i.domain for i in as_list] == ["chat"] * 3 + ["code"] * 3
    spec = {"source": [str(p) for p in hub["rmbench_files"]], "split": "train"}
    assert len(load_dataset_spec("rmbench", spec)) == 15


def test_rmbench_hub_file_with_a_domain_field(hub):
    items = load_rmbench(str(hub["rmbench_hub"]))
    assert Counter(i.domain for i in items) == dict.fromkeys(DOMAINS, 3)


def test_openwebtext2_style_corpus(hub):
    sentences = list(iter_sentences(str(hub["owt2"]), min_tokens=5, max_tokens=40))
    assert len(sentences) == 90
    assert sentences[0] == "Document number 0 opens with a sentence of some length here."


def test_hh_rlhf_test_split_of_the_hub_folder_loads(hub):
    assert len(load_preference_pairs(str(hub["hh"]), "test")) == 20


def test_hh_rlhf_bad_rows_stop_the_load_naming_the_rows_and_the_switch(hub):
    with pytest.raises(DataError) as caught:
        load_dataset_spec("preferences", {"source": str(hub["hh"]), "split": "train"})
    message = str(caught.value)
    assert "row 7 of" in message and "`rejected[3].content` is an empty response" in message
    assert "row 42 of" in message and "different prompt turns than `chosen`" in message
    assert "row 150 of" in message
    assert "3 of 300 rows are bad" in message and "`data.preferences.bad_rows: skip`" in message


def test_hh_rlhf_bad_rows_skipped_logged_and_written_beside_the_output(hub, tmp_path, caplog):
    side = skipped_rows_file(tmp_path / "final_states" / "preferences.safetensors", "preferences")
    spec = {"source": str(hub["hh"]), "split": "train", "bad_rows": "skip"}
    with caplog.at_level(logging.WARNING):
        pairs = load_dataset_spec("preferences", spec, side)
    assert len(pairs) == 297
    assert "skipped 3 bad rows" in caplog.text and "row 42 of" in caplog.text
    lines = [json.loads(line) for line in side.read_text().splitlines()]
    assert [line["row"] for line in lines] == [7, 42, 150]
    assert side == tmp_path / "final_states" / "preferences.skipped_rows.jsonl"
    assert lines[0]["data"]["rejected"].endswith("\n\nAssistant: ") and lines[0]["reasons"]


def test_too_many_bad_rows_are_an_error_even_when_skipping(tmp_path):
    root = hub_schemas.write_hh_rlhf(tmp_path / "hh", n=100, empty_turn=(1, 2), mismatched=())
    with pytest.raises(DataError, match=r"2 of 100 rows of .* are bad, more than the 1% that"):
        load_preference_pairs(str(root), "train", BadRows("skip"))
    assert len(load_preference_pairs(str(root), "train", BadRows("skip", max_fraction=0.05))) == 98


def test_skipping_applies_to_rewardbench2_and_rmbench_too(tmp_path):
    rows = hub_schemas.rewardbench2_rows()
    rows[5]["num_correct"] = 2  # disagrees with its one chosen completion
    path = tmp_path / "rb2.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(DataError, match="`bad_rows: skip`"):
        load_rewardbench2(str(path))
    assert len(load_rewardbench2(str(path), bad_rows=BadRows("skip"))) == 1864
    items = [hub_schemas.rmbench_row(i, "chat", True) for i in range(200)]
    items[3]["chosen"] = items[3]["chosen"][:2]
    path = tmp_path / "rm.json"
    path.write_text(json.dumps(items))
    assert len(load_rmbench(str(path), bad_rows=BadRows("skip"))) == 199
