"""The real workflow, end to end, on the tiny Llama and a slice of the bundled demo data."""

import json
import re
import shutil

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from sarm.data.rewardbench2 import load_rewardbench2
from sarm.eval.rewardbench2 import score_rewardbench2
from sarm.paths import ACTIVATIONS
from sarm.sae.model import TopKSAE
from sarm.sae.train import SAETrainConfig

from .conftest import REPO
from .tiny_workflow import (
    make_workdir,
    rewards_one_by_one,
    snakemake,
    tiny_config,
)

pytestmark = pytest.mark.slow
SARM_DIR = "results/tiny/layer2/rm/sarm_sequence_m128_k4"
SAE_DIR = "results/tiny/layer2/sequence/sae_m128_k4"
# 10 epochs at lr 5e-3 take the tiny SAE to an FVU of 0.1-0.25 in about a second (2 epochs at the default
# lr 5e-4 leave it at 0.99, as good as untrained, and the SAE-stage test would not know the difference).
# max_samples replaces epochs: 2,680 samples are the 10 epochs of the sequence-level SAE's 268 training
# rows, while the token-level SAE (~11,400 rows per epoch, 3,560 steps in 10 epochs: the workflow's
# longest job) stops after as many samples as the SAEs the tests read.
SAE_TRAINING = {"lr": 0.005, "max_samples": 2680}


