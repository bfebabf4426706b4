import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

from sarm.cli import main
from sarm.rm.models import build_sarm, build_vanilla_rm, save_reward_model
from sarm.sae.model import SAEConfig, TopKSAE


@pytest.fixture(scope="module")
def model_dir(tiny_backbone, tmp_path_factory):
    torch.manual_seed(0)
    model = build_sarm(str(tiny_backbone), 2, TopKSAE(32, SAEConfig(64, 4), seed=0))
    return save_reward_model(model, tmp_path_factory.mktemp("cli") / "rm")


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_attribute_prints_reward_and_features_that_sum_to_it(model_dir, capsys):
    code, out, _ = run(
        capsys, "attribute", model_dir, "--prompt", "what is one plus one", "--response", "two", "--json"
    )
    assert code == 0
    result = json.loads(out)
    assert 1 <= len(result["features"]) == result["active_features"] <= 4  # at most k = 4 are active
    assert sum(f["contribution"] for f in result["features"]) == pytest.approx(result["reward"], abs=1e-5)
    magnitudes = [abs(f["contribution"]) for f in result["features"]]
    assert magnitudes == sorted(magnitudes, reverse=True)
    for f in result["features"]:
        assert f["contribution"] == pytest.approx(f["activation"] * f["weight"], rel=1e-5)


def test_attribute_shows_explanations_in_the_table(model_dir, capsys, tmp_path):
    _, out, _ = run(capsys, "attribute", model_dir, "--prompt", "hi", "--response", "yes", "--json")
    feature = json.loads(out)["features"][0]["feature"]
    table = tmp_path / "explanations.csv"
    pd.DataFrame({"feature": [feature], "explanation": ["says yes"], "score": [4]}).to_csv(table, index=False)
    code, out, _ = run(
        capsys,
        "attribute",
        model_dir,
        "--prompt",
        "hi",
        "--response",
        "yes",
        "--explanations",
        table,
        "--top",
        2,
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("reward ") and "active features" in lines[0]
    assert len(lines) == 2 + 2  # title, header, top 2 features
    assert any(line.split()[0] == str(feature) and line.endswith("says yes (score 4)") for line in lines[2:])


def test_attribute_shows_contrastive_explanations_without_a_score(model_dir, capsys, tmp_path):
    _, out, _ = run(capsys, "attribute", model_dir, "--prompt", "hi", "--response", "yes", "--json")
    first, second = (f["feature"] for f in json.loads(out)["features"][:2])
    table = tmp_path / "explanations.parquet"
    pd.DataFrame(
        {
            "feature": [first, second],
            "explainer": ["contrastive", "contrastive"],
            "explanation": ["yes, agree", None],  # the second: no_distinctive_words
            "score": pd.array([None, None], dtype="Int64"),
            "status": ["ok", "no_distinctive_words"],
        }
    ).to_parquet(table)
    args = [
        "attribute",
        model_dir,
        "--prompt",
        "hi",
        "--response",
        "yes",
        "--explanations",
        table,
        "--top",
        2,
    ]
    code, out, _ = run(capsys, *args)
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert rows[str(first)].endswith("yes, agree") and "None" not in rows[str(second)]
    _, out, _ = run(capsys, *args, "--json")
    shown = {f["feature"]: f for f in json.loads(out)["features"]}
    assert shown[first]["explanation_score"] is None and "explanation" not in shown[second]


def test_attribute_reads_jsonl_and_names_bad_lines(model_dir, capsys, tmp_path):
    examples = tmp_path / "examples.jsonl"
    examples.write_text(
        json.dumps({"prompt": "hi", "response": "yes"})
        + "\n"
        + json.dumps(
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "no"}]}
        )
        + "\n"
    )
    code, out, _ = run(capsys, "attribute", model_dir, "--jsonl", examples, "--json")
    assert code == 0 and [json.loads(line)["example"] for line in out.splitlines()] == [1, 2]
    examples.write_text('{"prompt": "hi"}\n')
    code, _, err = run(capsys, "attribute", model_dir, "--jsonl", examples)
    assert code == 2 and "line 1" in err and "response" in err


