"""Detection scoring (beyond the paper): given only a feature's explanation, can a judge tell held-out
activating contexts from non-activating ones? Reported as accuracy, precision, recall and F1 per feature.

Two judges (`interpret.detection_judge`):
- lexical: a context matches when it holds any content word of the explanation (`words.content_words`; no
  stemming, no synonyms). It needs no model and is the same test for every explainer, so explanations of
  different explainers can be compared; it rewards explanations made of words that occur in the contexts
  and undervalues an abstract sentence whose words do not ("refusals" does not match "I refuse").
- explainer: the configured chat model answers which numbered contexts match (the paper preset's GPT-4o).
  A 135M local model does not follow that instruction reliably, and the contrastive explainer has no chat
  model at all, so the demo uses the lexical judge.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

import pandas as pd
from tqdm.auto import tqdm

from sarm.interpret.contexts import background_halves, silent_contexts
from sarm.interpret.contrastive import ContrastiveExplainer
from sarm.interpret.explainers import CachedChatModel, ExplainerError
from sarm.interpret.prompts import detection_messages, parse_matches
from sarm.interpret.words import content_words, words

log = logging.getLogger(__name__)

JUDGES = ("lexical", "explainer")
DETECTION_COLUMNS = [
    "feature",
    "judge",
    "n_activating",
    "n_non_activating",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "status",
    "raw",
]


@dataclass(frozen=True)
class DetectionConfig:
    activating: int = 10  # held-out activating contexts shown per feature
    non_activating: int = 10  # background contexts on which the feature is silent
    holdout_from_rank: int = 40  # the explainer saw ranks below this; detection uses the ones after
    seed: int = 0
    judge: str = "lexical"  # one of JUDGES

    @classmethod
    def from_config(cls, interpret: dict) -> DetectionConfig:
        """From the validated `interpret` config section."""
        count = interpret["detection_contexts"]
        return cls(
            activating=count,
            non_activating=count,
            holdout_from_rank=interpret["top_contexts"],
            judge=interpret.get("detection_judge", cls.judge),
        )


class LexicalJudge:
    """A context matches when it holds any content word of the explanation."""

    name = "lexical"

    def matches(self, explanation: str, contexts: list[str]) -> tuple[set[int], str]:
        """0-based indices of the matching contexts, and which words matched where."""
        wanted = content_words(explanation)
        found = {i: sorted(wanted & set(words(text))) for i, text in enumerate(contexts)}
        hits = {i for i, matched in found.items() if matched}
        listed = "; ".join(f"{i + 1}: {' '.join(found[i])}" for i in sorted(hits)) or "none"
        return hits, f"words: {', '.join(sorted(wanted))}\nMatches: {listed}"


class ChatJudge:
    """A chat model names the contexts that match the explanation."""

    def __init__(self, model: CachedChatModel):
        self.model, self.name = model, model.name

    def matches(self, explanation: str, contexts: list[str]) -> tuple[set[int] | None, str]:
        """0-based indices of the matching contexts (None if the answer has no valid list), and the answer."""
        raw = self.model.complete(detection_messages(explanation, contexts))
        return parse_matches(raw, len(contexts)), raw


def build_judge(
    kind: str, explainer: CachedChatModel | ContrastiveExplainer | None
) -> LexicalJudge | ChatJudge:
    """The detection judge of `interpret.detection_judge`; kind explainer reuses the chat explainer."""
    if kind == "lexical":
        return LexicalJudge()
    if kind != "explainer":
        raise ExplainerError(
            f"config key `interpret.detection_judge` must be one of {', '.join(JUDGES)}, got {kind!r}"
        )
    if not isinstance(explainer, CachedChatModel):
        raise ExplainerError(
            "config key `interpret.detection_judge` is explainer, but `interpret.explainer.kind` is not a chat "
            "model (openai or local) that could judge: set `interpret.detection_judge: lexical`"
        )
    return ChatJudge(explainer)


def classification_scores(truth: list[bool], predicted: list[bool]) -> dict[str, float]:
    """Accuracy, precision, recall, F1 of `predicted` against `truth` (0 where a ratio is undefined)."""
    tp = sum(t and p for t, p in zip(truth, predicted, strict=True))
    fp = sum(p and not t for t, p in zip(truth, predicted, strict=True))
    fn = sum(t and not p for t, p in zip(truth, predicted, strict=True))
    tn = len(truth) - tp - fp - fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": (tp + tn) / len(truth), "precision": precision, "recall": recall, "f1": f1}


def detection_examples(
    contexts: pd.DataFrame, background: pd.DataFrame, feature: int, config: DetectionConfig
) -> list[tuple[str, bool]]:
    """A shuffled mix of (context, activates?) for one feature, the same on every run.

    Silent contexts come from the detection half of the background only (`background_halves`).
    """
    rng = random.Random(f"{config.seed}:{feature}")
    held_out = contexts[(contexts["feature"] == feature) & (contexts["rank"] >= config.holdout_from_rank)]
    activating = held_out.sort_values("rank")["context"].astype(str).head(config.activating).tolist()
    silent = silent_contexts(background_halves(background)[1], feature, exclude=activating)
    silent = rng.sample(silent, min(config.non_activating, len(silent)))
    if not activating or not silent:
        return []
    examples = [(text, True) for text in activating] + [(text, False) for text in silent]
    rng.shuffle(examples)
    return examples


def detection_scores(
    contexts: pd.DataFrame,
    background: pd.DataFrame,
    explanations: pd.DataFrame,
    judge: LexicalJudge | ChatJudge | CachedChatModel,
    config: DetectionConfig = DetectionConfig(),
) -> pd.DataFrame:
    """Per explained feature: the judge's detection scores (status ok | unparseable | too_few_contexts)."""
    if isinstance(judge, CachedChatModel):
        judge = ChatJudge(judge)
    rows = []
    explained = explanations[explanations["status"] == "ok"]
    for feature, explanation in tqdm(
        zip(explained["feature"].astype(int), explained["explanation"].astype(str), strict=True),
        total=len(explained),
        desc="detection scoring",
        unit="feature",
    ):
        examples = detection_examples(contexts, background, feature, config)
        row = {"feature": feature, "judge": judge.name, "n_activating": sum(a for _, a in examples)}
        row["n_non_activating"] = len(examples) - row["n_activating"]
        if not examples:
            rows.append({**row, "status": "too_few_contexts", "raw": ""})
            continue
        matches, raw = judge.matches(explanation, [text for text, _ in examples])
        if matches is None:
            rows.append({**row, "status": "unparseable", "raw": raw})
            continue
        predicted = [i in matches for i in range(len(examples))]
        scores = classification_scores([a for _, a in examples], predicted)
        rows.append({**row, **scores, "status": "ok", "raw": raw})
    table = pd.DataFrame(rows, columns=DETECTION_COLUMNS)
    for column in ("accuracy", "precision", "recall", "f1"):
        table[column] = table[column].astype(float)
    log.info("detection scored %d features: %s", len(table), table["status"].value_counts().to_dict())
    return table
