"""`sarm` command line. Subcommands register themselves in `COMMANDS`; add yours there.

sarm attribute MODEL_DIR --prompt "..." --response "..."    reward and its top features z_i * w_i
sarm attribute MODEL_DIR --jsonl pairs.jsonl --explanations explanations.parquet
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from transformers.utils import logging as transformers_logging

from sarm.backbone import BackboneError, load_tokenizer
from sarm.batching import pad_right
from sarm.data.chat import DEFAULT_MAX_LENGTH, tokenize_conversations
from sarm.data.records import Message
from sarm.rm.models import SARM, load_reward_model
from sarm.runtime import module_device

EXPLANATION_COLUMNS = ("feature", "explanation", "score")


class CommandError(Exception):
    """A user-facing error: printed as `sarm: error: ...`, exit status 2."""


def read_conversations(args: argparse.Namespace) -> list[list[Message]]:
    if args.jsonl is None:
        if args.prompt is None or args.response is None:
            raise CommandError("give --prompt and --response, or --jsonl FILE")
        return [[{"role": "user", "content": args.prompt}, {"role": "assistant", "content": args.response}]]
    conversations = []
    for number, line in enumerate(Path(args.jsonl).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise CommandError(f"line {number} of {args.jsonl} is not JSON: {err}") from err
        if isinstance(row, dict) and isinstance(row.get("messages"), list):
            conversations.append(row["messages"])
        elif (
            isinstance(row, dict)
            and isinstance(row.get("prompt"), str)
            and isinstance(row.get("response"), str)
        ):
            conversations.append(
                [
                    {"role": "user", "content": row["prompt"]},
                    {"role": "assistant", "content": row["response"]},
                ]
            )
        else:
            raise CommandError(
                f"line {number} of {args.jsonl} needs string `prompt` and `response`, or `messages`"
            )
    if not conversations:
        raise CommandError(f"{args.jsonl} has no examples")
    return conversations


def read_explanations(path: str | None) -> dict[int, tuple[str, float]]:
    """feature -> (explanation, score) from a parquet or CSV table with columns feature, explanation, score."""
    if path is None:
        return {}
    table = pd.read_parquet(path) if str(path).endswith(".parquet") else pd.read_csv(path)
    missing = [c for c in EXPLANATION_COLUMNS if c not in table.columns]
    if missing:
        raise CommandError(
            f"explanations table {path} lacks column(s) {missing}; expected {list(EXPLANATION_COLUMNS)}"
        )
    return {int(r.feature): (str(r.explanation), float(r.score)) for r in table.itertuples()}


def top_features(
    contributions: torch.Tensor, latents: torch.Tensor, weights: torch.Tensor, top: int
) -> list[dict]:
    """The `top` active features by |z_i w_i|."""
    active = torch.nonzero(latents).flatten()
    order = active[contributions[active].abs().argsort(descending=True)][:top]
    return [
        {
            "feature": int(i),
            "activation": float(latents[i]),
            "weight": float(weights[i]),
            "contribution": float(contributions[i]),
        }
        for i in order
    ]


def attribute(args: argparse.Namespace) -> None:
    conversations = read_conversations(args)  # cheap checks before the (slow) model load
    explanations = read_explanations(args.explanations)
    transformers_logging.disable_progress_bar()
    model = load_reward_model(args.model_dir, head_edits=args.head_edits)
    if not isinstance(model, SARM):
        raise CommandError(f"{args.model_dir} holds a {model.kind} reward model; attribution needs a SARM")
    tokenizer = load_tokenizer(model.backbone_source)
    device = module_device(model)
    weights = model.head_weight().detach().cpu()
    for number, messages in enumerate(conversations, start=1):
        token_ids = tokenize_conversations(tokenizer, [messages], args.max_length)
        input_ids, attention_mask = (t.to(device) for t in pad_right(token_ids, tokenizer.pad_token_id))
        with torch.inference_mode():
            states = model.final_states(input_ids, attention_mask)
            latents = model.features(states)[0].cpu()
            reward = float(model.rewards_from_states(states)[0])
        features = top_features(latents * weights, latents, weights, args.top)
        for f in features:
            if f["feature"] in explanations:
                f["explanation"], f["explanation_score"] = explanations[f["feature"]]
        active = int((latents != 0).sum())
        if args.json:
            print(
                json.dumps(
                    {"example": number, "reward": reward, "active_features": active, "features": features}
                )
            )
        else:
            print(_format(number, len(conversations), reward, active, features))


def _format(number: int, total: int, reward: float, active: int, features: list[dict]) -> str:
    title = f"example {number}/{total}: " if total > 1 else ""
    lines = [f"{title}reward {reward:+.4f} ({active} active features)"]
    lines.append(f"  {'feature':>8} {'z_i':>9} {'w_i':>9} {'z_i*w_i':>9}  explanation")
    for f in features:
        note = f"{f['explanation']} (score {f['explanation_score']:g})" if "explanation" in f else ""
        lines.append(
            f"  {f['feature']:>8} {f['activation']:>9.4f} {f['weight']:>9.4f} {f['contribution']:>+9.4f}  {note}".rstrip()
        )
    return "\n".join(lines)


def add_attribute(subparsers) -> None:
    parser = subparsers.add_parser("attribute", help="reward of a response and the features that make it up")
    parser.add_argument("model_dir", help="folder written by sarm.rm.models.save_reward_model")
    parser.add_argument("--prompt", help="user turn")
    parser.add_argument("--response", help="assistant turn")
    parser.add_argument("--jsonl", help="file of {prompt, response} or {messages} objects, one per line")
    parser.add_argument("--top", type=int, default=10, help="features to list per example (default 10)")
    parser.add_argument("--explanations", help="parquet/CSV with columns feature, explanation, score")
    parser.add_argument("--head-edits", help="YAML/JSON list of {feature, scale | shift} applied to the head")
    parser.add_argument(
        "--max-length", type=int, default=DEFAULT_MAX_LENGTH, help="tokens kept (left truncation)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per example instead of a table")
    parser.set_defaults(run=attribute)


COMMANDS: list[Callable] = [add_attribute]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sarm", description="SARM: interpretable reward models via sparse autoencoders"
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (CommandError, BackboneError, FileNotFoundError, ValueError) as err:
        print(f"sarm: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
