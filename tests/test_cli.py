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
