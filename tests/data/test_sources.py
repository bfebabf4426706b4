"""sarm.data.sources: one loader for hub ids, local files and folders; errors that name the file."""

import gzip
import json

import datasets
import pytest

from sarm.data.sources import DataError, RowProblems, data_files, load_rows, require_columns

ROWS = [{"text": "first row", "n": 1}, {"text": "second row", "n": 2}]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_jsonl_json_array_gzip_and_parquet_files_load_the_same_rows(tmp_path):
    jsonl = write_jsonl(tmp_path / "rows.jsonl", ROWS)
    array = tmp_path / "rows.json"
    array.write_text(json.dumps(ROWS), encoding="utf-8")
    packed = tmp_path / "rows.jsonl.gz"
    packed.write_bytes(gzip.compress(jsonl.read_bytes()))
    parquet = tmp_path / "rows.parquet"
    datasets.Dataset.from_list(ROWS).to_parquet(str(parquet))
    for path in (jsonl, array, packed, parquet):
        assert load_rows(str(path)).to_list() == ROWS, path


def test_streaming_gives_an_iterable_dataset_with_the_same_rows(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", ROWS)
    rows = load_rows(str(path), streaming=True)
    assert isinstance(rows, datasets.IterableDataset)
    assert list(rows) == ROWS


def test_save_to_disk_folders_load_and_pick_the_split(tmp_path):
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "single"))
    assert load_rows(str(tmp_path / "single")).to_list() == ROWS
    splits = datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(ROWS[:1]), "test": datasets.Dataset.from_list(ROWS[1:])}
    )
    splits.save_to_disk(str(tmp_path / "dict"))
    assert load_rows(str(tmp_path / "dict"), "test").to_list() == ROWS[1:]
    assert list(load_rows(str(tmp_path / "dict"), "test", streaming=True)) == ROWS[1:]
    with pytest.raises(DataError, match=r"no split `validation` \(has: train, test\)"):
        load_rows(str(tmp_path / "dict"), "validation")


def test_folder_of_files_is_concatenated_in_name_order(tmp_path):
    write_jsonl(tmp_path / "b.jsonl", ROWS[1:])
    write_jsonl(tmp_path / "a.jsonl", ROWS[:1])
    assert load_rows(str(tmp_path)).to_list() == ROWS


def test_folder_with_split_named_files_keeps_only_the_requested_split(tmp_path):
    write_jsonl(tmp_path / "train-00000-of-00001.jsonl", ROWS[:1])
    write_jsonl(tmp_path / "test-00000-of-00001.jsonl", ROWS[1:])
    assert [p.name for p in data_files(tmp_path, "test")] == ["test-00000-of-00001.jsonl"]
    assert load_rows(str(tmp_path), "test").to_list() == ROWS[1:]
    with pytest.raises(DataError, match="no files for split `validation`"):
        load_rows(str(tmp_path), "validation")


def test_folder_mixing_formats_is_refused(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", ROWS)
    datasets.Dataset.from_list(ROWS).to_parquet(str(tmp_path / "b.parquet"))
    with pytest.raises(DataError, match="mixes data formats"):
        load_rows(str(tmp_path))


def test_missing_local_path_and_unknown_suffix_name_the_path(tmp_path):
    with pytest.raises(DataError, match=r"data/missing.jsonl: no such file or folder"):
        load_rows("data/missing.jsonl")
    odd = tmp_path / "rows.csv"
    odd.write_text("text\nx\n")
    with pytest.raises(DataError, match=r"rows.csv: not a .json, .jsonl or .parquet file"):
        load_rows(str(odd))


def test_broken_json_line_is_reported_with_its_line_number(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"text": "ok"}\n{"text": oops}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"broken.jsonl: line 2 is not valid JSON"):
        load_rows(str(path))


def test_unreachable_hub_id_raises_data_error_naming_the_id():
    # conftest sets HF_DATASETS_OFFLINE=1, so this fails at once instead of waiting for the network
    with pytest.raises(DataError, match=r"cannot load `nobody/no-such-dataset` \(split `test`\)"):
        load_rows("nobody/no-such-dataset", "test")


def test_require_columns_names_the_missing_column_and_the_present_ones(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", ROWS)
    rows = load_rows(str(path))
    require_columns(rows, ["text"], str(path))
    with pytest.raises(DataError, match=r"x.jsonl: missing column `chosen` \(has: text, n\)"):
        require_columns(rows, ["text", "chosen"], str(path))
    with pytest.raises(DataError, match="missing column `chosen`"):
        require_columns(load_rows(str(path), streaming=True), ["chosen"], str(path))


def test_row_problems_report_every_bad_row_in_one_error():
    problems = RowProblems("data/train.jsonl")
    problems.raise_if_any()  # nothing collected: no error
    for index in range(12):
        problems.add(index, "chosen", "is empty")
    with pytest.raises(DataError) as caught:
        problems.raise_if_any()
    message = str(caught.value)
    assert message.startswith("row 0 of data/train.jsonl: `chosen` is empty")
    assert "row 9 of" in message and "row 10 of" not in message
    assert message.endswith("(and 2 more problems)")
