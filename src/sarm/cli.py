"""`sarm` command line. Subcommands register themselves in `COMMANDS`; add yours there.

sarm attribute MODEL_DIR --prompt "..." --response "..."    reward and its top features z_i * w_i
sarm attribute MODEL_DIR --jsonl pairs.jsonl --explanations explanations.parquet
sarm score MODEL_DIR DATA [--out rewards.csv]               pairwise accuracy (95% bootstrap CI) of a
                                                            preference file, or RewardBench 2 subsets
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
from sarm.data.preferences import load_preference_pairs
from sarm.data.records import Message
from sarm.data.rewardbench2 import REQUIRED_COLUMNS as REWARDBENCH2_COLUMNS
from sarm.data.rewardbench2 import load_rewardbench2
from sarm.data.sources import DEFAULT_MAX_BAD_FRACTION, BadRows, DataError, column_names, load_rows
from sarm.eval.pairwise import pairwise_accuracy
from sarm.eval.rewardbench2 import score_rewardbench2
from sarm.eval.score import score_completions, score_conversations
from sarm.plan import add_plan
from sarm.rm.models import SARM, load_reward_model
from sarm.runtime import atomic_write, module_device, write_json_atomic

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


def read_explanations(path: str | None) -> dict[int, tuple[str, float | None]]:
    """feature -> (explanation, score) from a parquet or CSV table with columns feature, explanation, score."""
    if path is None:
        return {}
    table = pd.read_parquet(path) if str(path).endswith(".parquet") else pd.read_csv(path)
    missing = [c for c in EXPLANATION_COLUMNS if c not in table.columns]
    if missing:
        raise CommandError(
            f"explanations table {path} lacks column(s) {missing}; expected {list(EXPLANATION_COLUMNS)}"
        )
    # A contrastive explanation has no score (None); an unparseable answer has no explanation (row skipped).
    return {
        int(r.feature): (str(r.explanation), float(r.score) if pd.notna(r.score) else None)
        for r in table.itertuples()
        if pd.notna(r.explanation)
    }


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
        note = f["explanation"] if "explanation" in f else ""
        if "explanation" in f and f["explanation_score"] is not None:
            note += f" (score {f['explanation_score']:g})"
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


DATA_FORMATS = ("auto", "preferences", "rewardbench2")
TABLE_SUFFIXES = (".csv", ".jsonl", ".parquet")


def data_format_of(source: str, split: str | None) -> tuple[str, str]:
    """(`rewardbench2` when the data has RewardBench 2's columns else `preferences`, the split to read)."""
    error = None
    for candidate in [split] if split else ["test", "train"]:
        try:
            columns = set(column_names(load_rows(source, candidate)))
        except DataError as err:  # e.g. a folder with a train split only
            error = error or err
            continue
        return ("rewardbench2" if set(REWARDBENCH2_COLUMNS) <= columns else "preferences"), candidate
    raise error


def default_output(data: str) -> Path:
    return Path(f"{Path(data.rstrip('/')).name.split('.')[0]}_rewards.csv")


def write_table(table: pd.DataFrame, path: Path) -> Path:
    """A per-row table as CSV, JSON lines or parquet, by the file's suffix; written atomically."""
    if path.suffix == ".parquet":
        return atomic_write(path, lambda tmp: table.to_parquet(tmp, index=False))
    if path.suffix == ".jsonl":
        return atomic_write(
            path, lambda tmp: table.to_json(tmp, orient="records", lines=True, force_ascii=False)
        )
    return atomic_write(path, lambda tmp: table.to_csv(tmp, index=False))


def _last_user_turn(messages: list[Message]) -> str:
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")


def score(args: argparse.Namespace) -> None:
    out = Path(args.out) if args.out else default_output(args.data)
    if out.suffix not in TABLE_SUFFIXES:
        raise CommandError(f"--out {out}: the per-row rewards are written as {', '.join(TABLE_SUFFIXES)}")
    if args.format == "auto":
        kind, split = data_format_of(args.data, args.split)
    else:
        kind, split = args.format, args.split or ("test" if args.format == "rewardbench2" else "train")
    bad_rows = BadRows(args.bad_rows, args.max_bad_fraction, switch="--bad-rows skip")
    # Data first: a malformed file is reported before the (slow) model load.
    if kind == "rewardbench2":
        records = load_rewardbench2(args.data, split, bad_rows)
    else:
        records = load_preference_pairs(args.data, split, bad_rows)
    records = records[: args.limit] if args.limit else records
    if not records:
        raise CommandError(f"{args.data} has no rows to score")
    skipped_file = out.with_name(out.name.split(".")[0] + ".skipped_rows.jsonl")
    if bad_rows.skipped:
        print(bad_rows.summary(), file=sys.stderr)
        bad_rows.write(skipped_file)
    transformers_logging.disable_progress_bar()
    model = load_reward_model(args.model_dir, head_edits=args.head_edits)
    tokenizer = load_tokenizer(model.backbone_source)
    summary = {
        "model": str(args.model_dir),
        "data": args.data,
        "format": kind,
        "rewards": str(out),
        "skipped_rows": len(bad_rows.skipped),
    }
    if kind == "rewardbench2":
        table = score_completions(model, tokenizer, records, args.batch_tokens, args.max_length)
        results = score_rewardbench2(table)
        summary.update(results)
    else:
        conversations = [pair.chosen for pair in records] + [pair.rejected for pair in records]
        rewards = score_conversations(model, tokenizer, conversations, args.batch_tokens, args.max_length)
        chosen, rejected = rewards[: len(records)], rewards[len(records) :]
        table = pd.DataFrame(
            {
                "pair": range(len(records)),
                "prompt": [_last_user_turn(pair.chosen)[:200] for pair in records],
                "source": [pair.source for pair in records],
                "reward_chosen": chosen,
                "reward_rejected": rejected,
                "margin": chosen - rejected,
                "correct": chosen > rejected,
            }
        )
        accuracy = pairwise_accuracy(chosen, rejected, resamples=args.bootstrap, seed=args.seed)
        summary.update(accuracy.as_dict(), mean_margin=float(table["margin"].mean()))
    write_table(table, out)
    if args.summary:
        write_json_atomic(summary, args.summary)
    if args.json:
        print(json.dumps(summary))
    else:
        print(_format_score(summary, model))


def _format_score(summary: dict, model) -> str:
    lines = [
        f"model   {summary['model']} ({model.kind}, layer {model.layer} of {model.backbone_source})",
        f"data    {summary['data']} ({summary['format']})",
    ]
    if summary["skipped_rows"]:
        lines.append(f"skipped {summary['skipped_rows']} bad rows (listed beside the rewards file)")
    if summary["format"] == "rewardbench2":
        lines.append(f"  {'subset':<12} {'score':>6} {'prompts':>8}")
        for subset, value in summary["subsets"].items():
            lines.append(f"  {subset:<12} {100 * value:>6.1f} {summary['counts'][subset]['prompts']:>8}")
        lines.append(f"  {'Overall':<12} {100 * summary['overall']:>6.1f}")
        if summary["missing_subsets"]:
            lines.append(
                f"  (no rows for {', '.join(summary['missing_subsets'])}: Overall is over the others)"
            )
    else:
        lines.append(
            f"pairwise accuracy {100 * summary['accuracy']:.1f}% "
            f"({100 * summary['ci_level']:.0f}% bootstrap interval {100 * summary['ci_low']:.1f}-"
            f"{100 * summary['ci_high']:.1f}%, {summary['bootstrap_resamples']} resamples) "
            f"over {summary['pairs']} pairs; mean margin {summary['mean_margin']:+.4f}"
        )
    lines.append(f"rewards {summary['rewards']}")
    return "\n".join(lines)


def add_score(subparsers) -> None:
    parser = subparsers.add_parser(
        "score",
        help="score a preference file (pairwise accuracy) or RewardBench 2 file (subsets + Overall)",
        description="Score every row of DATA with the reward model in MODEL_DIR and write per-row rewards. "
        "Preference data (Skywork message lists, prompt/chosen/rejected strings, or HH-RLHF transcripts): "
        "pairwise accuracy with a bootstrap interval. RewardBench 2 data: per-subset scores and Overall.",
    )
    parser.add_argument("model_dir", help="folder written by sarm.rm.models.save_reward_model")
    parser.add_argument(
        "data", help="hub id, local json/jsonl(.gz)/parquet file, save_to_disk folder or folder of files"
    )
    parser.add_argument(
        "--split", help="split of a hub id / folder (default: test for RewardBench 2, else train)"
    )
    parser.add_argument("--format", choices=DATA_FORMATS, default="auto", help="default: from the columns")
    parser.add_argument("--out", help="per-row rewards, .csv / .jsonl / .parquet (default: DATA_rewards.csv)")
    parser.add_argument("--summary", help="also write the summary as JSON to this file")
    parser.add_argument("--limit", type=int, help="score only the first N rows")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    parser.add_argument("--bad-rows", choices=("error", "skip"), default="error", help="malformed rows")
    parser.add_argument(
        "--max-bad-fraction",
        type=float,
        default=DEFAULT_MAX_BAD_FRACTION,
        help="with --bad-rows skip, more bad rows than this share is an error (default 0.01)",
    )
    parser.add_argument("--head-edits", help="YAML/JSON list of {feature, scale | shift} applied to the head")
    parser.add_argument("--batch-tokens", type=int, default=16384, help="tokens per forward batch")
    parser.add_argument(
        "--max-length", type=int, default=DEFAULT_MAX_LENGTH, help="tokens kept (left truncation)"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.set_defaults(run=score)


COMMANDS: list[Callable] = [add_attribute, add_score, add_plan]


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
