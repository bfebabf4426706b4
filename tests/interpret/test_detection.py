"""Detection scoring: held-out activating vs silent contexts, judged from the explanation alone."""

import re

import pandas as pd
import pytest

from sarm.interpret.contrastive import ContrastiveExplainer
from sarm.interpret.detection import (
    ChatJudge,
    DetectionConfig,
    LexicalJudge,
    build_judge,
    classification_scores,
    detection_examples,
    detection_scores,
)
from sarm.interpret.explainers import CachedChatModel, ExplainerError, LocalExplainer, OpenAIExplainer
from tests.openai_stub import OpenAIStub

CONFIG = DetectionConfig(activating=3, non_activating=3, holdout_from_rank=2, seed=0)


class ScriptedJudge(CachedChatModel):
    """Answers by a Python function of the prompt; counts calls."""

    def __init__(self, answer, cache_dir=None):
        super().__init__(cache_dir)
        self.model, self.temperature, self.max_tokens = "scripted", 0.0, 64
        self.answer = answer

    def _generate(self, messages):
        return self.answer(messages[-1]["content"])


def numbered(prompt: str) -> list[tuple[int, str]]:
    return [(int(n), text) for n, text in re.findall(r"^(\d+)\. (.*)$", prompt, re.MULTILINE)]


def judge_by_word(word: str):
    def answer(prompt):
        hits = [str(n) for n, text in numbered(prompt) if word in text]
        return "Matches: " + (", ".join(hits) if hits else "none")

    return answer


@pytest.fixture
def tables():
    contexts = pd.DataFrame(
        [(1, r, 9.0 - r, f"sorry, I cannot do that ({r}).", "s") for r in range(5)]
        + [(2, r, 9.0 - r, f"the sum is {r}.", "s") for r in range(5)]
        + [(3, 0, 1.0, "only one context.", "s")],
        columns=["feature", "rank", "activation", "context", "source_id"],
    )
    background = pd.DataFrame(
        {
            "context": [f"the weather is nice ({i})." for i in range(6)]
            + ["sorry, silent here.", "sorry, I cannot do that (1)."],
            "source_id": ["b"] * 8,
            "active_features": [[2], [], [5], [], [2, 5], [], [], [1]],
        }
    )
    explanations = pd.DataFrame(
        {
            "feature": [1, 2, 3, 4],
            "explanation": ["Apologetic refusals.", "Arithmetic results.", "Something.", None],
            "score": pd.array([5, 4, 2, None], dtype="Int64"),
            "status": ["ok", "ok", "ok", "unparseable"],
            "raw": ["", "", "", "??"],
        }
    )
    return contexts, background, explanations


def test_classification_scores_by_hand():
    truth = [True, True, False, False, False]
    predicted = [True, False, True, False, False]
    scores = classification_scores(truth, predicted)
    assert scores == pytest.approx({"accuracy": 0.6, "precision": 0.5, "recall": 0.5, "f1": 0.5})
    assert classification_scores([True, False], [False, False]) == {
        "accuracy": 0.5,
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
    }


def test_examples_are_held_out_activating_and_truly_silent_contexts(tables):
    contexts, background, _ = tables
    examples = detection_examples(contexts, background, 1, CONFIG)
    activating = [text for text, fires in examples if fires]
    silent = [text for text, fires in examples if not fires]
    assert sorted(activating) == [f"sorry, I cannot do that ({r})." for r in (2, 3, 4)]  # ranks >= 2 only
    assert len(silent) == 3
    assert "sorry, I cannot do that (1)." not in silent  # feature 1 is active there
    assert examples == detection_examples(contexts, background, 1, CONFIG)  # same mix on every run


def test_a_judge_that_follows_the_explanation_scores_perfectly(tables):
    contexts, background, explanations = tables
    judge = ScriptedJudge(judge_by_word("cannot do that"))
    table = detection_scores(contexts, background, explanations, judge, CONFIG)
    row = table.set_index("feature").loc[1]
    assert row["status"] == "ok" and (row["n_activating"], row["n_non_activating"]) == (3, 3)
    assert (row["accuracy"], row["precision"], row["recall"], row["f1"]) == (1.0, 1.0, 1.0, 1.0)