def test_attribute_refuses_a_vanilla_model_and_a_bad_explanation_table(
    tiny_backbone, model_dir, capsys, tmp_path
):
    vanilla = save_reward_model(build_vanilla_rm(str(tiny_backbone), 2), tmp_path / "vanilla")
    code, _, err = run(capsys, "attribute", vanilla, "--prompt", "hi", "--response", "yes")
    assert code == 2 and "needs a SARM" in err
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"feature": [1], "text": ["x"]}).to_csv(bad, index=False)
    code, _, err = run(
        capsys, "attribute", model_dir, "--prompt", "hi", "--response", "yes", "--explanations", bad
    )
    assert code == 2 and "lacks column(s) ['explanation', 'score']" in err


def test_sarm_entry_point_runs(model_dir):
    sarm = os.path.join(os.path.dirname(sys.executable), "sarm")
    result = subprocess.run(
        [sarm, "attribute", str(model_dir), "--prompt", "hi", "--response", "yes"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("reward ")


# sarm score ------------------------------------------------------------------------------------------


def test_score_preference_file_gives_accuracy_with_a_bootstrap_interval_and_per_pair_rewards(
    model_dir, capsys, tmp_path
):
    from tests.fixtures import hub_schemas

    data = hub_schemas.write_skywork(tmp_path / "skywork", n=30)
    out = tmp_path / "rewards.csv"
    code, stdout, stderr = run(capsys, "score", model_dir, data, "--out", out, "--json", "--bootstrap", 200)
    assert code == 0, stderr
    summary = json.loads(stdout)
    table = pd.read_csv(out)
    assert summary["format"] == "preferences" and summary["pairs"] == len(table) == 30
    assert list(table.columns[:2]) == ["pair", "prompt"]
    assert summary["accuracy"] == pytest.approx((table.reward_chosen > table.reward_rejected).mean())
    assert summary["ci_low"] <= summary["accuracy"] <= summary["ci_high"] and summary["ci_level"] == 0.95
    assert "scoring" in stderr  # the progress bar


def test_score_hh_rlhf_file_needs_bad_rows_skip_for_its_bad_rows(model_dir, capsys, tmp_path):
    from tests.fixtures import hub_schemas

    data = hub_schemas.write_hh_rlhf(tmp_path / "hh", n=100, empty_turn=(3,), mismatched=())
    out = tmp_path / "hh.jsonl"
    code, stdout, stderr = run(capsys, "score", model_dir, data, "--out", out)  # split test, if there is one
    assert code == 0 and "over 20 pairs" in stdout
    code, _, stderr = run(capsys, "score", model_dir, data, "--split", "train", "--out", out)
    assert code == 2 and "row 3 of" in stderr and "--bad-rows skip" in stderr
    skip = ("--split", "train", "--bad-rows", "skip")
    code, stdout, stderr = run(capsys, "score", model_dir, data, "--out", out, *skip)
    assert code == 0, stderr
    assert "pairwise accuracy" in stdout and "over 99 pairs" in stdout
    assert len(out.read_text().splitlines()) == 99
    assert json.loads((tmp_path / "hh.skipped_rows.jsonl").read_text())["row"] == 3


def test_score_rewardbench2_file_gives_subsets_and_overall(model_dir, capsys, tmp_path):
    from tests.conftest import REPO

    out = tmp_path / "rb2.parquet"
    data = REPO / "resources" / "demo" / "rewardbench2.jsonl"
    code, stdout, stderr = run(
        capsys, "score", model_dir, data, "--out", out, "--summary", tmp_path / "s.json"
    )
    assert code == 0, stderr
    for subset in ("Factuality", "Precise IF", "Math", "Safety", "Focus", "Ties", "Overall"):
        assert subset in stdout
    table = pd.read_parquet(out)
    assert list(table.columns) == ["id", "subset", "completion_index", "is_correct", "reward"]
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["format"] == "rewardbench2" and set(summary["subsets"]) == {
        "Factuality",
        "Precise IF",
        "Math",
        "Safety",
        "Focus",
        "Ties",
    }


def test_score_names_a_missing_file_and_a_bad_output_suffix(model_dir, capsys, tmp_path):
    code, _, stderr = run(capsys, "score", model_dir, tmp_path / "nope.jsonl")
    assert code == 2 and "nope.jsonl: no such file or folder" in stderr
    code, _, stderr = run(capsys, "score", model_dir, tmp_path / "x.jsonl", "--out", tmp_path / "r.txt")
    assert code == 2 and "--out" in stderr
