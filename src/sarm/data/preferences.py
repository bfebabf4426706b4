"""Preference pairs for reward-model training, from the three common schemas, validated row by row.

Schemas: chat-message lists (Skywork-Reward-Preference-80K-v0.2: `chosen` / `rejected` are whole
conversations sharing their prompt turns), plain strings (`prompt`, `chosen`, `rejected`), and HH-RLHF
(`chosen` / `rejected` are single strings of "\\n\\nHuman: ...\\n\\nAssistant: ..." turns).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from sarm.data.records import Message, PreferencePair
from sarm.data.sources import (
    BadRows,
    FieldProblem,
    RowProblems,
    load_rows,
    require_columns,
    source_name,
)

ROLES = ("system", "user", "assistant")
_HH_TURN = re.compile(r"\n\n(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def _messages(value: Any, field: str) -> list[Message]:
    if not isinstance(value, list):
        raise FieldProblem(field, f"must be a list of chat messages, got {type(value).__name__}")
    if not value:
        raise FieldProblem(field, "is an empty list of messages")
    messages = []
    for position, message in enumerate(value):
        where = f"{field}[{position}]"
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise FieldProblem(where, "must be a message with `role` and `content`")
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise FieldProblem(f"{where}.role", f"must be one of {', '.join(ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise FieldProblem(f"{where}.content", f"must be a string, got {type(content).__name__}")
        messages.append({"role": role, "content": content})
    return messages


def _check_conversation(messages: list[Message], field: str) -> None:
    last = messages[-1]
    if last["role"] != "assistant":
        raise FieldProblem(
            f"{field}[{len(messages) - 1}].role",
            f"the last message must be from the assistant, not {last['role']}",
        )
    if not last["content"].strip():
        raise FieldProblem(f"{field}[{len(messages) - 1}].content", "is an empty response")
    if not any(m["role"] == "user" for m in messages[:-1]):
        raise FieldProblem(field, "has no user turn before the response")


def _hh_messages(text: Any, field: str) -> list[Message]:
    if not isinstance(text, str):
        raise FieldProblem(field, f"must be a string of Human/Assistant turns, got {type(text).__name__}")
    parts = _HH_TURN.split(text)
    if parts[0].strip() or len(parts) < 3:
        raise FieldProblem(field, 'is not in the HH-RLHF form "\\n\\nHuman: ...\\n\\nAssistant: ..."')
    return [
        {"role": _HH_ROLES[speaker], "content": content.strip()}
        for speaker, content in zip(parts[1::2], parts[2::2], strict=True)
    ]


def _plain_messages(row: dict, field: str) -> list[Message]:
    prompt, response = row["prompt"], row[field]
    if not isinstance(prompt, str):
        raise FieldProblem("prompt", f"must be a string, got {type(prompt).__name__}")
    if not prompt.strip():
        raise FieldProblem("prompt", "is empty")
    if not isinstance(response, str):
        raise FieldProblem(field, f"must be a string, got {type(response).__name__}")
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


def preference_pair(row: dict) -> PreferencePair:
    """One row in any of the three schemas -> PreferencePair; raises FieldProblem naming the field."""
    for field in ("chosen", "rejected"):
        if row.get(field) is None:
            raise FieldProblem(field, "is missing")
    if isinstance(row["chosen"], list) or isinstance(row["rejected"], list):
        chosen, rejected = _messages(row["chosen"], "chosen"), _messages(row["rejected"], "rejected")
    elif isinstance(row.get("prompt"), str):
        chosen, rejected = _plain_messages(row, "chosen"), _plain_messages(row, "rejected")
    else:
        chosen, rejected = _hh_messages(row["chosen"], "chosen"), _hh_messages(row["rejected"], "rejected")
    _check_conversation(chosen, "chosen")
    _check_conversation(rejected, "rejected")
    if chosen[:-1] != rejected[:-1]:
        turn = next(
            (i for i, (a, b) in enumerate(zip(chosen[:-1], rejected[:-1], strict=False)) if a != b),
            min(len(chosen), len(rejected)) - 1,
        )
        raise FieldProblem(
            "rejected", f"has different prompt turns than `chosen` (first difference at message {turn})"
        )
    source = row.get("source")
    return PreferencePair(chosen=chosen, rejected=rejected, source=source if isinstance(source, str) else "")


def load_preference_pairs(
    source: str | Sequence[str], split: str = "train", bad_rows: BadRows | None = None
) -> list[PreferencePair]:
    """All pairs of a preference data set (hub id, local file/folder or list of files), validated row by row.

    Bad rows stop the load with one error listing them, or are dropped under `bad_rows` policy `skip`.
    """
    rows = load_rows(source, split)
    where = source_name(source)
    require_columns(rows, ["chosen", "rejected"], where)
    problems = RowProblems(where, bad_rows)
    pairs: dict[int, PreferencePair] = {}
    for index, row in enumerate(rows):
        try:
            pairs[index] = preference_pair(row)
        except FieldProblem as problem:
            problems.add_problem(index, problem)
    dropped = problems.finish(rows)
    return [pair for index, pair in pairs.items() if index not in dropped]
