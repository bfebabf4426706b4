# RewardBench 2: every completion scored, best-of-4 / Ties scoring per subset, Overall.


rule evaluate_rewardbench2:
    input:
        unpack(evaluation_inputs),
    output:
        scores=f"{REWARD_MODEL_DIR}/rewardbench2.json",
        rewards=f"{REWARD_MODEL_DIR}/rewards.parquet",
    log:
        log_path("evaluate_rewardbench2", REWARD_MODEL_NAME),
    benchmark:
        benchmark_path("evaluate_rewardbench2", REWARD_MODEL_NAME)
    conda:
        ENVS / "torch.yaml"
    params:
        backbone=lambda wildcards: backbone_path(wildcards.backbone),
        data=config["data"]["rewardbench2"],
        reward_model=only(config, "reward_model", ["max_length", "date_string"]),
    script:
        "../../scripts/evaluate_rewardbench2.py"
