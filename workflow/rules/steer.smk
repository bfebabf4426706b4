# RQ2 / Figure 3: scale the head weight of the feature that best separates safe from unsafe answers.


rule steer_feature:
    """Scale the chosen feature's head weight; rewards before / after (the target `steering` runs it)."""
    input:
        model=f"{REWARD_MODEL_DIR}/reward_model.json",
        backbone=backbone_files,
        rmbench=local_data("rmbench"),
        rewardbench2=local_data("rewardbench2"),
    output:
        summary=f"{STEERING_DIR}/steering.json",
        rewards=f"{STEERING_DIR}/rewards.parquet",
        target=report(
            f"{STEERING_DIR}/figure3a.png",
            caption="../report/figure3a.rst",
            category="Figure 3: steering",
        ),
        complement=report(
            f"{STEERING_DIR}/figure3b.png",
            caption="../report/figure3b.rst",
            category="Figure 3: steering",
        ),
    log:
        log_path("steer_feature", REWARD_MODEL_NAME),
    benchmark:
        benchmark_path("steer_feature", REWARD_MODEL_NAME)
    conda:
        ENVS / "torch.yaml"
    params:
        backbone=lambda wildcards: backbone_path(wildcards.backbone),
        steering=only(config, "steering", ["scale", "domains"]),
        rmbench=config["data"]["rmbench"],
        rewardbench2=config["data"]["rewardbench2"],
        reward_model=only(config, "reward_model", ["max_length", "date_string"]),
    script:
        "../../scripts/steering.py"
