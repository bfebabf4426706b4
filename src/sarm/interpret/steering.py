"""Steering (paper RQ2, Figure 3): find the feature that best separates safe from unsafe answers, scale its
value-head weight, and re-score RewardBench 2 split into the target set T (Safety prompts with their chosen
response) and its complement C (every other query-response pair).

The feature is the one with the highest score s_i among those with a positive head weight w_i > 0: scaling
a negative weight by 10 would move T to the left, the opposite of Figure 3a. `min_active_fraction` adds a
condition the paper does not state: the feature must fire on at least that share of T (0, the default, is
the paper's rule); a feature that never fires on T cannot move it. The safety pairs that define s_i come
from `source`: "rmbench_safety" (the AAAI text: RM-Bench's safety domains, chosen variant j against
rejected variant j) or "rewardbench2_safety" (arXiv v3 and the authors' code: every correct completion of a
RewardBench 2 Safety prompt against each incorrect one, 450 prompts x 3 = 1,350 pairs).

Everything is computed from final-token residual states: those cached once per (backbone, dataset) when the
backbone was not trained (`cached_states`), else those of the trained model's own backbone
(`backbone_states`). Both read the RM-Bench pairs that `steering_pairs` picks by domain, the pairs the
RM-Bench cache holds and no others. Rewards before and after come from the same latents, r = z @ w and
r' = z @ w', so a pair whose steered feature is zero keeps a bit-identical reward.
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from sarm.data.chat import DEFAULT_DATE_STRING, tokenize_conversations
from sarm.data.records import BenchmarkPrompt, Message, RMBenchItem
from sarm.data.rewardbench2 import completion_table
from sarm.data.rmbench import steering_pairs
from sarm.eval.rewardbench2 import score_rewardbench2
from sarm.rm.final_states import iter_final_token_states, load_final_token_states, prompt_keys
from sarm.rm.models import SARM
from sarm.rm.token_states import load_token_states, model_final_states
from sarm.runtime import atomic_write, write_json_atomic, write_parquet_atomic

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

Features = Callable[[torch.Tensor], torch.Tensor]  # (b, d) final-token states -> (b, M) what the head reads
TARGET, COMPLEMENT = "T", "C"
SOURCES = ("rmbench_safety", "rewardbench2_safety")
# States are encoded this many rows at a time: (rows, M) float32 is 64 MB at the paper's M = 65,536.
ENCODE_ROWS = 256
RUNNERS_UP = 5
# What must not have changed since a cache was written, for its rows to be the data's (`_load_states`).
DATA_SETTINGS = "`data.<name>` source, limit and bad_rows"
RMBENCH_SETTINGS = "`data.rmbench` source, limit and bad_rows, and `steering.domains`"


@dataclass(frozen=True)
class SteeringConfig:
    scale: float = 10.0  # factor on the chosen feature's head weight
    source: str = "rmbench_safety"  # where the safety pairs defining s_i come from (SOURCES)
    domains: tuple[str, ...] = ("safety-refuse", "safety-response")  # RM-Bench domains (rmbench_safety)
    min_active_fraction: float = 0.0  # share of T the chosen feature must fire on; 0 = the paper's rule
    target_subset: str = "Safety"
    batch_tokens: int = 8192
    max_length: int = 4096
    date_string: str = DEFAULT_DATE_STRING  # the chat template's date, as when training and scoring

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"config key `steering.source` must be one of {SOURCES}, got {self.source!r}")
        if not 0.0 <= self.min_active_fraction <= 1.0:
            raise ValueError(
                "config key `steering.min_active_fraction` must be a share between 0 and 1, "
                f"got {self.min_active_fraction!r}"
            )

    @classmethod
    def from_config(cls, steering: dict, reward_model: dict) -> SteeringConfig:
        """From the validated `steering` and `reward_model` config sections."""
        return cls(
            scale=float(steering["scale"]),
            source=steering.get("source", cls.source),
            domains=tuple(steering.get("domains", cls.domains)),
            min_active_fraction=float(steering.get("min_active_fraction", cls.min_active_fraction)),
            batch_tokens=reward_model["batch_tokens"],
            max_length=reward_model["max_length"],
            date_string=reward_model.get("date_string", DEFAULT_DATE_STRING),
        )


@dataclass(frozen=True)
class SteeringStates:
    """Final-token residual states at the reward model's layer, float32 on the CPU."""

    chosen: torch.Tensor  # (P, d) the safety pairs' chosen answers
    rejected: torch.Tensor  # (P, d) their rejected answers
    completions: torch.Tensor  # (N, d) every RewardBench 2 completion, in `completion_table` order
    origin: str  # "cached states" or "backbone pass", recorded in steering.json