def test_a_judge_that_matches_nothing_has_zero_recall(tables):
    contexts, background, explanations = tables
    table = detection_scores(
        contexts, background, explanations, ScriptedJudge(lambda p: "Matches: none"), CONFIG
    )
    row = table.set_index("feature").loc[2]
    assert (row["accuracy"], row["recall"], row["f1"]) == (0.5, 0.0, 0.0)


def test_statuses_for_unparseable_answers_and_too_few_contexts(tables):
    contexts, background, explanations = tables
    table = detection_scores(
        contexts, background, explanations, ScriptedJudge(lambda p: "I am not sure."), CONFIG
    )
    status = dict(zip(table["feature"], table["status"], strict=True))
    assert status == {1: "unparseable", 2: "unparseable", 3: "too_few_contexts"}  # 4 had no explanation
    assert table.set_index("feature").loc[1, "raw"] == "I am not sure."
    assert table.set_index("feature").loc[1, ["accuracy", "f1"]].isna().all()


def test_judge_through_the_openai_client_and_its_cache(tables, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local")
    contexts, background, explanations = tables
    answer = judge_by_word("sum is")
    with OpenAIStub(answer=lambda body: answer(body["messages"][-1]["content"])) as stub:
        judge = OpenAIExplainer("judge", base_url=stub.url, cache_dir=tmp_path)
        first = detection_scores(contexts, background, explanations, judge, CONFIG)
        second = detection_scores(contexts, background, explanations, judge, CONFIG)
    assert len(stub.requests) == 2  # features 1 and 2, once each
    pd.testing.assert_frame_equal(first, second)
    assert first.set_index("feature").loc[2, "accuracy"] == 1.0


def test_judge_can_be_a_local_model(tables, tiny_backbone, tmp_path):
    contexts, background, explanations = tables
    judge = LocalExplainer(tiny_backbone, cache_dir=tmp_path, max_tokens=4)
    table = detection_scores(contexts, background, explanations, judge, CONFIG)
    assert set(table["status"]) <= {"ok", "unparseable", "too_few_contexts"} and judge.requests_made == 2


def test_lexical_judge_matches_content_words_of_the_explanation_not_stop_words():
    contexts = ["Sorry, I cannot do that.", "The sum is 4.", "It is what it is.", "SORRY!"]
    hits, raw = LexicalJudge().matches("The sorry ones, and it", contexts)
    assert hits == {0, 3}  # "the", "and", "it" are stop words: "The sum is 4." does not match
    assert raw == "words: ones, sorry\nMatches: 1: sorry; 4: sorry"
    assert LexicalJudge().matches("zebra", contexts) == (set(), "words: zebra\nMatches: none")


def test_lexical_judge_scores_words_from_the_contexts(tables):
    contexts, background, explanations = tables
    words_explanations = explanations.assign(explanation=["cannot", "sum", "only", None])
    table = detection_scores(contexts, background, words_explanations, LexicalJudge(), CONFIG).set_index(
        "feature"
    )
    assert table.loc[1, ["judge", "accuracy", "recall"]].tolist() == ["lexical", 1.0, 1.0]
    assert table.loc[2, "accuracy"] == 1.0


def test_the_judge_is_lexical_or_a_chat_explainer():
    assert isinstance(build_judge("lexical", ContrastiveExplainer()), LexicalJudge)
    chat = ScriptedJudge(lambda prompt: "Matches: none")
    assert (
        isinstance(build_judge("explainer", chat), ChatJudge)
        and build_judge("explainer", chat).name == "ScriptedJudge"
    )
    with pytest.raises(ExplainerError, match="`interpret.detection_judge: lexical`"):
        build_judge("explainer", ContrastiveExplainer())
    with pytest.raises(ExplainerError, match="must be one of lexical, explainer"):
        build_judge("oracle", chat)
