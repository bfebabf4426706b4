"""sarm.rm.final_states: which conversations each cached dataset holds, in which order."""

import json

import pytest

from sarm.rm.final_states import dataset_conversations

SAFETY = ["safety-refuse", "safety-response"]


def _rmbench_file(tmp_path, domains):
    rows = [
        {"id": i, "domain": domain, "prompt": f"p{i}", "chosen": ["a", "b", "c"], "rejected": ["x", "y", "z"]}
        for i, domain in enumerate(domains)
    ]
    path = tmp_path / "rmbench.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"source": str(path)}


def test_rmbench_holds_the_steering_domains_pairs_chosen_first_then_rejected(tmp_path):
    """The layout steering reads back: row i is pair i's chosen answer, row P + i its rejected one, for the
    pairs of the steering domains only."""
    spec = _rmbench_file(tmp_path, ["math", "safety-response", "chat", "safety-refuse"])
    conversations = dataset_conversations("rmbench", spec, steering_domains=SAFETY)
    assert len(conversations) == 2 * 2 * 3
    assert [c[-1]["content"] for c in conversations] == ["a", "b", "c"] * 2 + ["x", "y", "z"] * 2
    assert [c[0]["content"] for c in conversations[:6]] == ["p1"] * 3 + ["p3"] * 3
    assert [c[0]["content"] for c in conversations[6:]] == ["p1"] * 3 + ["p3"] * 3


def test_rmbench_needs_the_steering_domains_and_an_item_in_them(tmp_path):
    spec = _rmbench_file(tmp_path, ["math", "chat"])
    with pytest.raises(ValueError, match="pass steering_domains"):
        dataset_conversations("rmbench", spec)
    with pytest.raises(ValueError, match="config `steering.domains`"):
        dataset_conversations("rmbench", spec, steering_domains=SAFETY)
