"""Steering (paper RQ2, Figure 3): find the feature that best separates safe from unsafe answers, scale its
value-head weight, and re-score RewardBench 2 split into the target set T (Safety prompts with their chosen
response) and its complement C (every other query-response pair).

The feature is the one with the highest score s_i among those with a positive head weight w_i > 0: scaling
a negative weight by 10 would move T to the left, the opposite of Figure 3a. The safety pairs that define
s_i come from `source`: "rmbench_safety" (the AAAI text: RM-Bench's safety domains, chosen variant j against
rejected variant j) or "rewardbench2_safety" (arXiv v3 and the authors' code: every correct completion of a
RewardBench 2 Safety prompt against each incorrect one, 450 prompts x 3 = 1,350 pairs).

Rewards before and after come from the same latents, r = z @ w and r' = z @ w', so a pair whose steered
feature is zero keeps a bit-identical reward.
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from sarm.batching import pad_right, token_budget_batches
from sarm.data.chat import DEFAULT_DATE_STRING, tokenize_conversations
from sarm.data.records import BenchmarkPrompt, Message, PreferencePair, RMBenchItem
from sarm.eval.rewardbench2 import score_rewardbench2
from sarm.runtime import atomic_write, write_json_atomic, write_parquet_atomic

log = logging.getLogger(__name__)

Latents = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (ids, mask) -> (B, M) final-token latents
TARGET, COMPLEMENT = "T", "C"
SOURCES = ("rmbench_safety", "rewardbench2_safety")


@dataclass(frozen=True)
class SteeringConfig:
    scale: float = 10.0  # factor on the chosen feature's head weight
    source: str = "rmbench_safety"  # where the safety pairs defining s_i come from (SOURCES)
    domains: tuple[str, ...] = ("safety-refuse", "safety-response")  # RM-Bench domains (rmbench_safety)
    target_subset: str = "Safety"
    batch_tokens: int = 8192
    max_length: int = 4096
    date_string: str = DEFAULT_DATE_STRING  # the chat template's date, as when training and scoring

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"steering `source` must be one of {SOURCES}, got {self.source!r}")

    @classmethod
    def from_config(cls, steering: dict, reward_model: dict) -> SteeringConfig:
        """From the validated `steering` and `reward_model` config sections."""
        return cls(
            scale=float(steering["scale"]),
            source=steering.get("source", cls.source),
            domains=tuple(steering.get("domains", cls.domains)),
            batch_tokens=reward_model["batch_tokens"],
            max_length=reward_model["max_length"],
            date_string=reward_model.get("date_string", DEFAULT_DATE_STRING),
        )


@dataclass(frozen=True)
class SteeringResult:
    summary: dict
    rewards: pd.DataFrame  # one row per RewardBench 2 query-response pair


def safety_pairs(items: Sequence[RMBenchItem], domains: Sequence[str]) -> list[PreferencePair]:
    """RM-Bench items of the given domains as pairs, chosen variant j against rejected variant j."""
    pairs = []
    for item in items:
        if item.domain not in domains:
            continue
        user = {"role": "user", "content": item.prompt}
        for chosen, rejected in zip(item.chosen, item.rejected, strict=True):
            pairs.append(
                PreferencePair(
                    [user, {"role": "assistant", "content": chosen}],
                    [user, {"role": "assistant", "content": rejected}],
                    source=item.domain,
                )
            )
    if not pairs:
        raise ValueError(
            f"no RM-Bench items in the steering domains {list(domains)} (config `steering.domains`)"
        )
    return pairs


def rewardbench2_safety_pairs(
    prompts: Sequence[BenchmarkPrompt], subset: str = "Safety"
) -> list[PreferencePair]:
    """Each correct completion of a RewardBench 2 `subset` prompt against each incorrect one (arXiv v3 and the
    authors' code: 450 Safety prompts x 3 rejected = 1,350 pairs)."""
    pairs = [
        PreferencePair(prompt.conversation(good), prompt.conversation(bad), source=prompt.subset)
        for prompt in prompts
        if prompt.subset == subset
        for good in range(prompt.num_correct)
        for bad in range(prompt.num_correct, len(prompt.completions))
    ]
    if not pairs:
        raise ValueError(f"RewardBench 2 has no {subset!r} prompts with a rejected completion to pair")
    return pairs


def steering_pairs(
    config: SteeringConfig, rmbench_items: Sequence[RMBenchItem], prompts: Sequence[BenchmarkPrompt]
) -> list[PreferencePair]:
    """The safety pairs of `config.source` (each data set already cut to its `data.<name>.limit`)."""
    if config.source == "rewardbench2_safety":
        return rewardbench2_safety_pairs(prompts, config.target_subset)
    return safety_pairs(rmbench_items, config.domains)


def choose_feature(scores: torch.Tensor, head_weight: torch.Tensor) -> int:
    """The feature with the highest s_i among those whose head weight is positive (it raises the reward)."""
    positive = head_weight.float().cpu() > 0
    if not bool(positive.any()):
        raise ValueError(
            "no feature has a positive value-head weight, so scaling one cannot raise the reward of the "
            "target set (Figure 3a); is the head trained?"
        )
    return int(torch.where(positive, scores.float().cpu(), float("-inf")).argmax())


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


def iter_latents(
    latents_fn: Latents,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[list[Message]],
    config: SteeringConfig,
    device: torch.device | str = "cpu",
    desc: str = "latents",
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """(indices into `conversations`, their (b, M) final-token latents) batch by batch."""
    token_ids = tokenize_conversations(tokenizer, conversations, config.max_length, config.date_string)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for batch in tqdm(
        token_budget_batches([len(t) for t in token_ids], config.batch_tokens), desc=desc, unit="batch"
    ):
        input_ids, attention_mask = pad_right([token_ids[i] for i in batch], pad_id)
        with torch.inference_mode():
            latents = latents_fn(input_ids.to(device), attention_mask.to(device))
        if latents.dim() != 2 or latents.shape[0] != len(batch):
            raise ValueError(f"latents must return (batch, features); got shape {tuple(latents.shape)}")
        yield batch, latents


def activation_sums(
    latents_fn: Latents,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[list[Message]],
    config: SteeringConfig,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Sum over conversations of the final-token latent vector (M,), without keeping every vector."""
    total = None
    for _, latents in iter_latents(latents_fn, tokenizer, conversations, config, device, desc="safety pairs"):
        batch_sum = latents.float().sum(0).cpu()
        total = batch_sum if total is None else total + batch_sum
    return total


def query_response_pairs(prompts: Sequence[BenchmarkPrompt], target_subset: str = "Safety") -> pd.DataFrame:
    """Every RewardBench 2 (prompt, completion); set T = target-subset prompts with a correct completion."""
    rows = []
    for prompt in prompts:
        for index in range(len(prompt.completions)):
            correct = index < prompt.num_correct
            in_target = prompt.subset == target_subset and correct
            rows.append((prompt.id, prompt.subset, index, correct, TARGET if in_target else COMPLEMENT))
    table = pd.DataFrame(rows, columns=["id", "subset", "completion_index", "is_correct", "set"])
    if not (table["set"] == TARGET).any():
        raise ValueError(
            f"RewardBench 2 has no prompts of subset {target_subset!r}: the target set T is empty"
        )
    return table


def steering_summary(
    rewards: pd.DataFrame, feature: int, score: float, weight: float, config: SteeringConfig
) -> dict:
    """Mean shifts and unchanged fractions for T and C, RewardBench 2 before/after, and the captions."""
    summary = {
        "feature": feature,
        "feature_score": score,
        "scale": config.scale,
        "head_edit": {"feature": feature, "scale": config.scale},
        "head_weight_before": weight,
        "head_weight_after": weight * config.scale,
        "selection": "highest s_i among features with a positive head weight",
        "source": config.source,
        "domains": list(config.domains) if config.source == "rmbench_safety" else [config.target_subset],
    }
    for name, label in ((TARGET, "target"), (COMPLEMENT, "complement")):
        part = rewards[rewards["set"] == name]
        before, after = part["reward_before"].to_numpy(), part["reward_after"].to_numpy()
        summary[label] = {
            "pairs": len(part),
            "mean_before": float(before.mean()) if len(part) else None,
            "mean_after": float(after.mean()) if len(part) else None,
            "mean_shift": float((after - before).mean()) if len(part) else None,
            "fraction_unchanged": float((after == before).mean()) if len(part) else None,
            "fraction_feature_active": float((part["feature_activation"] != 0).mean()) if len(part) else None,
        }
    for when in ("before", "after"):
        scored = rewards.rename(columns={f"reward_{when}": "reward"})
        summary[f"rewardbench2_{when}"] = score_rewardbench2(scored)
    target, complement = summary["target"], summary["complement"]
    edit = f"feature {feature} (s = {score:.3f}) with its head weight scaled by {config.scale:g}"
    summary["caption_a"] = (
        f"Figure 3a: rewards of the target set T ({target['pairs']} Safety prompts with their chosen response) "
        f"before and after steering {edit}; the mean reward shifts by {target['mean_shift']:+.4g}."
    )
    summary["caption_b"] = (
        f"Figure 3b: rewards of the complement C ({complement['pairs']} other query-response pairs) before "
        f"and after steering {edit}; mean shift {complement['mean_shift']:+.4g}, "
        f"{complement['fraction_unchanged']:.1%} of C unchanged (bit-identical)."
    )
    return summary


def run_steering(
    latents_fn: Latents,
    head_weight: torch.Tensor,
    tokenizer: PreTrainedTokenizerBase,
    rmbench_items: Sequence[RMBenchItem],
    prompts: Sequence[BenchmarkPrompt],
    config: SteeringConfig = SteeringConfig(),
    device: torch.device | str = "cpu",
) -> SteeringResult:
    """The whole of Figure 3 for a SARM: `latents_fn` = `SARM.latents`, `head_weight` = `SARM.head_weight()`."""
    pairs = steering_pairs(config, rmbench_items, prompts)
    log.info("feature scores from %d safety pairs (%s)", len(pairs), config.source)
    chosen = activation_sums(latents_fn, tokenizer, [p.chosen for p in pairs], config, device)
    rejected = activation_sums(latents_fn, tokenizer, [p.rejected for p in pairs], config, device)
    scores = feature_scores(chosen, rejected)
    weight = head_weight.detach().float().cpu()
    feature = choose_feature(scores, weight)
    best = int(scores.argmax())
    steered = steered_head_weight(weight, feature, config.scale)
    log.info(
        "steering feature %d: highest s among the %d features with w > 0 (s = %.4f, head weight %.4g -> %.4g);"
        " highest s overall: feature %d (s = %.4f, w = %.4g)",
        feature,
        int((weight > 0).sum()),
        scores[feature],
        weight[feature],
        steered[feature],
        best,
        scores[best],
        weight[best],
    )

    table = query_response_pairs(prompts, config.target_subset)
    by_id = {p.id: p for p in prompts}
    conversations = [
        by_id[i].conversation(c) for i, c in zip(table["id"], table["completion_index"], strict=True)
    ]
    before = np.empty(len(table), dtype=np.float32)
    after, activation = np.empty_like(before), np.empty_like(before)
    for batch, latents in iter_latents(
        latents_fn, tokenizer, conversations, config, device, desc="RewardBench 2"
    ):
        r_before, r_after = rewards_before_after(latents, weight, steered)
        before[batch], after[batch] = r_before.cpu().numpy(), r_after.cpu().numpy()
        activation[batch] = latents[:, feature].float().cpu().numpy()
    table["feature_activation"], table["reward_before"], table["reward_after"] = activation, before, after
    summary = steering_summary(table, feature, float(scores[feature]), float(weight[feature]), config)
    log.info("%s | %s", summary["caption_a"], summary["caption_b"])
    return SteeringResult(summary, table)


def plot_reward_shift(rewards: pd.DataFrame, which: str, caption: str, out_png: str | Path) -> Path:
    """Reward distribution of one set (T or C) before vs after steering, with the caption under it."""
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
        ax.get_legend().set_title(None)
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
    plot_reward_shift(result.rewards, TARGET, result.summary["caption_a"], figure_a)
    plot_reward_shift(result.rewards, COMPLEMENT, result.summary["caption_b"], figure_b)
    write_json_atomic(result.summary, summary_json)
