"""Feature cards: selection by head weight, Markdown content, the figure."""

import pandas as pd
import pytest
import torch

from sarm.interpret.cards import NEGATIVE, POSITIVE, cards_markdown, feature_cards, write_feature_cards
from sarm.interpret.explainers import features_to_explain

WEIGHT = torch.tensor([0.0, 0.5, -0.4, 0.2, -0.1, 0.3, -0.9, 0.05])


@pytest.fixture
def tables():
    explained = [1, 2, 3, 4, 5, 7]
    explanations = pd.DataFrame(
        {
            "feature": explained,
            "explainer": ["openai:gpt-4o", "contrastive"] + ["openai:gpt-4o"] * 4,
            "explanation": ["Refusals.", "Insults | slurs.", None, "Typos.", "Code.", "Dates."],
            "score": pd.array([5, 4, None, 2, 3, 1], dtype="Int64"),
            "status": ["ok", "ok", "unparseable", "ok", "ok", "ok"],
            "raw": [""] * 6,
        }
    )
    detection = pd.DataFrame(
        {
            "feature": [1, 2, 4],
            "judge": ["lexical", "lexical", "lexical"],
            "n_activating": [10, 10, 1],
            "n_non_activating": [10, 10, 1],
            "accuracy": [0.9, 0.65, None],  # feature 4: unparseable judge answer
        }
    )
    contexts = pd.DataFrame(
        [(f, r, 4.0 - r, f"context {r} of feature {f}, costs $5.", "s") for f in range(8) for r in range(4)],
        columns=["feature", "rank", "activation", "context", "source_id"],
    )
    return explanations, detection, contexts


def test_cards_take_the_largest_positive_and_most_negative_explained_weights(tables):
    cards = feature_cards(WEIGHT, *tables, per_sign=2, examples=2)
    assert [(c.feature, c.sign) for c in cards] == [
        (1, POSITIVE),
        (5, POSITIVE),
        (2, NEGATIVE),
        (4, NEGATIVE),
    ]
    first = cards[0]
    assert (first.weight, first.explainer, first.explanation, first.score) == (
        0.5,
        "openai:gpt-4o",
        "Refusals.",
        5,
    )
    assert (first.detection_accuracy, first.detection_contexts, first.judge) == (0.9, 20, "lexical")
    assert first.examples == [
        (4.0, "context 0 of feature 1, costs $5."),
        (3.0, "context 1 of feature 1, costs $5."),
    ]
    assert cards[1].detection_accuracy is None  # feature 5 was not detection-scored
    assert (cards[3].detection_accuracy, cards[3].detection_contexts) == (None, None)  # 4: no accuracy


def test_markdown_lists_each_card_with_its_numbers_and_escapes_table_cells(tables):
    text = cards_markdown(feature_cards(WEIGHT, *tables, per_sign=3))
    assert "| 1 | +0.5 | openai:gpt-4o | Refusals. | 5/5 | 0.90 on 20 (lexical) |" in text
    assert "| 2 | -0.4 | contrastive | Insults \\| slurs. | 4/5 | 0.65 on 20 (lexical) |" in text
    assert "| 3 | +0.2 | openai:gpt-4o | (no explanation: unparseable) | n/a | n/a |" in text
    assert "Explainer contrastive; score 4/5; detection accuracy 0.65 on 20 (lexical)." in text
    assert text.index("## Positive") < text.index("### Feature 1 ") < text.index("## Negative")
    assert "| 4 | context 0 of feature 2, costs $5. |" in text


def test_markdown_says_when_a_sign_has_no_feature(tables):
    explanations, detection, contexts = tables
    only_positive = explanations[explanations["feature"].isin([1, 5])]
    assert "No explained feature has a negative weight." in cards_markdown(
        feature_cards(WEIGHT, only_positive, detection, contexts)
    )


@pytest.mark.parametrize(("table", "column"), [(0, "explainer"), (1, "judge"), (1, "n_activating")])
def test_tables_without_provenance_or_context_counts_are_refused(tables, table, column):
    tables = list(tables)
    tables[table] = tables[table].drop(columns=column)
    with pytest.raises(ValueError, match=f"lacks column.*{column}"):
        feature_cards(WEIGHT, *tables)


def test_explained_feature_outside_the_head_is_an_error(tables):
    explanations, detection, contexts = tables
    with pytest.raises(ValueError, match="outside the 8 head weights"):
        feature_cards(
            WEIGHT, pd.concat([explanations, explanations.head(1).assign(feature=99)]), detection, contexts
        )


def test_written_cards_are_markdown_and_png(tables, tmp_path):
    write_feature_cards(
        feature_cards(WEIGHT, *tables), tmp_path / "cards.md", tmp_path / "cards.png", title="SARM demo"
    )
    assert (tmp_path / "cards.md").read_text().startswith("# SARM demo\n")
    assert (tmp_path / "cards.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cards.md", "cards.png"]


def test_features_to_explain_are_balanced_by_sign_and_have_contexts(tables):
    _, _, contexts = tables
    with_contexts = contexts[contexts["feature"] != 6]  # the most negative weight never fired
    assert features_to_explain(WEIGHT, with_contexts, 4) == [1, 2, 5, 4]
    assert features_to_explain(WEIGHT, with_contexts[with_contexts["feature"].isin([1, 3, 5, 7, 2])], 4) == [
        1,
        2,
        5,
        3,
    ]
    assert features_to_explain(WEIGHT, with_contexts, 100) == [1, 2, 5, 3, 4, 7]
