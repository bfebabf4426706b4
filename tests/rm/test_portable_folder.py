"""A reward-model folder records its backbone so that it loads from any working directory and after it
moves; a folder moved without its backbone names the missing backbone."""

import json
import os
import shutil

import pytest
import torch

from sarm.rm.backbone_record import MissingBackboneError, backbone_record, resolve_backbone
from sarm.rm.models import build_sarm, load_reward_model, save_reward_model
from sarm.sae.model import SAEConfig, TopKSAE


@pytest.fixture
def tree(tiny_backbone, tmp_path, monkeypatch):
    """results/backbones/tiny + results/tiny/layer2/rm/sarm, saved with a relative backbone path."""
    root = tmp_path / "repo"
    shutil.copytree(tiny_backbone, root / "results" / "backbones" / "tiny")
    monkeypatch.chdir(root)
    torch.manual_seed(0)
    model = build_sarm("results/backbones/tiny", 2, TopKSAE(32, SAEConfig(64, 4), seed=0))
    return root, save_reward_model(model, "results/tiny/layer2/rm/sarm")


def test_a_hub_id_is_recorded_as_is(tmp_path):
    assert backbone_record("meta-llama/Llama-3.2-3B-Instruct", tmp_path) == {
        "backbone": "meta-llama/Llama-3.2-3B-Instruct"
    }
    assert resolve_backbone({"backbone": "meta-llama/Llama-3.2-3B-Instruct"}, tmp_path) == (
        "meta-llama/Llama-3.2-3B-Instruct"
    )


def test_a_local_backbone_is_recorded_relative_to_the_folder_and_absolute(tree):
    root, model_dir = tree
    config = json.loads((model_dir / "reward_model.json").read_text())
    assert config["backbone"] == "../../../../backbones/tiny"
    assert config["backbone_path"] == str((root / "results" / "backbones" / "tiny").resolve())


def test_loads_from_another_working_directory(tree, tmp_path, monkeypatch):
    root, model_dir = tree
    monkeypatch.chdir(tmp_path)
    model = load_reward_model(root / model_dir)
    assert model.decoder is not None and os.path.isdir(model.backbone_source)


def test_loads_after_the_whole_results_tree_moves(tree, tmp_path, monkeypatch):
    root, model_dir = tree
    moved = tmp_path / "elsewhere"
    shutil.move(root / "results", moved)  # the absolute path is gone, the relative one still holds
    monkeypatch.chdir(tmp_path)
    model = load_reward_model(moved / "tiny" / "layer2" / "rm" / "sarm")
    assert model.backbone_source.startswith(str(moved))


def test_loads_after_the_folder_alone_moves(tree, tmp_path):
    root, model_dir = tree
    moved = tmp_path / "shared" / "my_rm"
    shutil.copytree(root / model_dir, moved)
    assert load_reward_model(moved).decoder is not None  # found by its absolute path


def test_a_folder_moved_without_its_backbone_names_it(tree, tmp_path):
    root, model_dir = tree
    moved = tmp_path / "shared" / "my_rm"
    shutil.copytree(root / model_dir, moved)
    shutil.rmtree(root / "results" / "backbones")
    with pytest.raises(
        MissingBackboneError, match=r"its backbone folder '../../../../backbones/tiny' is missing"
    ):
        load_reward_model(moved)
    load_reward_model(moved, with_backbone=False)  # the head alone needs no backbone


def test_a_folder_written_before_the_recording_still_loads_from_the_repo_root(tree):
    root, model_dir = tree
    config_path = model_dir / "reward_model.json"
    config = json.loads(config_path.read_text())
    config["backbone"] = "results/backbones/tiny"
    del config["backbone_path"]
    config_path.write_text(json.dumps(config))
    assert load_reward_model(model_dir).decoder is not None


def test_a_folder_written_before_the_recording_loads_from_anywhere_below_its_repo(
    tree, tmp_path, monkeypatch
):
    root, model_dir = tree
    config_path = root / model_dir / "reward_model.json"
    config = json.loads(config_path.read_text())
    config["backbone"] = "results/backbones/tiny"
    del config["backbone_path"]
    config_path.write_text(json.dumps(config))
    monkeypatch.chdir(tmp_path)
    model = load_reward_model(root / model_dir)  # found via the folder's ancestor `root`
    assert model.backbone_source == str((root / "results" / "backbones" / "tiny").resolve())