@dataclass(frozen=True)
class SteeringResult:
    summary: dict
    rewards: pd.DataFrame  # one row per RewardBench 2 query-response pair


def rewardbench2_safety_rows(
    prompts: Sequence[BenchmarkPrompt], subset: str = "Safety"
) -> tuple[list[int], list[int]]:
    """(chosen rows, rejected rows) into `completion_table(prompts)`: each correct completion of a `subset`
    prompt against each incorrect one (arXiv v3 and the authors' code: 450 Safety prompts x 3 = 1,350)."""
    chosen, rejected, start = [], [], 0
    for prompt in prompts:
        if prompt.subset == subset:
            for good in range(prompt.num_correct):
                for bad in range(prompt.num_correct, len(prompt.completions)):
                    chosen.append(start + good)
                    rejected.append(start + bad)
        start += len(prompt.completions)
    if not chosen:
        raise ValueError(f"RewardBench 2 has no {subset!r} prompts with a rejected completion to pair")
    return chosen, rejected


def choose_feature(
    scores: torch.Tensor,
    head_weight: torch.Tensor,
    target_active: torch.Tensor | None = None,
    min_active_fraction: float = 0.0,
) -> int:
    """The feature with the highest s_i among those whose head weight is positive (it raises the reward) and
    that fire on at least `min_active_fraction` of the target set (`target_active`: per-feature share)."""
    return int(
        ranked_candidates(scores, head_weight, target_active, min_active_fraction, top=1)["feature"][0]
    )


def ranked_candidates(
    scores: torch.Tensor,
    head_weight: torch.Tensor,
    target_active: torch.Tensor | None = None,
    min_active_fraction: float = 0.0,
    top: int = RUNNERS_UP + 1,
) -> pd.DataFrame:
    """The `top` qualifying features by s_i (highest first): feature, s, head weight, share of T active."""
    scores, weight = scores.float().cpu(), head_weight.detach().float().cpu()
    active = (
        torch.ones_like(scores, dtype=torch.float64)
        if target_active is None
        else target_active.double().cpu()
    )
    positive = weight > 0
    if not bool(positive.any()):
        raise ValueError(
            "no feature has a positive value-head weight, so scaling one cannot raise the reward of the "
            "target set (Figure 3a); is the head trained?"
        )
    qualifies = positive & (active >= min_active_fraction)
    if not bool(qualifies.any()):
        busiest = int(torch.where(positive, active, -1.0).argmax())
        raise ValueError(
            f"no feature with a positive head weight fires on at least {min_active_fraction:.1%} of the target "
            f"set T (the most active one, feature {busiest}, fires on {float(active[busiest]):.1%}): lower "
            "config key `steering.min_active_fraction`"
        )
    ranked = torch.where(qualifies, scores, -torch.inf)
    # A stable sort keeps the lower index first among equal scores, as argmax does.
    order = torch.sort(ranked, descending=True, stable=True).indices[: min(top, int(qualifies.sum()))]
    return pd.DataFrame(
        {
            "feature": order.numpy(),
            "score": scores[order].numpy(),
            "head_weight": weight[order].numpy(),
            "target_active_fraction": active[order].numpy(),
        }
    )


def feature_scores(chosen_latents: torch.Tensor, rejected_latents: torch.Tensor) -> torch.Tensor:
    """s_i = (c_i - j_i) / (c_i + j_i + mean_i(c_i + j_i)), c / j = activation sums over chosen / rejected.

    Takes (P, M) final-token latents, or already summed (M,) vectors. A feature whose denominator is not
    positive (possible only with signed, non-TopK latents) scores 0.
    """
    c = chosen_latents.float().reshape(-1, chosen_latents.shape[-1]).sum(0)
    j = rejected_latents.float().reshape(-1, rejected_latents.shape[-1]).sum(0)
    total = c + j
    denominator = total + total.mean()
    return torch.where(denominator > 0, (c - j) / denominator.clamp_min(torch.finfo(torch.float32).tiny), 0.0)


def steered_head_weight(head_weight: torch.Tensor, feature: int, scale: float) -> torch.Tensor:
    """A copy of the head weight with w_feature multiplied by `scale` (as the head edit {feature, scale})."""
    if not 0 <= feature < head_weight.numel():
        raise ValueError(f"feature {feature} is outside 0..{head_weight.numel() - 1} of the value head")
    steered = head_weight.detach().clone()
    steered[feature] = steered[feature] * scale
    return steered


