"""sarm.rm.final_states: which conversations each cached dataset holds, in which order."""

import json

from sarm.rm.final_states import dataset_conversations


def test_rmbench_holds_every_pair_chosen_first_then_rejected(tmp_path):
    """The layout steering reads back: row i is pair i's chosen answer, row P + i its rejected one."""
    rows = [
        {"id": i, "domain": domain, "prompt": f"p{i}", "chosen": ["a", "b", "c"], "rejected": ["x", "y", "z"]}
        for i, domain in enumerate(["math", "safety-response"])
    ]
    path = tmp_path / "rmbench.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    conversations = dataset_conversations("rmbench", {"source": str(path)})
    assert len(conversations) == 2 * 2 * 3
    assert [c[-1]["content"] for c in conversations] == ["a", "b", "c"] * 2 + ["x", "y", "z"] * 2
    assert [c[0]["content"] for c in conversations[:6]] == ["p0"] * 3 + ["p1"] * 3
