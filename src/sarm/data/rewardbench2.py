"""RewardBench 2 (`allenai/reward-bench-2`, split `test`) rows -> BenchmarkPrompt, validated row by row."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pandas as pd

from sarm.data.records import BenchmarkPrompt, Message
from sarm.data.sources import (
    BadRows,
    FieldProblem,
    RowProblems,
    load_rows,
    require_columns,
    source_name,
)

SUBSETS = ("Factuality", "Precise IF", "Math", "Safety", "Focus", "Ties")
TIES = "Ties"
TIES_ID = re.compile(r"^(ref|tied):(\d+)$")
REQUIRED_COLUMNS = ("id", "prompt", "chosen", "rejected", "num_correct", "subset")
# One row per (prompt, completion): the reward table of an evaluation without its `reward` column.
COMPLETION_COLUMNS = ("id", "subset", "completion_index", "is_correct")


def _completions(value: Any, field: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise FieldProblem(field, "must be a non-empty list of completions")
    for position, text in enumerate(value):
        if not isinstance(text, str):
            raise FieldProblem(f"{field}[{position}]", f"must be a string, got {type(text).__name__}")
    return value


def _count(row: dict, field: str, expected: int, meaning: str) -> None:
    value = row.get(field)
    if value is None and field != "num_correct":
        return  # optional bookkeeping columns
    if isinstance(value, bool) or not isinstance(value, int) or value != expected:
        raise FieldProblem(field, f"is {value!r} but the row has {expected} {meaning}")


def benchmark_prompt(row: dict) -> BenchmarkPrompt:
    """One RewardBench 2 row -> BenchmarkPrompt (completions = chosen + rejected); raises FieldProblem."""
    subset = row["subset"]
    if subset not in SUBSETS:
        raise FieldProblem("subset", f"must be one of {', '.join(SUBSETS)}, got {subset!r}")
    if isinstance(row["id"], bool) or not isinstance(row["id"], str | int):
        raise FieldProblem("id", f"must be a string or integer, got {type(row['id']).__name__}")
    prompt_id = str(row["id"])
    if subset == TIES and not TIES_ID.match(prompt_id):
        raise FieldProblem("id", f"of a Ties row must be `ref:N` or `tied:N`, got {prompt_id!r}")
    if not isinstance(row["prompt"], str) or not row["prompt"].strip():
        raise FieldProblem("prompt", "must be a non-empty string")
    chosen = _completions(row["chosen"], "chosen")
    rejected = _completions(row["rejected"], "rejected")
    _count(row, "num_correct", len(chosen), "chosen (correct) completions")
    _count(row, "num_incorrect", len(rejected), "rejected completions")
    _count(row, "total_completions", len(chosen) + len(rejected), "completions")
    if subset != TIES and len(chosen) != 1:
        raise FieldProblem(
            "chosen", f"of a {subset} row must hold exactly one completion (best-of-n), has {len(chosen)}"
        )
    return BenchmarkPrompt(
        id=prompt_id,
        subset=subset,
        prompt=row["prompt"],
        completions=chosen + rejected,
        num_correct=len(chosen),
    )


def load_rewardbench2(
    source: str | Sequence[str], split: str = "test", bad_rows: BadRows | None = None
) -> list[BenchmarkPrompt]:
    """All RewardBench 2 prompts of a hub id or local copy; every row is validated, ids must be unique."""
    rows = load_rows(source, split)
    where = source_name(source)
    require_columns(rows, REQUIRED_COLUMNS, where)
    problems = RowProblems(where, bad_rows)
    prompts: dict[int, BenchmarkPrompt] = {}
    first_row_of: dict[str, int] = {}
    for index, row in enumerate(rows):
        try:
            prompt = benchmark_prompt(row)
        except FieldProblem as problem:
            problems.add_problem(index, problem)
            continue
        if prompt.id in first_row_of:
            problems.add(index, "id", f"{prompt.id!r} repeats the id of row {first_row_of[prompt.id]}")
        first_row_of.setdefault(prompt.id, index)
        prompts[index] = prompt
    dropped = problems.finish(rows)
    return [prompt for index, prompt in prompts.items() if index not in dropped]


def completion_table(prompts: Sequence[BenchmarkPrompt]) -> tuple[pd.DataFrame, list[list[Message]]]:
    """One row per (prompt, completion) without rewards, and the matching chat conversations in row order."""
    rows, conversations = [], []
    for prompt in prompts:
        for index in range(len(prompt.completions)):
            rows.append(
                {
                    "id": str(prompt.id),
                    "subset": prompt.subset,
                    "completion_index": index,
                    "is_correct": index < prompt.num_correct,
                }
            )
            conversations.append(prompt.conversation(index))
    return pd.DataFrame(rows, columns=list(COMPLETION_COLUMNS)), conversations