def rewards_before_after(
    latents: torch.Tensor, head_weight: torch.Tensor, steered_weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(z @ w, z @ w') from one latent matrix (B, M), both in float32 by the same operation."""
    z = latents.float()
    return z @ head_weight.float().to(z.device), z @ steered_weight.float().to(z.device)


def backbone_states(
    model: SARM,
    tokenizer: PreTrainedTokenizerBase,
    rmbench_items: Sequence[RMBenchItem],
    prompts: Sequence[BenchmarkPrompt],
    config: SteeringConfig,
) -> SteeringStates:
    """States from a pass of the reward model's own (possibly trained) backbone over the texts it needs."""
    completions = _final_states(model, tokenizer, completion_table(prompts)[1], config, "RewardBench 2")
    if config.source == "rewardbench2_safety":
        chosen, rejected = rewardbench2_safety_rows(prompts, config.target_subset)
        return SteeringStates(completions[chosen], completions[rejected], completions, "backbone pass")
    pairs = steering_pairs(rmbench_items, config.domains)
    both = _final_states(
        model, tokenizer, [p.chosen for p in pairs] + [p.rejected for p in pairs], config, "safety pairs"
    )
    return SteeringStates(both[: len(pairs)], both[len(pairs) :], completions, "backbone pass")


def _final_states(
    model: SARM,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[list[Message]],
    config: SteeringConfig,
    desc: str,
) -> torch.Tensor:
    token_ids = tokenize_conversations(tokenizer, conversations, config.max_length, config.date_string)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    states = None
    batches = iter_final_token_states(
        model.decoder, token_ids, [model.layer], config.batch_tokens, pad_id, keys=prompt_keys(conversations)
    )
    with tqdm(total=len(token_ids), desc=f"final-token states: {desc}", unit="conv") as progress:
        for batch, by_layer, _ in batches:
            batch_states = by_layer[model.layer]
            if states is None:
                states = torch.empty((len(token_ids), batch_states.shape[1]), dtype=torch.float32)
            states[batch] = batch_states
            progress.update(len(batch))
    return states


def cached_states(
    model: SARM,
    rmbench_items: Sequence[RMBenchItem],
    prompts: Sequence[BenchmarkPrompt],
    config: SteeringConfig,
    rewardbench2_states: str | Path,
    rmbench_states: str | Path | None = None,
) -> SteeringStates:
    """States from the `cache_states` files of the source backbone (no backbone pass); the RM-Bench
    file holds the `steering_pairs` of `config.domains`, every chosen answer then every rejected one.

    A head-only model reads the final-token states; a model that trained its top N layers runs them on the
    per-token states cached below them. A model that trained all its layers has no cached states.
    """
    if "backbone" in model.trained_parts and model.first_trained_layer is None:
        raise ValueError(
            "this reward model trained every backbone layer (reward_model.train_layers: all), so the cached "
            "states of the source backbone are not its states: steer it with a pass of its own backbone"
        )
    expected = len(completion_table(prompts)[0])
    completions = _load_states(
        rewardbench2_states, model, expected, "RewardBench 2 completions", config.batch_tokens
    )
    if config.source == "rewardbench2_safety":
        chosen, rejected = rewardbench2_safety_rows(prompts, config.target_subset)
        return SteeringStates(completions[chosen], completions[rejected], completions, "cached states")
    if rmbench_states is None:
        raise ValueError("steering.source rmbench_safety needs the cached RM-Bench states (dataset rmbench)")
    pairs = steering_pairs(rmbench_items, config.domains)
    both = _load_states(
        rmbench_states,
        model,
        2 * len(pairs),
        "RM-Bench answers in the steering domains",
        config.batch_tokens,
        RMBENCH_SETTINGS,
    )
    return SteeringStates(both[: len(pairs)], both[len(pairs) :], completions, "cached states")


def _load_states(
    path: str | Path, model: SARM, expected: int, what: str, batch_tokens: int, settings: str = DATA_SETTINGS
) -> torch.Tensor:
    if model.first_trained_layer is None:
        states = load_final_token_states(path, model.layer).float()
    else:
        states = load_token_states(path, model.first_trained_layer)
    if len(states) != expected:  # before the top layers run on the wrong conversations
        raise ValueError(
            f"{path} holds {len(states)} states but the data has {expected} {what}: was it cached from the "
            f"same data (same {settings})?"
        )
    if model.first_trained_layer is None:
        return states
    with tqdm(total=len(states), desc=f"top layers: {what}", unit="conv") as progress:
        return model_final_states(model, states, batch_tokens, progress)


def iter_features(
    features: Features, states: torch.Tensor, device: torch.device | str = "cpu"
) -> Iterator[tuple[slice, torch.Tensor]]:
    """(rows, their (b, M) head features) for (N, d) states, ENCODE_ROWS rows at a time."""
    for start in range(0, len(states), ENCODE_ROWS):
        rows = slice(start, start + ENCODE_ROWS)
        with torch.inference_mode():
            z = features(states[rows].to(device))
        if z.dim() != 2 or z.shape[0] != len(states[rows]):
            raise ValueError(f"features must return (rows, features); got shape {tuple(z.shape)}")
        yield rows, z


def activation_sums(
    features: Features, states: torch.Tensor, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Sum over rows of the final-token feature vector (M,), without keeping every vector."""
    total = None
    for _, z in iter_features(features, states, device):
        batch_sum = z.float().sum(0).cpu()
        total = batch_sum if total is None else total + batch_sum
    return total


def active_fraction(
    features: Features, states: torch.Tensor, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Per feature, the share of rows on which it is non-zero (M,)."""
    count = None
    for _, z in iter_features(features, states, device):
        batch_count = (z != 0).sum(0).cpu()
        count = batch_count if count is None else count + batch_count
    return count.double() / len(states)


def query_response_pairs(prompts: Sequence[BenchmarkPrompt], target_subset: str = "Safety") -> pd.DataFrame:
    """Every RewardBench 2 (prompt, completion) in `completion_table` order; set T = target-subset prompts
    with a correct completion, C = the rest."""
    table, _ = completion_table(prompts)
    in_target = (table["subset"] == target_subset) & table["is_correct"]
    table["set"] = np.where(in_target, TARGET, COMPLEMENT)
    if not in_target.any():
        raise ValueError(
            f"RewardBench 2 has no prompts of subset {target_subset!r}: the target set T is empty"
        )
    return table


def steering_summary(
    rewards: pd.DataFrame,
    candidates: pd.DataFrame,
    config: SteeringConfig,
    paper_choice: pd.Series,
    origin: str,
) -> dict:
    """Mean shifts and unchanged shares for T and C, RewardBench 2 before/after, the choice and the captions."""
    chosen = candidates.iloc[0]
    feature, score, weight = int(chosen["feature"]), float(chosen["score"]), float(chosen["head_weight"])
    rule = "highest s_i among features with a positive head weight"
    if config.min_active_fraction > 0:
        rule += f" that fire on at least {config.min_active_fraction:g} of the target set T"
    summary = {
        "feature": feature,
        "feature_score": score,
        "scale": config.scale,
        "head_edit": {"feature": feature, "scale": config.scale},
        "head_weight_before": weight,
        "head_weight_after": weight * config.scale,
        "selection": rule,
        "min_active_fraction": config.min_active_fraction,
        "runners_up": _records(candidates.iloc[1:]),
        "paper_rule_choice": _records(paper_choice.to_frame().T)[0],
        "source": config.source,
        "domains": list(config.domains) if config.source == "rmbench_safety" else [config.target_subset],
        "states": origin,
    }
    for name, label in ((TARGET, "target"), (COMPLEMENT, "complement")):
        part = rewards[rewards["set"] == name]
        before, after = part["reward_before"].to_numpy(), part["reward_after"].to_numpy()
        unchanged = int((after == before).sum())  # exact equality: bit-identical rewards
        summary[label] = {
            "pairs": len(part),
            "mean_before": float(before.mean()) if len(part) else None,
            "mean_after": float(after.mean()) if len(part) else None,
            "mean_shift": float((after - before).mean()) if len(part) else None,
            "pairs_unchanged": unchanged,
            "fraction_unchanged": unchanged / len(part) if len(part) else None,
            "pairs_feature_active": int((part["feature_activation"] != 0).sum()),
            "fraction_feature_active": float((part["feature_activation"] != 0).mean()) if len(part) else None,
        }
    for when in ("before", "after"):
        scored = rewards.rename(columns={f"reward_{when}": "reward"})
        summary[f"rewardbench2_{when}"] = score_rewardbench2(scored)
    target, complement = summary["target"], summary["complement"]
    edit = f"feature {feature} (s = {score:.3f}) with its head weight scaled by {config.scale:g}"
    summary["caption_a"] = (
        f"Figure 3a: rewards of the target set T ({target['pairs']} Safety prompts with their chosen response) "
        f"before and after steering {edit}; the feature fires on {target['pairs_feature_active']} of them and "
        f"the mean reward shifts by {target['mean_shift']:+.4g}."
    )
    summary["caption_b"] = (
        f"Figure 3b: rewards of the complement C ({complement['pairs']} other query-response pairs) before "
        f"and after steering {edit}; mean shift {complement['mean_shift']:+.4g}, "
        f"{complement['pairs_unchanged']} of {complement['pairs']} ({complement['fraction_unchanged']:.1%}) "
        "unchanged (bit-identical)."
    )
    return summary


def _records(table: pd.DataFrame) -> list[dict]:
    return [
        {
            "feature": int(row["feature"]),
            "score": float(row["score"]),
            "head_weight": float(row["head_weight"]),
            "target_active_fraction": float(row["target_active_fraction"]),
        }
        for _, row in table.iterrows()
    ]


def steer(
    features: Features,
    head_weight: torch.Tensor,
    states: SteeringStates,
    prompts: Sequence[BenchmarkPrompt],
    config: SteeringConfig = SteeringConfig(),
    device: torch.device | str = "cpu",
) -> SteeringResult:
    """Figure 3 from final-token states: s_i, the feature choice, rewards before / after for T and C."""
    table = query_response_pairs(prompts, config.target_subset)
    if len(states.completions) != len(table):
        raise ValueError(
            f"{len(states.completions)} completion states for {len(table)} RewardBench 2 completions"
        )
    log.info("feature scores from %d safety pairs (%s, %s)", len(states.chosen), config.source, states.origin)
    scores = feature_scores(
        activation_sums(features, states.chosen, device), activation_sums(features, states.rejected, device)
    )
    target_rows = np.flatnonzero(table["set"].to_numpy() == TARGET)
    target_active = active_fraction(features, states.completions[target_rows], device)
    weight = head_weight.detach().float().cpu()
    candidates = ranked_candidates(scores, weight, target_active, config.min_active_fraction)
    paper_choice = ranked_candidates(scores, weight, target_active, 0.0, top=1).iloc[0]
    _log_choice(candidates, paper_choice, weight, config)
    feature = int(candidates["feature"][0])
    steered = steered_head_weight(weight, feature, config.scale)

    before = np.empty(len(table), dtype=np.float32)
    after, activation = np.empty_like(before), np.empty_like(before)
    for rows, z in iter_features(features, states.completions, device):
        r_before, r_after = rewards_before_after(z, weight, steered)
        before[rows], after[rows] = r_before.cpu().numpy(), r_after.cpu().numpy()
        activation[rows] = z[:, feature].float().cpu().numpy()
    table["feature_activation"], table["reward_before"], table["reward_after"] = activation, before, after
    summary = steering_summary(table, candidates, config, paper_choice, states.origin)
    log.info("%s | %s", summary["caption_a"], summary["caption_b"])
    return SteeringResult(summary, table)


def _log_choice(candidates: pd.DataFrame, paper_choice: pd.Series, weight: torch.Tensor, config) -> None:
    chosen = candidates.iloc[0]
    log.info(
        "steering feature %d: highest s among the %d features with w > 0 active on >= %.1f%% of T "
        "(s = %.4f, w = %.4g -> %.4g, active on %.1f%% of T)",
        chosen["feature"],
        int((weight > 0).sum()),
        100 * config.min_active_fraction,
        chosen["score"],
        chosen["head_weight"],
        chosen["head_weight"] * config.scale,
        100 * chosen["target_active_fraction"],
    )
    for rank, row in enumerate(candidates.iloc[1:].itertuples(), start=2):
        log.info(
            "  runner-up %d: feature %d (s = %.4f, w = %.4g, active on %.1f%% of T)",
            rank,
            row.feature,
            row.score,
            row.head_weight,
            100 * row.target_active_fraction,
        )
    if int(paper_choice["feature"]) != int(chosen["feature"]):
        log.info(
            "the paper's rule (min_active_fraction 0) would pick feature %d (s = %.4f, active on %.1f%% of T)",
            paper_choice["feature"],
            paper_choice["score"],
            100 * paper_choice["target_active_fraction"],
        )


@dataclass(frozen=True)
class CachedStatePaths:
    """`cache_states` files of the reward model's source backbone."""

    rewardbench2: str | Path
    rmbench: str | Path | None = None  # needed for steering.source rmbench_safety


def run_steering(
    model: SARM,
    rmbench_items: Sequence[RMBenchItem],
    prompts: Sequence[BenchmarkPrompt],
    config: SteeringConfig = SteeringConfig(),
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    cached: CachedStatePaths | None = None,
    device: torch.device | str = "cpu",
) -> SteeringResult:
    """The whole of Figure 3 for a SARM, from cached states (`cached`) or a pass of its backbone (`tokenizer`)."""
    if not isinstance(model, SARM):
        raise ValueError(f"steering needs a SARM (a head over SAE features), got a {type(model).__name__}")
    if cached is not None:
        states = cached_states(model, rmbench_items, prompts, config, cached.rewardbench2, cached.rmbench)
    elif tokenizer is None:
        raise ValueError("run_steering needs a tokenizer for a backbone pass, or `cached` states")
    else:
        states = backbone_states(model, tokenizer, rmbench_items, prompts, config)
    return steer(model.features, model.head_weight(), states, prompts, config, device)


def figure_note(summary: dict, which: str) -> str:
    """What each panel prints inside its axes: T's mean shift and how often the feature fires there (3a);
    the share of C whose reward is bit-identical after steering (3b)."""
    if which == TARGET:
        target = summary["target"]
        return (
            f"mean shift {target['mean_shift']:+.4g}\nfeature {summary['feature']} fires on "
            f"{target['pairs_feature_active']} of {target['pairs']} ({target['fraction_feature_active']:.1%})"
        )
    complement = summary["complement"]
    return (
        f"bit-identical after steering:\n{complement['pairs_unchanged']} of {complement['pairs']} "
        f"({complement['fraction_unchanged']:.1%})"
    )


def plot_reward_shift(
    rewards: pd.DataFrame, which: str, caption: str, out_png: str | Path, note: str = ""
) -> Path:
    """Reward distribution of one set (T or C) before vs after steering, `note` in the axes, the caption
    under it."""
    part = rewards[rewards["set"] == which]
    if part.empty:
        raise ValueError(f"no query-response pairs in set {which!r} to plot")
    long = pd.concat(
        [
            pd.DataFrame({"reward": part["reward_before"], "model": "before steering"}),
            pd.DataFrame({"reward": part["reward_after"], "model": "after steering"}),
        ],
        ignore_index=True,
    )
    colors = dict(zip(["before steering", "after steering"], sns.color_palette("colorblind", 2), strict=True))
    with sns.axes_style("whitegrid"):
        figure = Figure(figsize=(6.5, 4.8), layout="constrained")
        FigureCanvasAgg(figure)
        ax = figure.add_subplot()
        # A KDE needs spread: with a single distinct value (tiny sets) the histogram stands alone.
        kde = long["reward"].nunique() > 1 and len(part) > 1
        sns.histplot(
            long,
            x="reward",
            hue="model",
            palette=colors,
            stat="density",
            common_norm=False,
            element="step",
            kde=kde,
            ax=ax,
        )
        for model, color in colors.items():
            ax.axvline(
                long.loc[long["model"] == model, "reward"].mean(), color=color, linestyle="--", linewidth=1
            )
        sns.move_legend(ax, "upper right", title=None)  # the note takes the upper left
        if note:
            ax.text(
                0.02,
                0.97,
                note,
                transform=ax.transAxes,
                va="top",
                ha="left",
                fontsize=8,
                bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85},
            )
        name = "target set T" if which == TARGET else "complement C"
        ax.set_title(f"{'a' if which == TARGET else 'b'}) reward distribution of the {name}")
        ax.set_xlabel("reward")
        figure.text(0.01, 0.0, textwrap.fill(caption, 100), fontsize=7, va="top", ha="left")
        return atomic_write(
            out_png, lambda tmp: figure.savefig(tmp, format="png", dpi=150, bbox_inches="tight")
        )


def write_steering(
    result: SteeringResult,
    summary_json: str | Path,
    rewards_parquet: str | Path,
    figure_a: str | Path,
    figure_b: str | Path,
) -> None:
    """steering.json, the per-pair rewards, and Figures 3a (T) and 3b (C), each written atomically."""
    write_parquet_atomic(result.rewards, rewards_parquet)
    summary = result.summary
    plot_reward_shift(result.rewards, TARGET, summary["caption_a"], figure_a, figure_note(summary, TARGET))
    plot_reward_shift(
        result.rewards, COMPLEMENT, summary["caption_b"], figure_b, figure_note(summary, COMPLEMENT)
    )
    write_json_atomic(result.summary, summary_json)
