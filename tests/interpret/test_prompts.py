"""Prompt text and answer parsing for explanations (paper rubric) and detection."""

import pytest

from sarm.interpret.prompts import detection_messages, explanation_messages, parse_explanation, parse_matches


def test_explanation_prompt_lists_activation_context_lines_and_the_rubric():
    messages = explanation_messages([(2.5, "I cannot help\nwith that."), (0.75, "Sorry.")])
    prompt = messages[-1]["content"]
    assert "Activation: 2.5 Context: I cannot help with that." in prompt  # one line per context
    assert "Activation: 0.75 Context: Sorry." in prompt
    assert all(f"{n} = " in prompt for n in range(1, 6))
    assert "Explanation:" in prompt and "Score:" in prompt


def test_very_long_contexts_keep_their_end():
    prompt = explanation_messages([(1.0, "x" * 1000 + " the end.")])[-1]["content"]
    line = next(line for line in prompt.splitlines() if line.startswith("Activation:"))
    assert line.endswith("the end.") and len(line) < 500


def test_explanation_needs_contexts():
    with pytest.raises(ValueError, match="at least one activating context"):
        explanation_messages([])


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("Explanation: Refusals to harmful requests.\nScore: 5", ("Refusals to harmful requests.", 5)),
        ("**Explanation:** Numbers in sums.\n**Score:** 4/5", ("Numbers in sums.", 4)),
        ("Sure!\n\nexplanation: Greetings.\nscore: 1\n", ("Greetings.", 1)),
        ("Explanation: Code.\nScore: 3 (a general theme)", ("Code.", 3)),
    ],
)
def test_parse_explanation_accepts_common_formats(answer, expected):
    parsed = parse_explanation(answer)
    assert (parsed.explanation, parsed.score) == expected


@pytest.mark.parametrize(
    "answer",
    [
        "Explanation: no score here.",
        "Score: 3",
        "Explanation: x\nScore: 6",
        "Explanation: x\nScore: 45",
        "Explanation: x\nScore: 1, 2, 3, 4, 5",
        "Explanation: x\nScore: 3-4",
        "",
    ],
)
def test_parse_explanation_rejects_incomplete_or_out_of_range(answer):
    assert parse_explanation(answer) is None


def test_detection_prompt_numbers_the_contexts():
    prompt = detection_messages("Apologies.", ["Sorry.", "The sum is 4."])[-1]["content"]
    assert "1. Sorry.\n2. The sum is 4." in prompt and "Apologies." in prompt


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("Matches: 1, 3", {0, 2}),
        ("Matches: none", set()),
        ("**Matches:** 2 and 4.", {1, 3}),
        ("Matches: None.", set()),
    ],
)
def test_parse_matches(answer, expected):
    assert parse_matches(answer, 4) == expected


@pytest.mark.parametrize("answer", ["1, 3", "Matches: 5", "Matches: 0, 2"])
def test_parse_matches_rejects_missing_line_or_numbers_out_of_range(answer):
    assert parse_matches(answer, 4) is None
