"""`bad_rows: skip` end to end: an HH-RLHF-format file with empty turns and mismatched prompts trains."""

import json

import yaml

from sarm.config import validate_config
from sarm.rm.launch import RewardModelJob, run
from sarm.rm.models import load_reward_model
from tests.conftest import REPO
from tests.fixtures import hub_schemas

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def test_hh_rlhf_with_bad_rows_trains_with_skip(tiny_backbone, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    data = hub_schemas.write_hh_rlhf(tmp_path / "hh", n=300, empty_turn=(7, 150), mismatched=(42,))
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config["data"]["preferences"] = {"source": str(data), "bad_rows": "skip"}
    config = validate_config(config, SCHEMA)
    settings = {
        **config["reward_model"],
        "epochs": 1,
        "global_batch": 64,
        "micro_batch": 64,
        "max_length": 64,
        "train_backbone": False,
        "train_layers": "all",
    }
    out_dir = tmp_path / "rm"
    job = RewardModelJob(
        backbone=str(tiny_backbone),
        layer=2,
        encoder="vanilla",
        out_dir=str(out_dir),
        preferences=config["data"]["preferences"],
        reward_model=settings,
    )
    run(job)
    assert load_reward_model(out_dir, with_backbone=False).kind == "vanilla"
    skipped = [
        json.loads(line) for line in (out_dir / "preferences.skipped_rows.jsonl").read_text().splitlines()
    ]
    assert [row["row"] for row in skipped] == [7, 42, 150]
