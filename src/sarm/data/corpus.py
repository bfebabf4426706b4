"""Corpus -> sentences for SAE pretraining: stream texts, split them, keep sentences of a usable length."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from sarm.data.sources import DataError, load_rows, require_columns
from sarm.runtime import atomic_paths

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

Splitter = Callable[[str], list[str]]

# A sentence ends at . ! ? (with closing quotes/brackets) when the next sentence starts with a capital,
# digit or opening quote; blank lines always end one.
_SENTENCE_END = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*(?=\s+[\"'\u201c\u2018(\[]?[A-Z0-9])")
_PARAGRAPH = re.compile(r"\n\s*\n")
_SPACES = re.compile(r"\s+")
# Abbreviations whose period is not a sentence end (lower case, without the final period).
ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st jr sr vs etc e.g i.e cf no fig vol approx dept est inc ltd co corp mt ft gen col lt sgt rev".split()
)
OVERLONG_CHOICES = ("truncate", "drop")
LAYOUTS = ("round_robin", "contiguous")


def _ends_with_abbreviation(text: str) -> bool:
    word = text.rstrip(".").rsplit(None, 1)[-1].lower().lstrip("(\"'")
    return word in ABBREVIATIONS or (len(word) == 1 and word.isalpha())


def split_sentences_regex(text: str) -> list[str]:
    """Split prose at sentence-final punctuation, keeping abbreviations and initials inside sentences."""
    sentences = []
    for paragraph in _PARAGRAPH.split(text):
        start = 0
        for match in _SENTENCE_END.finditer(paragraph):
            candidate = paragraph[start : match.end()]
            if (
                match.group().startswith(".")
                and len(match.group()) == 1
                and _ends_with_abbreviation(candidate)
            ):
                continue
            sentences.append(candidate)
            start = match.end()
        sentences.append(paragraph[start:])
    return [cleaned for s in sentences if (cleaned := _SPACES.sub(" ", s).strip())]


def split_sentences_newline(text: str) -> list[str]:
    """One sentence per non-empty line (for corpora already split that way)."""
    return [cleaned for line in text.splitlines() if (cleaned := _SPACES.sub(" ", line).strip())]


SPLITTERS: dict[str, Splitter] = {"regex": split_sentences_regex, "newline": split_sentences_newline}


def _splitter(splitter: str | Splitter) -> Splitter:
    if callable(splitter):
        return splitter
    if splitter not in SPLITTERS:
        raise ValueError(
            f"sentence splitter must be one of {', '.join(SPLITTERS)} or a function, got {splitter!r}"
        )
    return SPLITTERS[splitter]


def _fit_by_words(sentences: list[str], min_tokens: int, max_tokens: int, overlong: str) -> Iterator[str]:
    for sentence in sentences:
        words = sentence.split()
        if len(words) < min_tokens:
            continue
        if len(words) > max_tokens:
            if overlong == "drop":
                continue
            sentence = " ".join(words[:max_tokens])
        yield sentence


def _fit_by_tokens(
    sentences: list[str],
    tokenizer: PreTrainedTokenizerBase,
    min_tokens: int,
    max_tokens: int,
    overlong: str,
    min_counts_special_tokens: bool,
) -> Iterator[str]:
    fast = tokenizer.is_fast
    encoded = tokenizer(sentences, add_special_tokens=False, return_offsets_mapping=fast)
    special = tokenizer.num_special_tokens_to_add() if min_counts_special_tokens else 0
    for index, sentence in enumerate(sentences):
        ids = encoded["input_ids"][index]
        if len(ids) + special < min_tokens:
            continue
        if len(ids) > max_tokens:
            if overlong == "drop":
                continue
            if fast:
                sentence = sentence[: encoded["offset_mapping"][index][max_tokens - 1][1]]
            else:
                sentence = tokenizer.decode(ids[:max_tokens])
        yield sentence


def iter_sentences(
    source: str,
    *,
    text_column: str = "text",
    split: str = "train",
    splitter: str | Splitter = "regex",
    tokenizer: PreTrainedTokenizerBase | None = None,
    min_tokens: int = 10,
    max_tokens: int = 96,
    overlong: str = "truncate",
    min_counts_special_tokens: bool = False,
    limit: int | None = None,
    batch_size: int = 512,
) -> Iterator[str]:
    """Stream the sentences of a corpus that have between `min_tokens` and `max_tokens` tokens.

    Tokens are the tokenizer's (without special tokens) when one is given, else whitespace-separated words.
    `min_counts_special_tokens` adds the tokenizer's special tokens (BOS) to the length that `min_tokens`
    is compared with, as the authors' code does.
    Longer sentences are cut to `max_tokens` (`overlong="truncate"`) or skipped (`overlong="drop"`).
    """
    if overlong not in OVERLONG_CHOICES:
        raise ValueError(f"overlong must be one of {', '.join(OVERLONG_CHOICES)}, got {overlong!r}")
    if not 1 <= min_tokens <= max_tokens:
        raise ValueError(
            f"need 1 <= min_tokens <= max_tokens, got min_tokens={min_tokens}, max_tokens={max_tokens}"
        )
    split_text = _splitter(splitter)
    rows = load_rows(source, split, streaming=True)
    require_columns(rows, [text_column], source)

    def fit(batch: list[str]) -> Iterator[str]:
        if tokenizer is None:
            return _fit_by_words(batch, min_tokens, max_tokens, overlong)
        return _fit_by_tokens(batch, tokenizer, min_tokens, max_tokens, overlong, min_counts_special_tokens)

    def sentences() -> Iterator[str]:
        batch: list[str] = []
        for index, row in enumerate(rows):
            text = row[text_column]
            if text is None:
                continue
            if not isinstance(text, str):
                raise DataError(
                    f"row {index} of {source}: `{text_column}` is a {type(text).__name__}, not text"
                )
            batch.extend(split_text(text))
            if len(batch) >= batch_size:
                yield from fit(batch)
                batch = []
        if batch:
            yield from fit(batch)

    return islice(sentences(), limit)


def write_sentence_parts(
    sentences: Iterable[str],
    out_paths: list[str | Path],
    *,
    layout: str = "round_robin",
    row_group_size: int = 8192,
) -> list[int]:
    """Deal sentences into parquet files with one column `text`; returns the number of sentences per file.

    `round_robin` streams sentence i into file i mod N; `contiguous` keeps N consecutive slices (it holds
    all sentences in memory). Files appear only when all are complete.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    paths = [Path(p) for p in out_paths]
    if not paths:
        raise ValueError("write_sentence_parts needs at least one output path")
    schema = pa.schema([("text", pa.string())])
    buffers: list[list[str]] = [[] for _ in paths]
    counts = [0] * len(paths)

    with atomic_paths(*paths) as temps:
        writers = [pq.ParquetWriter(temp, schema) for temp in temps]

        def flush(part: int) -> None:
            writers[part].write_table(pa.table({"text": buffers[part]}, schema=schema))
            counts[part] += len(buffers[part])
            buffers[part] = []

        try:
            stream = tqdm(sentences, desc="sentences", unit=" sent", mininterval=10)
            if layout == "contiguous":
                everything = list(stream)
                bounds = [round(i * len(everything) / len(paths)) for i in range(len(paths) + 1)]
                for part in range(len(paths)):
                    for start in range(bounds[part], bounds[part + 1], row_group_size):
                        buffers[part] = everything[start : min(start + row_group_size, bounds[part + 1])]
                        flush(part)
            else:
                for index, sentence in enumerate(stream):
                    part = index % len(paths)
                    buffers[part].append(sentence)
                    if len(buffers[part]) >= row_group_size:
                        flush(part)
                for part in range(len(paths)):
                    if buffers[part]:
                        flush(part)
        finally:
            for writer in writers:
                writer.close()
    log.info("wrote %d sentences into %d parts", sum(counts), len(paths))
    return counts


def read_sentence_part(path: str | Path) -> list[str]:
    """The sentences of one part written by `write_sentence_parts`."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as err:
        raise DataError(f"{path}: cannot read this parquet file ({err})") from err
    if "text" not in table.column_names:
        raise DataError(
            f"{path}: missing column `text` (has: {', '.join(table.column_names) or 'no columns'})"
        )
    return table.column("text").to_pylist()
