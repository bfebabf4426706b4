"""Feature cards, the paper's case studies: the explained features with the largest positive and negative
value-head weights, each with who explained it, its explanation, consistency score, detection accuracy (with
the number of contexts and the judge it was measured with) and top contexts.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

from sarm.runtime import atomic_write, write_text_atomic

POSITIVE, NEGATIVE = "positive", "negative"
SIGN_TITLES = {
    POSITIVE: "Positive features (raise the reward)",
    NEGATIVE: "Negative features (lower the reward)",
}
SIGN_COLORS = {POSITIVE: "#2b7bba", NEGATIVE: "#c0392b"}


@dataclass(frozen=True)
class FeatureCard:
    feature: int
    sign: str
    weight: float
    explainer: str  # e.g. contrastive, local:smollm2-135m, openai:gpt-4o
    explanation: str | None
    score: int | None
    status: str
    detection_accuracy: float | None
    detection_contexts: int | None  # held-out activating + silent contexts the accuracy was measured on
    judge: str | None
    examples: list[tuple[float, str]]  # (activation, context), strongest first


def _optional(value) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def feature_cards(
    head_weight: torch.Tensor,
    explanations: pd.DataFrame,
    detection: pd.DataFrame | None,
    contexts: pd.DataFrame,
    per_sign: int = 5,
    examples: int = 3,
) -> list[FeatureCard]:
    """Cards for the `per_sign` explained features with the largest positive, then most negative, weights."""
    weight = torch.as_tensor(head_weight).detach().float().cpu().flatten()
    _require(explanations, ["feature", "explainer", "explanation", "score", "status"], "explanations")
    explained = explanations.set_index("feature")
    measured = pd.DataFrame(columns=["accuracy", "n_activating", "n_non_activating", "judge"])
    if detection is not None:
        _require(detection, ["feature", "judge", "accuracy", "n_activating", "n_non_activating"], "detection")
        measured = detection.set_index("feature")
    too_big = [int(f) for f in explained.index if not 0 <= f < weight.numel()]
    if too_big:
        raise ValueError(f"explained features {too_big[:5]} are outside the {weight.numel()} head weights")
    by_weight = sorted(explained.index, key=lambda f: -float(weight[f]))
    chosen = [(f, POSITIVE) for f in by_weight if weight[f] > 0][:per_sign]
    chosen += [(f, NEGATIVE) for f in reversed(by_weight) if weight[f] < 0][:per_sign]
    cards = []
    for feature, sign in chosen:
        row = explained.loc[feature]
        top = contexts[contexts["feature"] == feature].sort_values("rank").head(examples)
        scored = measured.loc[feature] if feature in measured.index else None
        accuracy = None if scored is None else _optional(scored["accuracy"])
        cards.append(
            FeatureCard(
                feature=int(feature),
                sign=sign,
                weight=float(weight[feature]),
                explainer=str(row["explainer"]),
                explanation=None if pd.isna(row["explanation"]) else str(row["explanation"]),
                score=None if pd.isna(row["score"]) else int(row["score"]),
                status=str(row["status"]),
                detection_accuracy=accuracy,
                detection_contexts=None
                if accuracy is None
                else int(scored["n_activating"]) + int(scored["n_non_activating"]),
                judge=None if accuracy is None else str(scored["judge"]),
                examples=list(zip(top["activation"].astype(float), top["context"].astype(str), strict=True)),
            )
        )
    return cards


def _require(table: pd.DataFrame, columns: list[str], name: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(
            f"the {name} table lacks column(s) {missing} (written by an older version? rerun its rule)"
        )


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _explanation(card: FeatureCard) -> str:
    return card.explanation if card.explanation else f"(no explanation: {card.status})"


def _score(card: FeatureCard) -> str:
    return f"{card.score}/5" if card.score is not None else "n/a"


def _accuracy(card: FeatureCard) -> str:
    """e.g. "0.85 on 20 (lexical)": accuracy, held-out contexts it was measured on, judge."""
    if card.detection_accuracy is None:
        return "n/a"
    return f"{card.detection_accuracy:.2f} on {card.detection_contexts} ({card.judge})"


def cards_markdown(cards: list[FeatureCard], title: str = "Feature cards") -> str:
    """The cards as Markdown: a summary table per sign, then one section per feature with its contexts."""
    lines = [
        f"# {title}",
        "",
        "Features of the value head (r = sum_i z_i w_i) with the largest positive and negative weights among the",
        "explained features. Explainer: what wrote the explanation (contrastive: the words that set the top",
        "contexts apart from silent ones, no language model). Score: Activation Consistency of the explanation",
        "(5 = every context fits, 1 = no pattern), given by LLM explainers only. Detection: accuracy of a judge",
        "telling held-out activating contexts from silent ones using only the explanation, on N contexts",
        "(0.5 = chance on a balanced mix), and the judge (lexical: a context matches when it holds a content",
        "word of the explanation).",
    ]
    for sign in (POSITIVE, NEGATIVE):
        group = [c for c in cards if c.sign == sign]
        lines += ["", f"## {SIGN_TITLES[sign]}", ""]
        if not group:
            lines.append(f"No explained feature has a {sign} weight.")
            continue
        lines += [
            "| feature | weight | explainer | explanation | score | detection |",
            "|---:|---:|---|---|:---:|:---:|",
        ]
        lines += [
            f"| {c.feature} | {c.weight:+.3g} | {_cell(c.explainer)} | {_cell(_explanation(c))} | {_score(c)} "
            f"| {_accuracy(c)} |"
            for c in group
        ]
        for card in group:
            lines += ["", f"### Feature {card.feature} (w = {card.weight:+.3g})", ""]
            lines += [f"**Explanation:** {_cell(_explanation(card))}", ""]
            lines += [
                f"Explainer {card.explainer}; score {_score(card)}; detection accuracy {_accuracy(card)}.",
                "",
            ]
            lines += ["| activation | context |", "|---:|---|"]
            lines += [f"| {value:.3g} | {_cell(text)} |" for value, text in card.examples]
    return "\n".join(lines) + "\n"


def _tail(text: str, width: int) -> str:
    """The end of a context (where the feature fired), cut to `width` characters."""
    text = " ".join(text.split())
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def plot_feature_cards(cards: list[FeatureCard], out_png: str | Path, title: str = "Feature cards") -> Path:
    """Positive cards in the left column, negative in the right: header, explanation, example contexts."""
    rows = max(1, max(sum(c.sign == s for c in cards) for s in (POSITIVE, NEGATIVE)) if cards else 1)
    figure = Figure(figsize=(14, 0.6 + 2.5 * rows))
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(
        rows,
        2,
        left=0.01,
        right=0.99,
        top=1 - 0.5 / (0.6 + 2.5 * rows),
        bottom=0.01,
        hspace=0.08,
        wspace=0.03,
    )
    figure.suptitle(title, fontsize=13, fontweight="bold")
    for column, sign in enumerate((POSITIVE, NEGATIVE)):
        group = [c for c in cards if c.sign == sign]
        for row in range(rows):
            ax = figure.add_subplot(grid[row, column])
            ax.set_axis_off()
            if row == 0:
                ax.set_title(SIGN_TITLES[sign], color=SIGN_COLORS[sign], fontsize=11, loc="left")
            if row >= len(group):
                continue
            _draw_card(ax, group[row])
    return atomic_write(out_png, lambda tmp: figure.savefig(tmp, format="png", dpi=130))


def _draw_card(ax, card: FeatureCard) -> None:
    color = SIGN_COLORS[card.sign]
    ax.add_patch(_box(ax, color))
    text = {"transform": ax.transAxes, "va": "top", "ha": "left", "parse_math": False}
    header = (
        f"Feature {card.feature}   w = {card.weight:+.3g}   {card.explainer}   score {_score(card)}   "
        f"detection {_accuracy(card)}"
    )
    ax.text(0.02, 0.95, header, fontsize=10, fontweight="bold", color=color, **text)
    explanation = textwrap.fill(_explanation(card), 95, max_lines=2, placeholder=" …")
    ax.text(0.02, 0.80, explanation, fontsize=9, style="italic", **text)
    y = 0.52
    for value, context in card.examples:
        ax.text(0.02, y, f"{value:.3g}", fontsize=8, family="monospace", color=color, **text)
        ax.text(0.09, y, _tail(context, 110), fontsize=8, **text)
        y -= 0.16
        if y < 0.05:
            break


def _box(ax, color: str) -> FancyBboxPatch:
    return FancyBboxPatch(
        (0.005, 0.02),
        0.99,
        0.96,
        boxstyle="round,pad=0,rounding_size=0.02",
        transform=ax.transAxes,
        facecolor="white",
        edgecolor=color,
        linewidth=1.2,
    )


def write_feature_cards(
    cards: list[FeatureCard], markdown_path: str | Path, figure_path: str | Path, title: str = "Feature cards"
) -> None:
    """The Markdown file and the figure, each written atomically."""
    write_text_atomic(cards_markdown(cards, title), markdown_path)
    plot_feature_cards(cards, figure_path, title)
