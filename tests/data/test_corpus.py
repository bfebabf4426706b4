"""sarm.data.corpus: sentence splitting, length filtering, and the parquet parts the activation stage reads."""

import json

import pyarrow.parquet as pq
import pytest
from tokenizers.processors import TemplateProcessing

from sarm.backbone import load_tokenizer
from sarm.data.corpus import (
    iter_sentences,
    read_sentence_part,
    split_sentences_newline,
    split_sentences_regex,
    write_sentence_parts,
)
from sarm.data.sources import DataError

LONG = "One two three four five six seven eight nine ten eleven twelve"


def corpus(tmp_path, texts, column="text"):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({column: t}) + "\n" for t in texts), encoding="utf-8")
    return str(path)


def test_regex_splitter_ends_sentences_at_final_punctuation_but_not_at_abbreviations():
    text = 'Dr. Smith met J. R. Doe, e.g. at noon. "Is it late?" she asked!  Then they left.\n\nNew paragraph here'
    assert split_sentences_regex(text) == [
        "Dr. Smith met J. R. Doe, e.g. at noon.",
        '"Is it late?" she asked!',
        "Then they left.",
        "New paragraph here",
    ]


def test_regex_splitter_joins_hard_wrapped_lines_and_newline_splitter_does_not():
    text = "A sentence that wraps\nonto the next line. Second one.\n"
    assert split_sentences_regex(text) == ["A sentence that wraps onto the next line.", "Second one."]
    assert split_sentences_newline(text) == ["A sentence that wraps", "onto the next line. Second one."]


def test_without_tokenizer_whitespace_words_decide_length(tmp_path):
    source = corpus(tmp_path, [f"Too short here. {LONG}. {LONG} {LONG}."])
    assert list(iter_sentences(source, min_tokens=10, max_tokens=20)) == [
        f"{LONG}.",
        " ".join((LONG + " " + LONG).split()[:20]),
    ]
    assert list(iter_sentences(source, min_tokens=10, max_tokens=20, overlong="drop")) == [f"{LONG}."]


def test_with_tokenizer_short_sentences_drop_and_long_ones_truncate_or_drop(tmp_path, tiny_backbone):
    tokenizer = load_tokenizer(str(tiny_backbone))
    long_sentence = "Water " + " ".join(["light time world day water"] * 30) + "."
    source = corpus(tmp_path, [f"Hi. {long_sentence}"])
    kept = list(iter_sentences(source, tokenizer=tokenizer, min_tokens=5, max_tokens=16))
    assert len(kept) == 1  # "Hi." is below min_tokens
    assert len(tokenizer(kept[0], add_special_tokens=False)["input_ids"]) == 16
    assert long_sentence.startswith(kept[0])
    assert (
        list(iter_sentences(source, tokenizer=tokenizer, min_tokens=5, max_tokens=16, overlong="drop")) == []
    )


def test_min_tokens_can_count_the_bos_token_as_the_authors_code_does(tmp_path, tiny_backbone):
    tokenizer = load_tokenizer(str(tiny_backbone))
    bos = tokenizer.bos_token
    tokenizer._tokenizer.post_processor = TemplateProcessing(  # a Llama-3-like tokenizer that prepends BOS
        single=f"{bos} $A", special_tokens=[(bos, tokenizer.bos_token_id)]
    )
    assert tokenizer.num_special_tokens_to_add() == 1
    sentence = "Water light time world day."
    length = len(tokenizer(sentence, add_special_tokens=False)["input_ids"])
    source = corpus(tmp_path, [sentence])
    kwargs = {"tokenizer": tokenizer, "min_tokens": length + 1, "max_tokens": 40}
    assert list(iter_sentences(source, **kwargs)) == []
    assert list(iter_sentences(source, min_counts_special_tokens=True, **kwargs)) == [sentence]


def test_limit_stops_the_stream_and_custom_splitters_are_accepted(tmp_path):
    source = corpus(tmp_path, [f"{LONG} number {i}." for i in range(50)])
    assert len(list(iter_sentences(source, limit=7))) == 7
    halves = list(iter_sentences(source, splitter=lambda t: [t[: len(t) // 2]], min_tokens=1, limit=2))
    assert halves == [t[: len(t) // 2] for t in (f"{LONG} number 0.", f"{LONG} number 1.")]


def test_bad_rows_and_options_raise_clear_errors(tmp_path):
    with pytest.raises(DataError, match=r"row 1 of .*corpus.jsonl: `text` is a int, not text"):
        list(iter_sentences(corpus(tmp_path, [LONG + ".", 5])))
    with pytest.raises(DataError, match="missing column `text`"):
        iter_sentences(corpus(tmp_path, [LONG], column="body"))
    assert list(iter_sentences(corpus(tmp_path, [LONG], column="body"), text_column="body")) == [LONG]
    with pytest.raises(ValueError, match="overlong must be one of truncate, drop"):
        iter_sentences(corpus(tmp_path, [LONG]), overlong="cut")
    with pytest.raises(ValueError, match="sentence splitter must be one of regex, newline"):
        iter_sentences(corpus(tmp_path, [LONG]), splitter="spacy")


def test_round_robin_parts_deal_sentences_in_turn(tmp_path):
    paths = [tmp_path / f"part{i}.parquet" for i in range(3)]
    sentences = [f"sentence {i}" for i in range(10)]
    assert write_sentence_parts(iter(sentences), paths, row_group_size=2) == [4, 3, 3]
    assert read_sentence_part(paths[0]) == ["sentence 0", "sentence 3", "sentence 6", "sentence 9"]
    assert read_sentence_part(paths[2]) == ["sentence 2", "sentence 5", "sentence 8"]
    assert pq.read_schema(paths[1]).names == ["text"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part0.parquet", "part1.parquet", "part2.parquet"]


def test_contiguous_parts_keep_consecutive_slices(tmp_path):
    paths = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    sentences = [f"s{i}" for i in range(5)]
    assert write_sentence_parts(sentences, paths, layout="contiguous") == [2, 3]
    assert read_sentence_part(paths[0]) + read_sentence_part(paths[1]) == sentences


def test_a_failing_stream_leaves_no_part_files_behind(tmp_path):
    def broken():
        yield "fine"
        raise RuntimeError("corpus read failed")

    paths = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    with pytest.raises(RuntimeError, match="corpus read failed"):
        write_sentence_parts(broken(), paths)
    assert list(tmp_path.iterdir()) == []


def test_reading_a_part_without_text_column_names_the_file(tmp_path):
    import pyarrow as pa

    path = tmp_path / "wrong.parquet"
    pq.write_table(pa.table({"body": ["x"]}), path)
    with pytest.raises(DataError, match=r"wrong.parquet: missing column `text` \(has: body\)"):
        read_sentence_part(path)