@pytest.fixture(scope="module")
def tiny_run(tiny_backbone, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("workflow")
    config = tiny_config(tiny_backbone)
    config["sae"].update(SAE_TRAINING)
    config_path = make_workdir(workdir, tiny_backbone, config)
    snakemake(workdir, config_path, "all", timeout=1800)
    return workdir, config_path


def test_all_builds_every_table_figure_and_card(tiny_run):
    workdir, _ = tiny_run
    for name in ["table1", "table2", "table3", "table4", "comparisons"]:
        for suffix in (".md", ".csv", ".tex"):
            assert (workdir / "results/tables" / f"{name}{suffix}").stat().st_size > 0
    for kind in ("layer", "latents", "k"):
        assert (workdir / f"results/figures/table3_{kind}.png").stat().st_size > 0
    assert (workdir / SARM_DIR / "interpret/feature_cards.md").read_text().strip()
    for figure in ("figure3a.png", "figure3b.png"):
        assert (workdir / SARM_DIR / "steering" / figure).stat().st_size > 0


def test_layer_2_samples_both_levels_in_one_pass_per_part_and_layer_1_its_own(tiny_run):
    """sampling.share_levels: the sequence and token SAEs of layer 2 read activations of one job per part;
    layer 1 has only a sequence-level SAE, sampled by the per-layer rule."""
    workdir, _ = tiny_run
    logs = workdir / "results/logs/sample_activations/tiny"
    sampled = sorted(str(path.relative_to(logs)) for path in logs.rglob("*.log"))
    assert sampled == [
        f"{kind}/part{part}.log" for kind in ("sequence+token/layer2", "sequence/layer1") for part in (0, 1)
    ]
    for level, layer in (("sequence", 1), ("sequence", 2), ("token", 2)):
        for part in (0, 1):
            path = workdir / ACTIVATIONS.format(backbone="tiny", level=level, layer=layer, part=part)
            assert any(path.iterdir()), path


def untrained_sae_fvu(workdir, metrics: dict) -> tuple[float, int]:
    """FVU of the SAE as `train_sae` starts it (same seed and input scale), on the rows its metrics used:
    the held-out rows if the metrics say so, else the first rows of the training stream."""
    trained = TopKSAE.load(workdir / SAE_DIR)
    config = yaml.safe_load((workdir / "tiny.yaml").read_text())["sae"]
    cfg = SAETrainConfig.from_config(config, trained.latents, trained.k)
    parts = sorted(workdir.glob(ACTIVATIONS.format(backbone="tiny", level="sequence", layer=2, part="*")))
    assert parts, "no sampled activations"
    reader = cfg.make_reader(parts, 2)
    if metrics.get("eval_split") == "heldout":
        rows = torch.cat(list(cfg.make_heldout_reader(parts, 2)))
    else:
        rows = reader.sample(cfg.eval_rows)
    untrained = TopKSAE(trained.d_model, cfg.sae, seed=cfg.seed)
    with torch.no_grad():
        untrained.fit_input_scale_(reader.sample(cfg.init_rows))
        untrained.normalize_decoder_()
        target = untrained.normalize_input(rows)
        error = (untrained(rows)[0] - target).pow(2).sum()
        return (error / (target - target.mean(0)).pow(2).sum()).item(), len(rows)


def test_sae_metrics_and_reward_model_scores_are_measured(tiny_run):
    workdir, _ = tiny_run
    metrics = json.loads((workdir / SAE_DIR / "metrics.json").read_text())
    untrained_fvu, rows = untrained_sae_fvu(workdir, metrics)
    assert untrained_fvu > 0.9  # an untrained SAE explains nothing
    assert metrics["fvu"] < 0.5 * untrained_fvu, (metrics["fvu"], untrained_fvu)
    assert metrics["eval_rows"] == rows
    scores = json.loads((workdir / SARM_DIR / "rewardbench2.json").read_text())
    assert set(scores["subsets"]) == {"Factuality", "Precise IF", "Math", "Safety", "Focus", "Ties"}
    rewards = pd.read_parquet(workdir / SARM_DIR / "rewards.parquet")
    prompts = load_rewardbench2(str(REPO / "resources/demo/rewardbench2.jsonl"))
    expected = [(str(p.id), i) for p in prompts for i in range(len(p.completions))]
    assert list(zip(rewards["id"], rewards["completion_index"], strict=True)) == expected
    assert rewards["reward"].notna().all() and rewards["reward"].nunique() > len(rewards) // 2


def test_steering_leaves_rewards_of_inactive_samples_unchanged(tiny_run):
    workdir, _ = tiny_run
    rewards = pd.read_parquet(workdir / SARM_DIR / "steering/rewards.parquet")
    summary = json.loads((workdir / SARM_DIR / "steering/steering.json").read_text())
    inactive = rewards[rewards["feature_activation"] == 0]
    assert (inactive["reward_before"] == inactive["reward_after"]).all()
    assert summary["head_edit"] == {"feature": summary["feature"], "scale": 10.0}
    assert summary["states"] == "cached states"  # the trained top layer on the cache: no backbone pass


def test_tables_1_and_2_train_their_top_layer_and_table_3_its_head(tiny_run, tiny_backbone):
    """The demo's training: the Table 1 / 2 models train layer l-1 (+ head) from the per-token states one
    backbone pass cached, store only that layer, and score RewardBench 2 from the cache exactly as the
    loaded model scores the text; Table 3's models train their head only, in folders of their own."""
    workdir, _ = tiny_run
    cached = load_file(workdir / "results/tiny/cached_states/preferences.safetensors")
    assert {"layer1", "layer2", "tokens1", "tokens3", "offsets"} <= set(cached)  # sweeps' heads, top layers
    source = load_file(tiny_backbone / "model.safetensors")
    prompts = load_rewardbench2(str(REPO / "resources/demo/rewardbench2.jsonl"))
    for model_dir in (workdir / SARM_DIR, workdir / "results/tiny/layer2/rm/vanilla"):
        stored = load_file(model_dir / "reward_model.safetensors")
        decoder = {
            name.removeprefix("decoder."): v for name, v in stored.items() if name.startswith("decoder.")
        }
        assert decoder and all(name.startswith("layers.1.") for name in decoder), model_dir.name
        name = "layers.1.mlp.up_proj.weight"
        assert not torch.equal(decoder[name], source[f"model.{name}"]), model_dir.name
        written = pd.read_parquet(model_dir / "rewards.parquet")["reward"].tolist()
        assert written == pytest.approx(rewards_one_by_one(model_dir, tiny_backbone, prompts), abs=1e-4)
    sweep = workdir / f"{SARM_DIR}_sweep"
    assert json.loads((sweep / "reward_model.json").read_text())["trained"] == ["head"]
    assert not any(name.startswith("decoder.") for name in load_file(sweep / "reward_model.safetensors"))
    table3 = pd.read_csv(workdir / "results/tables/table3.csv")
    assert table3.loc[table3["Source"] == "reproduced", "Model"].str.endswith("(head only)").all()


def copy_of_run(tiny_run, destination) -> tuple:
    """A copy of the tiny run's work directory, results and Snakemake's records of them included (mtimes
    kept), to change without touching the run the other tests read: (work directory, its tiny.yaml)."""
    workdir, _ = tiny_run
    shutil.copytree(workdir, destination, symlinks=True)
    return destination, destination / "tiny.yaml"


def test_table_cells_and_intervals_come_from_result_files(tiny_run, tmp_path):
    """Rewards where every correct completion wins: each best-of-4 cell is 100 with the interval [100, 100];
    the SAE columns are the SAE's metrics.json; the comparison with the vanilla RM is paired."""
    workdir, config_path = copy_of_run(tiny_run, tmp_path / "run")
    scores_file, rewards_file = (
        workdir / SARM_DIR / "rewardbench2.json",
        workdir / SARM_DIR / "rewards.parquet",
    )
    rewards = pd.read_parquet(rewards_file)
    rewards["reward"] = rewards["is_correct"].astype(float)
    rewards.to_parquet(rewards_file, index=False)
    scores_file.write_text(json.dumps(score_rewardbench2(rewards)))
    snakemake(workdir, config_path, "results/tables/table1.csv", "results/tables/comparisons.csv")
    table = pd.read_csv(workdir / "results/tables/table1.csv")
    ours = table[(table["Model"] == "SARM") & (table["Source"] == "reproduced")].iloc[0]
    for subset in ("Factuality", "Precise IF", "Math", "Safety", "Focus"):
        assert (ours[subset], ours[f"{subset}_lo"], ours[f"{subset}_hi"]) == (100.0, 100.0, 100.0)
    metrics = json.loads((workdir / SAE_DIR / "metrics.json").read_text())
    assert ours["SAE FVU"] == pytest.approx(metrics["fvu"]) and ours["SAE split"] == "heldout"
    vanilla = table[table["Model"].str.startswith("Vanilla RM")]
    assert vanilla["SAE FVU"].isna().all() and vanilla["Overall_lo"].notna().all()
    comparisons = pd.read_csv(workdir / "results/tables/comparisons.csv").set_index("Score")
    assert comparisons.loc["Math", "A score"] == 100.0
    difference = comparisons.loc["Overall"]
    assert difference["Difference"] == pytest.approx(difference["A score"] - difference["B score"])
    assert difference["Difference_lo"] <= difference["Difference"] <= difference["Difference_hi"]


def test_a_second_run_has_nothing_to_do(tiny_run):
    workdir, config_path = tiny_run
    output = snakemake(workdir, config_path, "-n", "all")
    assert "Nothing to be done" in output


def test_other_steering_domains_rerun_the_rmbench_cache_but_no_other(tiny_run, tmp_path):
    """The RM-Bench cache holds only the steering domains' pairs, so it takes `steering.domains` as a param;
    the preferences and RewardBench 2 caches, and what was trained or evaluated on them, do not."""
    workdir, config_path = tiny_run
    config = yaml.safe_load(config_path.read_text())
    config["steering"]["domains"] = ["safety-refuse"]
    changed = tmp_path / "domains.yaml"
    changed.write_text(yaml.safe_dump(config, sort_keys=False))
    output = snakemake(workdir, changed, "-n", "all")
    planned = dict(re.findall(r"(?m)^(\w+)\s+(\d+)$", output))
    planned.pop("total", None)
    assert planned == {"cache_states": "1", "steer_feature": "1", "compute_table": "1", "all": "1"}
    assert "output: results/tiny/cached_states/rmbench.safetensors" in output


def test_papers_training_mode_trains_the_backbone(tiny_run, tiny_backbone, tmp_path):
    """train_backbone: true (the paper): layers 0..l-1 and the head train on tokenized pairs, and the
    evaluation and the steering score text with the trained layers. Run on a copy of the tiny run, so the sentences,
    activations and SAE are reused and only the reward models and their evaluations rerun."""
    workdir, config_path = copy_of_run(tiny_run, tmp_path / "run")
    config = yaml.safe_load(config_path.read_text())
    config["reward_model"].update(train_backbone=True, train_layers="all", epochs=1, micro_batch=8, lr=0.01)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    targets = [f"{SARM_DIR}/rewardbench2.json", "results/tiny/layer2/rm/vanilla/rewardbench2.json"]
    snakemake(workdir, config_path, *targets, f"{SARM_DIR}/steering/steering.json")
    steering = json.loads((workdir / SARM_DIR / "steering/steering.json").read_text())
    assert steering["states"] == "backbone pass"
    before = pd.read_parquet(workdir / SARM_DIR / "steering/rewards.parquet")["reward_before"]
    scored = pd.read_parquet(workdir / SARM_DIR / "rewards.parquet")["reward"]
    assert before.tolist() == pytest.approx(scored.tolist(), abs=1e-4)  # the trained model's own rewards
    source = load_file(tiny_backbone / "model.safetensors")
    prompts = load_rewardbench2(str(REPO / "resources/demo/rewardbench2.jsonl"))
    for model_dir in (workdir / target.removesuffix("/rewardbench2.json") for target in targets):
        stored = load_file(model_dir / "reward_model.safetensors")
        decoder = {
            name.removeprefix("decoder."): v for name, v in stored.items() if name.startswith("decoder.")
        }
        assert decoder, f"{model_dir.name} stored no decoder weights"
        for layer in (0, 1):  # both layers below the reward model's layer 2 were trained
            name = f"layers.{layer}.mlp.up_proj.weight"
            assert not torch.equal(decoder[name], source[f"model.{name}"]), (model_dir.name, name)
        written = pd.read_parquet(model_dir / "rewards.parquet")["reward"].tolist()
        assert written == pytest.approx(rewards_one_by_one(model_dir, tiny_backbone, prompts), abs=1e-4)


def test_report_holds_the_tables_and_figures(tiny_run):
    workdir, config_path = tiny_run
    snakemake(workdir, config_path, "--report", "report.html")
    report = (workdir / "report.html").read_text(errors="replace")
    for name in ("table1.md", "table4.md", "table3_layer.png", "figure3a.png", "feature_cards.md"):
        assert name in report
