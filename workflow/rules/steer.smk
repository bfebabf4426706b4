# RQ2 / Figure 3: scale the head weight of the feature that best separates safe from unsafe answers.


rule steer_feature:
    """Scale the chosen feature's head weight; rewards before / after (the target `steering` runs it).
    With a frozen backbone it reads the cached final-token states, else it runs the trained backbone.
    """
    input:
        unpack(steering_inputs),
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
        steering=only(
            config, "steering", ["scale", "source", "domains", "min_active_fraction"]
        ),
        rmbench=config["data"]["rmbench"],
        rewardbench2=config["data"]["rewardbench2"],
        reward_model=only(config, "reward_model", ["max_length", "date_string"]),
    script:
        "../../scripts/steering.py"
