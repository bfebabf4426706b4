"""The contrastive explainer: G² keyness against silent contexts, end to end with the lexical detection judge."""

import pandas as pd
import pytest
from scipy.stats import chi2_contingency

from sarm.interpret.contexts import background_halves
from sarm.interpret.contrastive import (
    NO_DISTINCTIVE_WORDS,
    NO_SILENT_CONTEXTS,
    ContrastiveExplainer,
    distinctive_words,
    signed_g2,
)
from sarm.interpret.detection import DetectionConfig, LexicalJudge, detection_scores
from sarm.interpret.explainers import ExplainerConfig, build_explainer, explain_features
from sarm.interpret.words import without_template_text, words
from tests.interpret.synthetic_features import PLANTED_FEATURE, PLANTED_WORD, synthetic_tables

TOP = 40
# What a reward-token context ends with in each preset's chat template, role name of a next turn included.
TURN_ENDS = {
    "chatml": "<|im_end|>\n<|im_start|>assistant",
    "llama-3": "<|eot_id|><|start_header_id|>assistant<|end_header_id|>",
}
DETECTION = DetectionConfig(activating=20, non_activating=20, holdout_from_rank=TOP, judge="lexical")


@pytest.fixture(scope="module")
def tables():
    return synthetic_tables()


@pytest.mark.parametrize(
    ("in_top", "n_top", "in_background", "n_background"), [(12, 12, 0, 2000), (3, 12, 10, 1000)]
)
def test_g2_is_the_log_likelihood_chi_square_of_the_context_table(in_top, n_top, in_background, n_background):
    table = [[in_top, n_top - in_top], [in_background, n_background - in_background]]
    expected, *_ = chi2_contingency(table, correction=False, lambda_="log-likelihood")
    assert signed_g2(in_top, n_top, in_background, n_background) == pytest.approx(expected)
    assert signed_g2(in_background * n_top // n_background, n_top, in_background + 500, n_background) < 0


def test_a_word_as_common_in_the_background_as_in_the_top_contexts_is_not_distinctive():
    top = [f"answer number {i} zebra." for i in range(10)]
    background = [f"answer number {i}." for i in range(100)]  # "answer" and "number" everywhere
    assert [s.word for s in distinctive_words(top, background)] == ["zebra"]
    assert signed_g2(10, 10, 100, 100) == pytest.approx(0.0, abs=1e-9)


def test_the_planted_word_is_the_explanation_though_frequent_words_are_commoner(tables):
    contexts, background = tables
    top = contexts[(contexts["feature"] == PLANTED_FEATURE) & (contexts["rank"] < TOP)]["context"]
    share = {w: sum(w in words(t) for t in top) / len(top) for w in ("answer", PLANTED_WORD)}
    assert share["answer"] == 1.0 > share[PLANTED_WORD]  # a frequency ranking would put "answer" first
    table = explain_features(contexts, [PLANTED_FEATURE], ContrastiveExplainer(), TOP, background)
    row = table.iloc[0]
    assert (row["explainer"], row["status"], pd.isna(row["score"])) == ("contrastive", "ok", True)
    terms = row["explanation"].split(", ")
    assert terms[0] == PLANTED_WORD and "answer" not in terms
    assert row["raw"].startswith(f"{PLANTED_WORD}: G2 ")


def test_every_explanation_word_occurs_in_the_contexts_the_explainer_was_shown(tables):
    contexts, background = tables
    explainer = ContrastiveExplainer(max_terms=5, min_contexts=2, min_g2=0.0)
    table = explain_features(contexts, list(range(21)), explainer, TOP, background)
    assert (table["status"] == "ok").all()
    for feature, explanation in zip(table["feature"], table["explanation"], strict=True):
        shown = contexts[(contexts["feature"] == feature) & (contexts["rank"] < TOP)]["context"]
        for term in explanation.split(", "):
            assert sum(term in words(text) for text in shown) >= 2, (feature, term)


def test_detection_is_high_for_the_planted_word_and_near_chance_for_random_features(tables):
    contexts, background = tables
    planted = explain_features(contexts, [PLANTED_FEATURE], ContrastiveExplainer(), TOP, background)
    # At the default G² threshold random features get no words; at 0 each gets its 5 likeliest, to be scored.
    random = explain_features(contexts, list(range(1, 21)), ContrastiveExplainer(min_g2=0.0), TOP, background)
    explanations = pd.concat([planted, random], ignore_index=True)
    scores = detection_scores(contexts, background, explanations, LexicalJudge(), DETECTION).set_index(
        "feature"
    )
    assert (scores["status"] == "ok").all() and (scores["judge"] == "lexical").all()
    assert (scores["n_activating"] + scores["n_non_activating"] == 40).all()
    # The planted word is in 80% of the contexts: 0.9 is the expected best, 0.5 chance.
    assert scores.loc[PLANTED_FEATURE, "accuracy"] >= 0.75
    assert 0.4 <= scores.drop(index=PLANTED_FEATURE)["accuracy"].mean() <= 0.6


def test_random_features_mostly_have_no_word_at_p_0001(tables):
    contexts, background = tables
    table = explain_features(contexts, list(range(21)), ContrastiveExplainer(), TOP, background)
    status = table.set_index("feature")["status"]
    assert status[PLANTED_FEATURE] == "ok"
    assert (status.drop(index=PLANTED_FEATURE) == NO_DISTINCTIVE_WORDS).mean() >= 0.5


def test_the_explainer_reads_only_its_half_of_the_background(tables):
    contexts, background = tables
    explainer_half, detection_half = background_halves(background)
    assert len(explainer_half) + len(detection_half) == len(background)
    assert not set(explainer_half["context"]) & set(detection_half["context"])
    seen = []

    class Recording(ContrastiveExplainer):
        def explain_feature(self, shown, silent):
            seen.extend(silent)
            return super().explain_feature(shown, silent)

    explain_features(contexts, [PLANTED_FEATURE], Recording(), TOP, background)
    assert seen and set(seen) <= set(explainer_half["context"])


def test_missing_background_and_a_feature_active_everywhere():
    contexts = pd.DataFrame(
        [(5, r, 1.0, f"zebra {r}.", "s") for r in range(3)],
        columns=["feature", "rank", "activation", "context", "source_id"],
    )
    with pytest.raises(ValueError, match="needs the background contexts"):
        explain_features(contexts, [5], ContrastiveExplainer())
    everywhere = pd.DataFrame(
        {"context": [f"text {i}." for i in range(20)], "source_id": "b", "active_features": [[5]] * 20}
    )
    assert explain_features(contexts, [5], ContrastiveExplainer(), 3, everywhere)["status"].tolist() == [
        NO_SILENT_CONTEXTS
    ]


def test_contrastive_kind_builds_the_explainer_from_its_config_keys():
    explainer = build_explainer(
        ExplainerConfig(kind="contrastive", max_terms=3, min_contexts=4, min_g2=1.5, markers="drop"), None
    )
    assert isinstance(explainer, ContrastiveExplainer)
    assert (explainer.max_terms, explainer.min_contexts, explainer.min_g2) == (3, 4, 1.5)
    assert explainer.markers == "drop"
    with pytest.raises(ValueError, match="max_terms"):
        ContrastiveExplainer(max_terms=0)
    with pytest.raises(ValueError, match="interpret.explainer.markers"):
        ContrastiveExplainer(markers="remove")


def _ending_turns(tables, turn_end: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The synthetic tables with the planted feature firing at turn ends: each of its contexts, and one in
    twenty of the background, ends with `turn_end`."""
    contexts, background = (table.copy() for table in tables)
    planted = contexts["feature"] == PLANTED_FEATURE
    contexts.loc[planted, "context"] = contexts.loc[planted, "context"] + turn_end
    background["context"] = [
        text + turn_end if i % 20 == 0 else text for i, text in enumerate(background["context"])
    ]
    return contexts, background


@pytest.mark.parametrize("template", sorted(TURN_ENDS))
def test_dropped_markers_leave_the_planted_word_and_no_template_text(tables, template):
    contexts, background = _ending_turns(tables, TURN_ENDS[template])
    explainer = ContrastiveExplainer(min_g2=0.0, markers="drop")
    row = explain_features(contexts, [PLANTED_FEATURE], explainer, TOP, background).iloc[0]
    terms = row["explanation"].split(", ")
    assert terms[0] == PLANTED_WORD
    assert not [t for t in terms if "<|" in t or t == "assistant"], terms
    assert "<|" not in row["raw"] and "assistant" not in row["raw"]


@pytest.mark.parametrize("template", sorted(TURN_ENDS))
def test_kept_markers_explain_a_feature_that_fires_at_turn_ends(tables, template):
    contexts, background = _ending_turns(tables, TURN_ENDS[template])
    row = explain_features(contexts, [PLANTED_FEATURE], ContrastiveExplainer(), TOP, background).iloc[0]
    terms = row["explanation"].split(", ")
    assert terms[0] == PLANTED_WORD and set(words(TURN_ENDS[template])) <= set(terms), terms


def test_only_a_role_name_glued_to_a_marker_is_template_text():
    text = "As an AI assistant, I cannot help.<|eot_id|><|start_header_id|>user<|end_header_id|>"
    assert words(without_template_text(text)) == ["as", "an", "ai", "assistant", "i", "cannot", "help"]
