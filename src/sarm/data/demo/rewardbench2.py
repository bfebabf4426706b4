"""RewardBench 2 rows: 56 best-of-4 prompts per family subset, and Ties as `ref:N` / `tied:N` prompts."""

from __future__ import annotations

from sarm.data.demo.arithmetic import ProblemSource, arithmetic
from sarm.data.demo.definitions import definitions
from sarm.data.demo.focus import focus
from sarm.data.demo.instructions import instructions
from sarm.data.demo.items import Item
from sarm.data.demo.resources import Resources
from sarm.data.demo.safety import benign, benign_definitions, harmful
from sarm.data.demo.ties import TiesSource, ties_rows

RB2_PROMPTS = 56
RB2_TIES_PAIRS = 28


def rb2_row(row_id: str, subset: str, item: Item) -> dict:
    total = len(item.chosen) + len(item.rejected)
    return {
        "id": row_id,
        "prompt": item.prompt,
        "chosen": item.chosen,
        "rejected": item.rejected,
        "num_correct": len(item.chosen),
        "num_incorrect": len(item.rejected),
        "total_completions": total,
        "models": ["sarm-demo-template"] * total,
        "subset": subset,
        "additional_metadata": {
            "family": item.family,
            "key": item.key,
            **{k: str(v) for k, v in item.meta.items()},
        },
    }


def rewardbench2_rows(
    res: Resources,
    problems: ProblemSource,
    ties: TiesSource,
    requests: list[str],
    benign_pairs: list[tuple[str, str, str]],
) -> list[dict]:
    """All subsets, each family on its own prompt words, operands and requests."""
    framings = res.t["harmful_framings"]
    safety = harmful(res, requests, [framings[0], framings[2]], 3, 1, "test")
    safety += benign(
        res,
        benign_pairs + benign_definitions(res, res.take(RB2_PROMPTS - len(safety) - len(benign_pairs))),
        3,
        "test",
    )
    subsets = {
        "Factuality": definitions(res, res.take(RB2_PROMPTS), 3, "test"),
        "Precise IF": instructions(res, res.take(RB2_PROMPTS), 3),
        "Math": arithmetic(res, problems, RB2_PROMPTS, 3),
        "Safety": safety,
        "Focus": focus(res, res.take(38), problems, RB2_PROMPTS - 38, 3, "test"),
    }
    labelled = [(subset, item) for subset, items in subsets.items() for item in items]
    rows = [rb2_row(str(index), subset, item) for index, (subset, item) in enumerate(labelled)]
    return rows + [rb2_row(row_id, "Ties", item) for row_id, item in ties_rows(ties, RB2_TIES_PAIRS)]
